"""Progress bars and log lines in four formats: none, simple, json and tqdm, shaped as fairseq's.

Every line goes through the logging module under the name of its record (``train_inner``,
``train``, ``valid`` or the validation subset), so with the usual
``time | level | name | message`` format a line reads as fairseq 0.12 writes it:

* ``json``: ``... | INFO | train_inner | {"epoch": 1, "update": 0.008, "loss": "10.172", ...}``:
  ``epoch`` is an int, ``update`` the fractional epoch (a float, 3 decimals) and every other
  value a string written with ``{:g}``; end-of-epoch and validation records prefix their keys
  with the record name (``train_loss``, ``valid_loss``).
* ``simple``: ``epoch 001:      3 / 131 loss=10.146, ppl=1133.28, ...`` every log interval and
  ``epoch 001 | valid on 'valid' subset | loss 6.285 | ppl 77.97 | ...`` for summaries.
* ``tqdm``: a live bar on a terminal (the default there); summaries as in ``simple``. Off a
  terminal it falls back to ``simple`` so log files never fill with bar redraws.
* ``none``: no per-interval lines; summaries as in ``simple``.

In ``simple`` and ``json``, a long stretch without a line gets a progress line of its own, so
redirected output shows life within seconds: ``epoch 001:     37 / 1000 (12 s)`` (json:
``{"epoch": 1, "progress": "37/1000", "seconds": 12}`` under the name ``progress``) once no line
has been written for 10 s, then every ``log_seconds`` (``common.log_seconds``, 60 by default;
0 turns them off). The per-interval lines keep fairseq's cadence and numbers.

The values arrive already rounded as fairseq's meters round them (``loss`` to 3 decimals,
``ppl`` to 2, ...); the lr is not rounded, so ``{:g}`` shows six significant digits and a warmup
from 1e-07 stays visible.
"""
import json
import logging
import numbers
import os
import shutil
import sys
import time
from collections import OrderedDict
from typing import Any, Dict, Iterable, Iterator, Optional

logger = logging.getLogger("fairseq.progress")


def default_log_format() -> str:
    return "tqdm" if sys.stderr.isatty() else "simple"


def format_stat(value: Any) -> Any:
    """A number as fairseq writes it (``"{:g}"``: ``0.0003``, ``1153.47``, ``512``); else as is."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Number):
        return "{:g}".format(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def format_stats(stats: Dict[str, Any]) -> "OrderedDict[str, str]":
    """Every value as the string fairseq's simple and tqdm formats print."""
    return OrderedDict((key, str(format_stat(value))) for key, value in stats.items())


#: seconds without a line before the first progress line of a bar
FIRST_PROGRESS_S = 10.0


class BaseProgressBar:
    def __init__(self, iterable: Iterable, epoch: Optional[int] = None, prefix: Optional[str] = None,
                 log_interval: int = 100, total: Optional[int] = None, log_seconds: float = 0.0):
        self.iterable = iterable
        self.log_seconds = float(log_seconds or 0.0)
        self._start = self._last_line = time.monotonic()
        self._wait = min(FIRST_PROGRESS_S, self.log_seconds)
        self.n = getattr(iterable, "n", 0)
        self.i = self.n - 1
        self.epoch = epoch
        self.log_interval = log_interval
        self.total = total if total is not None else len(iterable) if hasattr(iterable, "__len__") else None
        self.prefix = ""
        if epoch is not None:
            self.prefix += f"epoch {epoch:03d}"
        if prefix:
            self.prefix += (" | " if self.prefix else "") + prefix

    def __len__(self) -> int:
        return self.total or 0

    def __iter__(self) -> Iterator:
        for i, item in enumerate(self.iterable, start=self.n):
            self.i = i
            if self.log_seconds and time.monotonic() - self._last_line >= self._wait:
                self._progress_line(i - self.n)
                self._wait = self.log_seconds
            yield item

    def _progress_line(self, done: int) -> None:
        """A line saying how far the bar is, after a long stretch without one (``done`` items
        of this run so far)."""

    def log(self, stats: Dict[str, Any], tag: Optional[str] = None, step: Optional[int] = None) -> None:
        """Log intermediate stats (every ``log_interval`` updates)."""

    def print(self, stats: Dict[str, Any], tag: Optional[str] = None, step: Optional[int] = None) -> None:
        """Log an end-of-epoch or validation summary: ``prefix | key value | key value``."""
        pipes = " | ".join(f"{key} {value.strip()}" for key, value in format_stats(stats).items())
        self._emit(f"{self.prefix} | {pipes}" if self.prefix else pipes, tag)

    def close(self) -> None:
        pass

    def _due(self, step: Optional[int]) -> bool:
        step = step or (self.i + 1 if self.i >= 0 else 0)
        return step > 0 and bool(self.log_interval) and step % self.log_interval == 0

    def _emit(self, text: str, tag: Optional[str]) -> None:
        self._last_line = time.monotonic()
        (logging.getLogger(tag) if tag else logger).info(text)

    def _position(self) -> str:
        return f"{self.i:d}/{self.total:d}" if self.total else f"{self.i:d}"


class NoopProgressBar(BaseProgressBar):
    """No per-interval lines; end-of-epoch and validation summaries only."""


class SimpleProgressBar(BaseProgressBar):
    def _progress_line(self, done: int) -> None:
        total = self.total if self.total is not None else 0
        seconds = time.monotonic() - self._start
        self._emit(f"{self.prefix + ':  ' if self.prefix else ''}{self.i:5d} / {total:d} ({seconds:.0f} s)",
                   "progress")

    def log(self, stats, tag=None, step=None) -> None:
        if not self._due(step):
            return
        commas = ", ".join(f"{key}={value.strip()}" for key, value in format_stats(stats).items())
        total = self.total if self.total is not None else 0
        self._emit(f"{self.prefix}:  {self.i + 1:5d} / {total:d} {commas}", tag)


class JsonProgressBar(BaseProgressBar):
    """One JSON object per record, after the usual ``time | level | name |`` prefix."""

    def _record(self, stats: Dict[str, Any], update: Optional[float] = None) -> str:
        record: Dict[str, Any] = OrderedDict()
        if self.epoch is not None:
            record["epoch"] = self.epoch
        if update is not None:
            record["update"] = round(update, 3)
        record.update((key, format_stat(value)) for key, value in stats.items())
        return json.dumps(record)

    def _progress_line(self, done: int) -> None:
        record: Dict[str, Any] = OrderedDict()
        if self.epoch is not None:
            record["epoch"] = self.epoch
        record["progress"] = self._position()
        record["seconds"] = round(time.monotonic() - self._start)
        self._emit(json.dumps(record), "progress")

    def log(self, stats, tag=None, step=None) -> None:
        if not self._due(step):
            return
        update = None
        if self.epoch is not None and self.total:
            update = self.epoch - 1 + (self.i + 1) / float(self.total)
        self._emit(self._record(stats, update), tag)

    def print(self, stats, tag=None, step=None) -> None:
        if tag is not None:
            stats = OrderedDict((f"{tag}_{key}", value) for key, value in stats.items())
        self._emit(self._record(stats), tag)


class TqdmProgressBar(BaseProgressBar):
    def __init__(self, iterable, epoch=None, prefix=None, log_interval=100, total=None, log_seconds=0.0):
        super().__init__(iterable, epoch, prefix, log_interval, total)  # a live bar: no progress lines
        from tqdm import tqdm

        # a terminal that reports no size (some pseudo-terminals) would hide the bar entirely
        known = shutil.get_terminal_size(fallback=(0, 0)).columns > 0
        self.bar = tqdm(iterable, desc=self.prefix, total=self.total, initial=self.n, leave=False,
                        dynamic_ncols=known, ncols=None if known else 100, nrows=None if known else 24,
                        file=sys.stderr)

    def __iter__(self) -> Iterator:
        for i, item in enumerate(self.bar, start=self.n):
            self.i = i
            yield item

    POSTFIX_KEYS = ("loss", "ppl", "wps", "lr", "gnorm", "loss_scale")

    def log(self, stats, tag=None, step=None) -> None:
        # a bar line has room for a few numbers: the ones a person watches
        shown = format_stats({k: stats[k] for k in self.POSTFIX_KEYS if k in stats})
        self.bar.set_postfix(shown, refresh=True)  # once a log interval: cheap, and always seen

    def close(self) -> None:
        self.bar.close()


FORMATS = {"none": NoopProgressBar, "simple": SimpleProgressBar, "json": JsonProgressBar,
           "tqdm": TqdmProgressBar}


def progress_bar(iterable: Iterable, log_format: Optional[str] = None, log_interval: int = 100,
                 epoch: Optional[int] = None, prefix: Optional[str] = None,
                 no_progress_bar: bool = False, total: Optional[int] = None,
                 log_seconds: float = 60.0) -> BaseProgressBar:
    """The progress bar for ``log_format`` (default: tqdm on a terminal, else simple);
    ``log_seconds``: see the module's docstring."""
    fmt = str(log_format) if log_format is not None else default_log_format()
    if no_progress_bar and fmt == "tqdm":
        fmt = "simple"
    if fmt == "tqdm" and not sys.stderr.isatty():
        fmt = "simple"
    if fmt not in FORMATS:
        raise ValueError(f"common.log_format={fmt!r}: choose one of {sorted(FORMATS)}")
    return FORMATS[fmt](iterable, epoch=epoch, prefix=prefix, log_interval=log_interval, total=total,
                        log_seconds=log_seconds)


def setup_logging(log_file: Optional[str] = None, level: int = logging.INFO) -> None:
    """Log lines to stdout as ``time | level | name | message`` (fairseq's format), every record
    kind included (``| train_inner | {...}`` in json format).

    A console handler already on the root logger (Hydra installs one) is kept rather than
    doubled. ``log_file`` receives the same lines.
    """
    human = logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                              datefmt="%Y-%m-%d %H:%M:%S")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_fairseq", False):
            root.removeHandler(handler)
            handler.close()

    def add(handler: logging.Handler) -> None:
        handler._fairseq = True  # type: ignore[attr-defined]
        handler.setFormatter(human)
        root.addHandler(handler)

    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers):
        add(logging.StreamHandler(sys.stdout))
    if log_file:
        check_log_file(str(log_file))
        try:
            handler = logging.FileHandler(log_file)
        except OSError as e:
            raise _log_path_error("common.log_file", "--log-file", str(log_file), _why(e, str(log_file)),
                                  "give a writable file path") from None
        add(handler)
    root.setLevel(level)


# -- where logs go: checked before a run starts ------------------------------------------------------
# A device with less free space than this counts as full: a log needs little, but a log line that
# cannot be written prints a traceback on every line (logging's handleError), and a full device
# also fails the run's checkpoints.
MIN_FREE_BYTES = 1 << 20


def free_bytes(path: str) -> Optional[int]:
    """The bytes an unprivileged writer may still use on the device holding ``path`` (or the
    nearest existing directory above it), or None where that cannot be known."""
    path = os.path.abspath(path)
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _log_path_error(key: str, flag: str, path: str, why: str, fix: str) -> Exception:
    from fairseq.errors import ResourceError

    return ResourceError(f"{key}={path!r} ({flag}) cannot be written: {why}; {fix}")


def _why(error: OSError, path: str) -> str:
    if isinstance(error, FileExistsError) or (os.path.exists(path) and not os.path.isdir(path)
                                              and isinstance(error, NotADirectoryError)):
        return "a file is in the way (it exists and is not a directory)"
    return error.strerror or type(error).__name__


def _check_space(key: str, flag: str, path: str, fix: str) -> None:
    free = free_bytes(path)
    if free is not None and free < MIN_FREE_BYTES:
        raise _log_path_error(key, flag, path, f"no space left on the device holding it ({free} bytes free)",
                              f"free space there or {fix}")


def check_log_file(path: str) -> None:
    """Check that ``common.log_file`` (``--log-file``) can be appended to (its directory is
    created when missing) on a device with space left.

    Raises:
        ResourceError: naming the key, the flag, the path, why and the fix (exit code 2).
    """
    fix = "give a writable file path"
    if os.path.isdir(path):
        raise _log_path_error("common.log_file", "--log-file", path, "it is a directory", fix)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as e:
        raise _log_path_error("common.log_file", "--log-file", path, _why(e, path), fix) from None
    _check_space("common.log_file", "--log-file", path, "give another --log-file")


def check_log_dir(path: str, key: str = "common.tensorboard_logdir", flag: str = "--tensorboard-logdir") -> None:
    """Check that the directory ``path`` exists or can be created, can take new files (a probe
    file is written and removed) and is on a device with space left.

    Raises:
        ResourceError: naming the key, the flag, the path, why and the fix (exit code 2).
    """
    fix = "give a writable directory"
    probe = os.path.join(path, f".write_probe.{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise _log_path_error(key, flag, path, _why(e, path), fix) from None
    _check_space(key, flag, path, f"give another {flag}")


def verify_log_paths(common: Any) -> None:
    """Check, before a run starts, where its logs go: ``common.log_file`` and
    ``common.tensorboard_logdir`` when set (see :func:`check_log_file`, :func:`check_log_dir`).

    Raises:
        ResourceError: one line naming the key, the flag and the path.
    """
    get = common.get if hasattr(common, "get") else (lambda key: getattr(common, key, None))
    if get("log_file"):
        check_log_file(str(get("log_file")))
    if get("tensorboard_logdir"):
        check_log_dir(str(get("tensorboard_logdir")))
