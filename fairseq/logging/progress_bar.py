"""Progress bars and log lines in four formats: none, simple, json and tqdm.

* ``json``: one JSON object per line on stdout (and in ``log_file``), for machines.
* ``simple``: ``epoch 001:     10 / 100 loss=5.12, ppl=34.7, ...`` lines, for people and files.
* ``tqdm``: a live bar on a terminal; the default when stderr is a terminal. Off a terminal it
  falls back to ``simple`` so log files never fill with bar redraws.
* ``none``: only the end-of-epoch summaries.
"""
import json
import logging
import numbers
import shutil
import sys
from typing import Any, Dict, Iterable, Iterator, Optional

logger = logging.getLogger("fairseq.progress")


def default_log_format() -> str:
    return "tqdm" if sys.stderr.isatty() else "simple"


def _format_value(value: Any, digits: int) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return round(float(value), digits)


class BaseProgressBar:
    def __init__(self, iterable: Iterable, epoch: Optional[int] = None, prefix: Optional[str] = None,
                 log_interval: int = 100, total: Optional[int] = None):
        self.iterable = iterable
        self.n = getattr(iterable, "n", 0)
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
            yield item

    def log(self, stats: Dict[str, Any], tag: Optional[str] = None, step: Optional[int] = None) -> None:
        """Log intermediate stats (every ``log_interval`` updates)."""

    def print(self, stats: Dict[str, Any], tag: Optional[str] = None, step: Optional[int] = None) -> None:
        """Log an end-of-epoch or validation summary."""

    def close(self) -> None:
        pass

    def _str_pairs(self, stats: Dict[str, Any], digits: int = 3) -> str:
        return ", ".join(f"{k}={_format_value(v, digits)}" for k, v in stats.items())

    def _emit(self, text: str) -> None:
        logger.info(text)


class NoopProgressBar(BaseProgressBar):
    """No per-update lines; end-of-epoch and validation summaries only."""

    def print(self, stats, tag=None, step=None) -> None:
        parts = [p for p in (self.prefix, tag, self._str_pairs(stats)) if p]
        self._emit(" | ".join(parts))


class SimpleProgressBar(BaseProgressBar):
    def log(self, stats, tag=None, step=None) -> None:
        position = getattr(self, "i", self.n) + 1
        total = f" / {self.total}" if self.total else ""
        self._emit(f"{self.prefix}: {position:6d}{total} {self._str_pairs(stats)}")

    def print(self, stats, tag=None, step=None) -> None:
        self._emit(f"{self.prefix} | {tag + ' | ' if tag else ''}{self._str_pairs(stats)}")


class JsonProgressBar(BaseProgressBar):
    """One JSON object per line; end-of-epoch keys are prefixed with the tag (``valid_loss``)."""

    def log(self, stats, tag=None, step=None) -> None:
        record: Dict[str, Any] = {}
        if self.epoch is not None:
            record["epoch"] = self.epoch
        if step is not None:
            record["update"] = step
        record.update({k: _format_value(v, 6) for k, v in stats.items()})
        self._emit(json.dumps(record))

    def print(self, stats, tag=None, step=None) -> None:
        record: Dict[str, Any] = {}
        if self.epoch is not None:
            record["epoch"] = self.epoch
        prefix = f"{tag}_" if tag else ""
        record.update({prefix + k: _format_value(v, 6) for k, v in stats.items()})
        if step is not None:
            record[prefix + "num_updates"] = step
        self._emit(json.dumps(record))

    def _emit(self, text: str) -> None:
        logging.getLogger("fairseq.json").info(text)


class TqdmProgressBar(BaseProgressBar):
    def __init__(self, iterable, epoch=None, prefix=None, log_interval=100, total=None):
        super().__init__(iterable, epoch, prefix, log_interval, total)
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
        shown = {k: _format_value(stats[k], 3) for k in self.POSTFIX_KEYS if k in stats}
        self.bar.set_postfix(shown, refresh=False)

    def print(self, stats, tag=None, step=None) -> None:
        self._emit(f"{self.prefix} | {tag + ' | ' if tag else ''}{self._str_pairs(stats)}")

    def close(self) -> None:
        self.bar.close()


FORMATS = {"none": NoopProgressBar, "simple": SimpleProgressBar, "json": JsonProgressBar,
           "tqdm": TqdmProgressBar}


def progress_bar(iterable: Iterable, log_format: Optional[str] = None, log_interval: int = 100,
                 epoch: Optional[int] = None, prefix: Optional[str] = None,
                 no_progress_bar: bool = False, total: Optional[int] = None) -> BaseProgressBar:
    """The progress bar for ``log_format`` (default: tqdm on a terminal, else simple)."""
    fmt = str(log_format) if log_format is not None else default_log_format()
    if no_progress_bar and fmt == "tqdm":
        fmt = "simple"
    if fmt == "tqdm" and not sys.stderr.isatty():
        fmt = "simple"
    if fmt not in FORMATS:
        raise ValueError(f"common.log_format={fmt!r}: choose one of {sorted(FORMATS)}")
    return FORMATS[fmt](iterable, epoch=epoch, prefix=prefix, log_interval=log_interval, total=total)


def setup_logging(log_file: Optional[str] = None, level: int = logging.INFO) -> None:
    """Human log lines to stdout as ``time | level | name | message``; JSON records bare.

    A console handler already on the root logger (Hydra installs one) is kept rather than
    doubled. ``log_file`` receives both kinds of lines as well.
    """
    human = logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                              datefmt="%Y-%m-%d %H:%M:%S")
    bare = logging.Formatter("%(message)s")
    root = logging.getLogger()
    json_logger = logging.getLogger("fairseq.json")
    json_logger.propagate = False
    for lg in (root, json_logger):
        for handler in list(lg.handlers):
            if getattr(handler, "_fairseq", False):
                lg.removeHandler(handler)
                handler.close()

    def add(lg: logging.Logger, handler: logging.Handler, fmt: logging.Formatter) -> None:
        handler._fairseq = True  # type: ignore[attr-defined]
        handler.setFormatter(fmt)
        lg.addHandler(handler)

    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers):
        add(root, logging.StreamHandler(sys.stdout), human)
    add(json_logger, logging.StreamHandler(sys.stdout), bare)
    if log_file:
        add(root, logging.FileHandler(log_file), human)
        add(json_logger, logging.FileHandler(log_file), bare)
    root.setLevel(level)
    json_logger.setLevel(level)
