"""When checkpoints are written, under which names, and which old ones are pruned.

Every save writes ``checkpoint_last.pt`` first and gives the file its other names as hard links
(copies where links are impossible), so ``checkpoint_last.pt`` is never older than another
complete checkpoint. ``checkpoint.write_checkpoints_asynchronously`` hands the write to one
background thread (:class:`_BackgroundWrites`).
"""
import io
import logging
import os
import re
import threading
from typing import Any, Dict, List, Optional, Tuple

import torch
from omegaconf import DictConfig

from fairseq.checkpoint import sharded
from fairseq.checkpoint.files import _atomic_write, atomic_link
from fairseq.checkpoint.integrity import with_integrity
from fairseq.checkpoint.state import CHECKPOINT_VERSION, _is_full_config, get_rng_state, plain_config
from fairseq.distributed import fully_sharded
from fairseq.distributed_utils import get_world_size, is_master
from fairseq.errors import ConfigError, DiskFullError, ResourceError

logger = logging.getLogger("fairseq.checkpoint_utils")  # the name fairseq logs checkpoints under


# -- saving ------------------------------------------------------------------------------------
def _is_better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def is_better(value: float, best: Optional[float], cfg: DictConfig) -> bool:
    """Whether ``value`` of ``checkpoint.best_checkpoint_metric`` beats ``best``."""
    return best is None or _is_better(value, best, bool(cfg.checkpoint.maximize_best_checkpoint_metric))


def save_checkpoint(cfg: Any, trainer: Any, epoch_itr: Any, val_loss: Optional[float],
                    end_of_epoch: Optional[bool] = None, state: Any = None,
                    improved: Optional[bool] = None) -> None:
    """Write the checkpoints due now (see :func:`_save_checkpoint`).

    fairseq's signature: ``save_checkpoint(cfg.checkpoint, trainer, epoch_itr, val_loss)``
    (``cfg`` may also be the whole config). The end of epoch then comes from ``epoch_itr``, and
    the best value so far is kept on the function (``save_checkpoint.best``), as fairseq does.
    The trainer loop passes ``end_of_epoch``, ``state`` and ``improved`` itself.
    """
    full = cfg if _is_full_config(cfg) else trainer.cfg
    if state is None:
        maximize = bool(full.checkpoint.maximize_best_checkpoint_metric)
        best = getattr(save_checkpoint, "best", None)
        improved = val_loss is not None and (best is None or _is_better(val_loss, best, maximize)
                                             or val_loss == best)
        if improved:
            save_checkpoint.best = val_loss  # type: ignore[attr-defined]
        state = {"best": getattr(save_checkpoint, "best", None)}
    if end_of_epoch is None:
        end_of_epoch = bool(epoch_itr.end_of_epoch())
    _save_checkpoint(full, trainer, epoch_itr, val_loss, end_of_epoch, state, bool(improved))


def _save_checkpoint(cfg: DictConfig, trainer: Any, epoch_itr: Any, val_loss: Optional[float],
                     end_of_epoch: bool, state: Any, improved: bool) -> None:
    """Write the checkpoints due now (on the first process only) and track the best metric.

    Names: ``checkpoint{epoch}.pt`` at the end of an epoch (every ``save_interval`` epochs),
    ``checkpoint_{epoch}_{updates}.pt`` every ``save_interval_updates`` updates (also when that
    falls on an epoch end), ``checkpoint_best.pt`` when ``val_loss`` improves,
    ``checkpoint.best_{metric}_{value}.pt`` for the ``keep_best_checkpoints`` best, and
    ``checkpoint_last.pt`` every time. ``state`` carries ``best`` and ``num_bad_validations``
    (for ``patience``), already updated for this validation; ``improved`` says whether
    ``val_loss`` is a new best.
    """
    ckpt = cfg.checkpoint
    # a fully sharded model is saved by all processes together (DCP, or gathered to the first)
    collective = bool(getattr(trainer, "is_fully_sharded", False)) or fully_sharded.saves_sharded(cfg)
    if ckpt.no_save or not (is_master() or collective):
        return
    epoch = epoch_itr.epoch
    updates = trainer.get_num_updates()
    names: List[str] = []
    if end_of_epoch and not ckpt.no_epoch_checkpoints and epoch % ckpt.save_interval == 0:
        names.append(f"checkpoint{epoch}.pt")
    if ckpt.save_interval_updates > 0 and updates % ckpt.save_interval_updates == 0:
        names.append(f"checkpoint_{epoch}_{updates}.pt")
    if improved:
        names.append("checkpoint_best.pt")
    if val_loss is not None and ckpt.keep_best_checkpoints > 0:
        names.append(f"checkpoint.best_{ckpt.best_checkpoint_metric}_{val_loss:.4f}.pt")
    if not ckpt.no_last_checkpoints:
        # written first, the others linked to it: a kill between two of these writes never
        # leaves checkpoint_last.pt older than another complete checkpoint, so a rerun resumes
        # from the newest state
        names.insert(0, "checkpoint_last.pt")
    if not names:
        return

    as_dirs = fully_sharded.saves_sharded(cfg)
    snapshot = {} if as_dirs else trainer.state_dict()
    if not (is_master() or as_dirs):
        return
    if ckpt.get("no_save_optimizer_state", False):
        snapshot.pop("optimizer", None)
    snapshot["cfg"] = plain_config(cfg)
    snapshot["version"] = CHECKPOINT_VERSION
    train_wall = _state_value(state, "train_wall", None)
    snapshot["extra_state"] = {
        "epoch": epoch,
        "train_iterator": epoch_itr.state_dict(),
        "val_loss": val_loss,
        "best": _state_value(state, "best", None),
        "num_bad_validations": _state_value(state, "num_bad_validations", 0),
        "train_wall": train_wall.elapsed_time if train_wall is not None else 0.0,
        "rng": get_rng_state(),
        # the names this save gives the file (restore_save_names completes a save killed midway)
        "saved_as": list(names),
        # the data position counts batches of one of this many shards (rescaled on resume)
        "data_shards": get_world_size(),
    }
    save_dir = ckpt.save_dir
    first = os.path.join(save_dir, names[0])
    if as_dirs:
        wait_for_checkpoint_writes()
        _save_sharded(cfg, trainer, snapshot, names, val_loss)
        return
    # the format marker and the SHA-256 of the whole checkpoint (tensors, config, optimizer and
    # scheduler state, RNG, extra_state), checked when it is read
    snapshot = with_integrity(snapshot)
    done = "saved %s (epoch %d @ %d updates%s)" % (
        ", ".join(names), epoch, updates,
        f", valid {ckpt.best_checkpoint_metric} {val_loss:.3f}" if val_loss is not None else "")

    def write(save: Any) -> None:
        if os.path.isdir(first):  # a sharded checkpoint of the same name (save_consolidated changed)
            sharded.remove_path(first)
        _atomic_write(first, save)
        for name in names[1:]:  # one file, many names (a copy where links are impossible)
            atomic_link(first, os.path.join(save_dir, name))
        logger.info(done)
        _prune(save_dir, ckpt)

    save_run_config(cfg, save_dir)
    if ckpt.get("write_checkpoints_asynchronously", False):
        # serialized now (training goes on changing the weights), written by a thread
        data = io.BytesIO()
        torch.save(snapshot, data)
        _background_writes.submit(lambda: write(lambda f: f.write(data.getbuffer())))
    else:
        wait_for_checkpoint_writes()
        write(lambda f: _torch_save(snapshot, f, save_dir, first))


# what torch.save raises when the file it writes takes no more bytes: its zip writer swallows the
# OSError (ENOSPC) of the write and fails on the position it expected, or on the write itself
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "inline_container")
# free space below which a failed checkpoint write is put down to a full device
FULL_BELOW_BYTES = 1 << 20


def _free_bytes(path: str) -> Optional[int]:
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def checkpoint_write_error(error: BaseException, save_dir: str, path: str) -> Optional[ResourceError]:
    """The one-line error for ``torch.save`` failing to write checkpoint ``path``: a
    ``RuntimeError`` of its zip writer (``unexpected pos``, ``file write failed``), which is how
    a full disk reaches it. With little space left on the device of ``save_dir`` (asked while
    the partial file still holds what it took) the error says so; otherwise it names the failed
    write. None for any other error.
    """
    text = str(error)
    if not isinstance(error, RuntimeError) or not any(m in text for m in _TORCH_WRITE_FAILED):
        return None
    free = _free_bytes(save_dir)
    fix = "free space or choose another --save-dir (checkpoint.save_dir); the previous checkpoints are untouched"
    if free is not None and free < FULL_BELOW_BYTES:
        return DiskFullError(f"no space left on the device holding save_dir {save_dir!r} while writing {path} "
                             f"({free} bytes free); {fix}")
    reason = " ".join(text.split())[:200]
    left = f"{free} bytes free there" if free is not None else "its free space unknown"
    return DiskFullError(f"cannot write {path}: torch.save failed ({reason}; {left}); check the device "
                         f"holding save_dir {save_dir!r}, {fix}")


def _torch_save(obj: Any, f: Any, save_dir: str, path: str) -> None:
    """``torch.save(obj, f)`` into the temporary file ``f`` of checkpoint ``path``; a write
    that fails for lack of space ends in :func:`checkpoint_write_error`'s ResourceError."""
    try:
        torch.save(obj, f)
    except RuntimeError as e:
        error = checkpoint_write_error(e, save_dir, path)
        if error is None:
            raise
        # empty the partial file, so the buffered bytes flushed when it closes fit and its close
        # does not replace this error with another (the caller removes the file)
        try:
            os.ftruncate(f.fileno(), 0)
            f.seek(0)
            f.flush()
        except (OSError, ValueError):
            pass
        raise error from None


def _state_value(state: Any, name: str, default: Any) -> Any:
    """A saved part of the loop's state: a :class:`~fairseq.training_state.TrainingState`, or
    the dict fairseq's protocol passes (``{"best": ...}``)."""
    if isinstance(state, dict):
        return state.get(name, default)
    return getattr(state, name, default)


class _BackgroundWrites:
    """Checkpoint writes done by one thread, at most one in flight: a new one first waits for
    the previous one (and raises its error). Each write is as atomic as a foreground one, so a
    kill while one is in flight leaves the previous checkpoint whole and a temporary file that
    the next run removes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def submit(self, fn: Any) -> None:
        with self._lock:
            self._wait()

            def run() -> None:
                try:
                    fn()
                except BaseException as e:  # raised in the training thread by the next wait
                    self._error = e

            self._thread = threading.Thread(target=run, name="fairseq-checkpoint-writer")
            self._thread.start()

    def wait(self) -> None:
        with self._lock:
            self._wait()

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


_background_writes = _BackgroundWrites()


def wait_for_checkpoint_writes() -> None:
    """Wait until the checkpoint being written in the background (``checkpoint.
    write_checkpoints_asynchronously``) is complete; raise the error its write met, if any."""
    _background_writes.wait()


def _save_sharded(cfg: DictConfig, trainer: Any, extra: Dict[str, Any], names: List[str],
                  val_loss: Optional[float]) -> None:
    """Write the checkpoints ``names`` as one DCP directory (all processes), the other names
    as directories of hard links to its files (first process); see :func:`_save_checkpoint`."""
    ckpt = cfg.checkpoint
    first = os.path.join(ckpt.save_dir, names[0])
    trainer.save_sharded(first, extra, with_optimizer=not ckpt.get("no_save_optimizer_state", False))
    if not is_master():
        return
    for name in names[1:]:
        sharded.link_dir(first, os.path.join(ckpt.save_dir, name))
    save_run_config(cfg, ckpt.save_dir)
    logger.info("saved %s (sharded, epoch %d @ %d updates%s)", ", ".join(names), extra["extra_state"]["epoch"],
                trainer.get_num_updates(),
                f", valid {ckpt.best_checkpoint_metric} {val_loss:.3f}" if val_loss is not None else "")
    _prune(ckpt.save_dir, ckpt)


def save_run_config(cfg: Any, save_dir: str) -> None:
    """Write the resolved run config as ``save_dir/config.json`` (atomically), beside the
    checkpoints; ``fairseq.dataclass.json_io.load_config_json`` reads it back."""
    from fairseq.dataclass.json_io import save_config_json

    if isinstance(cfg, DictConfig):
        save_config_json(cfg, save_dir)


class SaveDirError(ResourceError, ConfigError):
    """``checkpoint.save_dir`` cannot be created or written: a user error (exit code 2), and
    the ``OSError`` fairseq raises there."""


def verify_checkpoint_directory(save_dir: str) -> None:
    """Create ``save_dir`` if needed and check, by writing and removing a probe file, that
    checkpoints can be written in it; called at start-up, before any training time is spent.

    Raises:
        SaveDirError: the directory cannot be created or written (a name too long, a read-only
            file system, a path through a file, no permission), naming it and why.
    """
    probe = os.path.join(save_dir, f".write_probe.{os.getpid()}")
    try:
        os.makedirs(save_dir, exist_ok=True)
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        why = e.strerror or type(e).__name__
        if isinstance(e, FileExistsError) and os.path.exists(save_dir) and not os.path.isdir(save_dir):
            why = "it exists and is not a directory"
        raise SaveDirError(f"checkpoint.save_dir={save_dir!r} (--save-dir) cannot be written: {why}; "
                           "give a writable directory (each path component under 256 bytes)") from None


def _prune(save_dir: str, ckpt: Any) -> None:
    """Remove old interval/epoch checkpoints beyond ``keep_interval_updates``/``keep_last_epochs``."""
    def matching(pattern: str) -> List[Tuple[int, str]]:
        found = []
        for name in os.listdir(save_dir):
            m = re.fullmatch(pattern, name)
            if m:
                found.append((int(m.group(1)), os.path.join(save_dir, name)))
        return sorted(found, reverse=True)

    if ckpt.keep_interval_updates > 0:
        for _, path in matching(r"checkpoint_\d+_(\d+)\.pt")[ckpt.keep_interval_updates:]:
            _remove_checkpoint(path)
    if ckpt.keep_last_epochs > 0:
        for _, path in matching(r"checkpoint(\d+)\.pt")[ckpt.keep_last_epochs:]:
            _remove_checkpoint(path)
    if ckpt.keep_best_checkpoints > 0:
        metric = re.escape(str(ckpt.best_checkpoint_metric))
        found = []
        for name in os.listdir(save_dir):
            m = re.fullmatch(rf"checkpoint\.best_{metric}_(-?[\d.]+(?:e-?\d+)?)\.pt", name)
            if m:
                found.append((float(m.group(1)), os.path.join(save_dir, name)))
        found.sort(reverse=bool(ckpt.maximize_best_checkpoint_metric))
        for _, path in found[ckpt.keep_best_checkpoints:]:
            _remove_checkpoint(path)


def _remove_checkpoint(path: str) -> None:
    """Remove a checkpoint file, or a sharded checkpoint's directory."""
    sharded.remove_path(path)

