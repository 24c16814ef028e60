"""Saving (atomic) and loading (weights-only) checkpoints.

A checkpoint is a dict of tensors and plain containers only:

* ``cfg``: the full resolved run config (plain dicts, enums as strings);
* ``model``, ``optimizer``, ``lr_scheduler``, ``num_updates`` (the trainer's state);
* ``extra_state``: epoch, data-iterator position, best validation metric, RNG states;
* ``integrity``: the SHA-256 of all the tensors above, checked when the file is read
  (:mod:`fairseq.checkpoint_integrity`): flipped bytes are refused, not loaded.

It is written to a temporary file in the same directory, fsynced and renamed, so a kill during a
save leaves the previous checkpoint intact; it is read with ``torch.load(weights_only=True)``,
so loading never runs code from the file.
"""
import argparse
import ast
import dataclasses
import errno
import io
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fairseq.checkpoint_integrity import verify_integrity, with_integrity
from fairseq.dataclass.overrides import ConfigError
from fairseq.file_io import PathManager

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit; the message says which and why."""


class PluginRequiredError(ConfigError):
    """A checkpoint whose components come from a plugin (``--user-dir``) that was not given:
    a user error (exit code 2). The ``common.user_dir`` a checkpoint records is never imported
    (that would run code named by the file), so the user must pass it explicitly."""


def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: str) -> str:
    """``.tmp_<name>.<pid>.``: a temporary file names the process writing it, so start-up
    cleanup (:func:`remove_partial_writes`) never deletes one a live process still writes."""
    return f".tmp_{os.path.basename(path)}.{os.getpid()}."


_TEMP_NAME = re.compile(r"\.tmp_checkpoint.*?\.(\d+)\.[A-Za-z0-9_]+")


def _atomic_write(path: str, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``: readers see the old file or the complete new one, never a partial write. The file
    gets the mode the umask gives (0644 by default), as ``open`` would, not mkstemp's 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise CheckpointError(f"no space left on device while writing {path}; free space there "
                                  "or give another checkpoint.save_dir (--save-dir)") from None
        raise
    _fsync_dir(directory)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_copy(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically."""
    def copy(out) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 24)

    _atomic_write(dst, copy)


# link() failures that mean "this filesystem cannot hard-link here": fall back to a copy
_NO_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
                   errno.ENOSYS, errno.EACCES}


def atomic_link(src: str, dst: str) -> str:
    """Make ``dst`` name the same file as ``src``, atomically: a hard link to a temporary name,
    renamed over ``dst``. Where hard links are impossible (another filesystem, EPERM, ...) ``dst``
    becomes an atomic copy instead.

    The names stay independent: every later write of either goes to a new file renamed over it,
    so rewriting one never changes the other's content.

    Returns:
        ``"link"`` or ``"copy"``.
    """
    directory = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(directory, _temp_prefix(dst) + next(tempfile._get_candidate_names()))
    try:
        os.link(src, tmp)
    except (OSError, AttributeError, NotImplementedError) as e:
        if isinstance(e, OSError) and e.errno not in _NO_LINK_ERRNOS:
            raise
        atomic_copy(src, dst)
        return "copy"
    try:
        os.replace(tmp, dst)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(directory)
    return "link"


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def plain_config(cfg: Any) -> Dict[str, Any]:
    """The resolved config as plain containers (safe to load weights-only)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return dict(cfg)


# -- RNG ---------------------------------------------------------------------------------------
def get_rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2]),
             "python": list(random.getstate()[1]), "python_version": random.getstate()[0]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "python" in state:
        random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# -- saving ------------------------------------------------------------------------------------
def _is_better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def is_better(value: float, best: Optional[float], cfg: DictConfig) -> bool:
    """Whether ``value`` of ``checkpoint.best_checkpoint_metric`` beats ``best``."""
    return best is None or _is_better(value, best, bool(cfg.checkpoint.maximize_best_checkpoint_metric))


def _is_full_config(cfg: Any) -> bool:
    """Whether ``cfg`` is the whole run config (else it is its ``checkpoint`` node, as fairseq's
    functions take it)."""
    if isinstance(cfg, (DictConfig, dict)):
        return "checkpoint" in cfg
    return hasattr(cfg, "checkpoint")


def save_checkpoint(cfg: Any, trainer: Any, epoch_itr: Any, val_loss: Optional[float],
                    end_of_epoch: Optional[bool] = None, state: Optional[Dict[str, Any]] = None,
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
                     end_of_epoch: bool, state: Dict[str, Any], improved: bool) -> None:
    """Write the checkpoints due now (on the first process only) and track the best metric.

    Names: ``checkpoint{epoch}.pt`` at the end of an epoch (every ``save_interval`` epochs),
    ``checkpoint_{epoch}_{updates}.pt`` every ``save_interval_updates`` updates (also when that
    falls on an epoch end), ``checkpoint_best.pt`` when ``val_loss`` improves,
    ``checkpoint.best_{metric}_{value}.pt`` for the ``keep_best_checkpoints`` best, and
    ``checkpoint_last.pt`` every time. ``state`` carries ``best`` and ``num_bad_validations``
    (for ``patience``), already updated for this validation; ``improved`` says whether
    ``val_loss`` is a new best.
    """
    from fairseq.distributed import fully_sharded
    from fairseq.distributed_utils import get_world_size, is_master

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

    sharded = fully_sharded.saves_sharded(cfg)
    snapshot = {} if sharded else trainer.state_dict()
    if not (is_master() or sharded):
        return
    if ckpt.get("no_save_optimizer_state", False):
        snapshot.pop("optimizer", None)
    snapshot["cfg"] = plain_config(cfg)
    snapshot["version"] = CHECKPOINT_VERSION
    snapshot["extra_state"] = {
        "epoch": epoch,
        "train_iterator": epoch_itr.state_dict(),
        "val_loss": val_loss,
        "best": state.get("best"),
        "num_bad_validations": state.get("num_bad_validations", 0),
        "train_wall": state["train_wall"].elapsed_time if "train_wall" in state else 0.0,
        "rng": get_rng_state(),
        # the names this save gives the file (restore_save_names completes a save killed midway)
        "saved_as": list(names),
        # the data position counts batches of one of this many shards (rescaled on resume)
        "data_shards": get_world_size(),
    }
    save_dir = ckpt.save_dir
    first = os.path.join(save_dir, names[0])
    if sharded:
        wait_for_checkpoint_writes()
        _save_sharded(cfg, trainer, snapshot, names, val_loss)
        return
    snapshot = with_integrity(snapshot)  # SHA-256 of its tensors, checked when it is read
    done = "saved %s (epoch %d @ %d updates%s)" % (
        ", ".join(names), epoch, updates,
        f", valid {ckpt.best_checkpoint_metric} {val_loss:.3f}" if val_loss is not None else "")

    def write(save: Any) -> None:
        if os.path.isdir(first):  # a sharded checkpoint of the same name (save_consolidated changed)
            fully_sharded.remove_path(first)
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
        write(lambda f: torch.save(snapshot, f))


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
    from fairseq.distributed import fully_sharded
    from fairseq.distributed_utils import is_master

    ckpt = cfg.checkpoint
    first = os.path.join(ckpt.save_dir, names[0])
    trainer.save_sharded(first, extra, with_optimizer=not ckpt.get("no_save_optimizer_state", False))
    if not is_master():
        return
    for name in names[1:]:
        fully_sharded.link_dir(first, os.path.join(ckpt.save_dir, name))
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


def torch_persistent_save(obj: Any, filename: str, async_write: bool = False) -> None:
    """``torch.save`` ``obj`` to ``filename``: atomically (temporary file, fsync, rename), or
    through ``PathManager.opena`` with ``async_write`` (fairseq's signature). A checkpoint dict
    (one with a ``model`` entry) gets the SHA-256 of its tensors (:mod:`fairseq.checkpoint_integrity`)."""
    if isinstance(obj, dict) and "model" in obj:
        obj = with_integrity(obj)
    if async_write:
        if os.path.isfile(filename) and os.stat(filename).st_nlink > 1:
            os.unlink(filename)  # written in place: never through a hard link into another name
        with PathManager.opena(filename, "wb") as f:
            _torch_persistent_save(obj, f)
    else:
        _atomic_write(filename, lambda f: _torch_persistent_save(obj, f))


def _torch_persistent_save(obj: Any, f: Any) -> None:
    """``torch.save`` to a path or an open file."""
    if isinstance(f, str):
        with PathManager.open(f, "wb") as handle:
            torch.save(obj, handle)
        return
    torch.save(obj, f)


class SaveDirError(ConfigError, OSError):
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
    from fairseq.distributed.fully_sharded import remove_path

    remove_path(path)


# -- loading -----------------------------------------------------------------------------------
# The only classes a checkpoint may hold besides tensors and plain containers: the ``args``
# Namespace of checkpoints written before fairseq 0.10. Anything else is refused unread.
SAFE_GLOBALS: List[type] = [argparse.Namespace]


def _torch_load(path: str) -> Any:
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_ema_from_checkpoint(fpath: str) -> Dict[str, Any]:
    """A checkpoint whose ``model`` is the exponential moving average of its weights.

    Reads ``extra_state["ema"]`` (fairseq's EMA copy of the parameters) and returns
    ``{"model": OrderedDict of those tensors, ...}`` with the checkpoint's other entries, so that
    it loads like any checkpoint.

    Raises:
        CheckpointError: when the file cannot be read or holds no EMA weights.
    """
    from collections import OrderedDict

    with PathManager.open(fpath, "rb") as f:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            state = torch.load(f, map_location="cpu", weights_only=True)
    verify_integrity(state, fpath)
    ema = (state.get("extra_state") or {}).get("ema") if isinstance(state, dict) else None
    if not isinstance(ema, dict):
        raise CheckpointError(f"{fpath} holds no EMA weights (extra_state['ema']); it was not "
                              "trained with an exponential moving average")
    state = dict(state)
    state["model"] = OrderedDict((k, v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
                                 for k, v in ema.items())
    return state


def load_checkpoint_to_cpu(path: str, arg_overrides: Optional[Dict[str, Any]] = None,
                           load_on_all_ranks: bool = False) -> Dict[str, Any]:
    """Read a checkpoint safely (weights only) onto the CPU and upgrade old layouts.

    Checkpoints of this package and of fairseq 0.12 (``cfg`` dict) load as they are; those of
    fairseq before 0.10 (an ``argparse.Namespace`` under ``args``, no ``cfg``) get a ``cfg``
    dict converted from their flags. ``torch.load(weights_only=True)`` with only
    ``argparse.Namespace`` allowed besides tensors and containers: loading never runs code.

    Args:
        path: the checkpoint file.
        arg_overrides: ``{key: value}`` set on every node of ``cfg`` that has ``key``.
        load_on_all_ranks: accepted for fairseq's signature; every process reads the local file.

    Returns:
        The checkpoint dict; ``state["cfg"]`` is a plain nested dict.

    Raises:
        CheckpointError: the file is missing, truncated, holds objects other than tensors,
            containers and a Namespace, is no fairseq checkpoint, or its tensors do not match
            the SHA-256 stored when it was written (a checkpoint without one, such as
            fairseq's, loads with a warning).
    """
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, ".metadata")):
        raise CheckpointError(
            f"{path} is a sharded checkpoint directory (ddp_backend=fully_sharded); write it as one "
            f"file with `python -m fairseq.distributed.fully_sharded consolidate {path} OUT.pt`, or "
            "train with checkpoint.save_consolidated=true (--save-consolidated)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its write never completed; "
                              "use another checkpoint (e.g. checkpoint_last.pt or an earlier one)")
    try:
        state = _torch_load(path)
    except Exception as e:  # noqa: BLE001 -- any unpickling failure becomes one clear message
        raise CheckpointError(
            f"cannot load checkpoint {path}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}. "
            "It is truncated, corrupt, or holds objects other than tensors and plain containers "
            "(refused: loading it could run code)") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    verify_integrity(state, path)  # before anything reads it: flipped bytes are refused
    _upgrade_state(state, path)
    if arg_overrides:
        for node in state["cfg"].values():
            if isinstance(node, dict):
                for key, value in arg_overrides.items():
                    if key in node:
                        node[key] = value
    return state


def _upgrade_state(state: Dict[str, Any], path: str) -> None:
    """Bring the layouts of older fairseq checkpoints to the current one, in place."""
    if "optimizer_history" not in state and "best_loss" in state:  # before fairseq 0.6
        state["optimizer_history"] = [{"criterion_name": "CrossEntropyCriterion",
                                       "best_loss": state.pop("best_loss")}]
    if "epoch" in state and "extra_state" not in state:
        state["extra_state"] = {"epoch": state.pop("epoch"), "val_loss": state.pop("val_loss", None),
                                "batch_offset": state.pop("batch_offset", 0)}
    extra = state.get("extra_state")
    if isinstance(extra, dict) and "train_iterator" not in extra and "epoch" in extra:
        extra["train_iterator"] = {"epoch": max(int(extra["epoch"]), 1),
                                   "iterations_in_epoch": extra.get("batch_offset", 0)}
    if isinstance(extra, dict) and "epoch" not in extra and isinstance(extra.get("train_iterator"), dict):
        extra["epoch"] = extra["train_iterator"].get("epoch")  # fairseq 0.12 keeps it only there
    history = state.get("optimizer_history")
    if "num_updates" not in state and isinstance(history, list) and history and isinstance(history[-1], dict):
        state["num_updates"] = int(history[-1].get("num_updates", 0))  # fairseq keeps it there
    cfg = state.get("cfg")
    args = state.get("args")
    if cfg is None and args is not None:
        if not isinstance(args, argparse.Namespace):
            raise CheckpointError(f"{path}: its 'args' entry is a {type(args).__name__}, not the "
                                  "argparse.Namespace of a fairseq checkpoint; cannot read it")
        state["cfg"], state["dropped_args"] = namespace_to_config_dict(args)
    elif isinstance(cfg, DictConfig):
        state["cfg"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    elif not isinstance(cfg, dict):
        raise CheckpointError(
            f"{path} holds neither a 'cfg' dict nor an 'args' Namespace: it was written by a "
            "fairseq version this package cannot read (supported: fairseq 0.12 and the args-era "
            "checkpoints before it, and this package's own)")


def namespace_to_config_dict(args: argparse.Namespace) -> Tuple[Dict[str, Any], List[str]]:
    """The nested config dict of a pre-0.10 checkpoint's flat ``args`` Namespace.

    Each generic node takes the attributes named like its fields; each component node is chosen
    by ``args.task``, ``args.arch``, ``args.criterion``, ``args.optimizer`` and
    ``args.lr_scheduler`` and takes its dataclass's fields (a field interpolating another, such
    as the optimizer's ``lr``, takes the attribute of that name). fairseq's own upgrades of old
    flags are applied first (``min_lr`` is ``stop_min_lr``, a float ``lr`` becomes a list,
    ``max_positions`` gives ``max_target_positions``), and a model class may upgrade its own
    flags (``upgrade_legacy_args``).

    Returns:
        ``(cfg_dict, unused)``: the config and the attributes no node took.
    """
    from fairseq.dataclass.configs import COMPONENT_GROUPS, GENERIC_GROUPS
    from fairseq.dataclass.json_io import node_dataclass

    values = dict(vars(args))
    if "max_positions" in values and "max_target_positions" not in values:
        values["max_target_positions"] = values["max_positions"]
    if "min_lr" in values:
        values["stop_min_lr"] = values.pop("min_lr")
    if isinstance(values.get("lr"), (int, float)):
        values["lr"] = [values["lr"]]
    if isinstance(values.get("data"), list) and values["data"]:
        values["data"] = values["data"][0]
    values.setdefault("task", "translation")  # fairseq's default for checkpoints without one

    names = {"task": values.get("task"), "model": values.get("arch"),
             "criterion": values.get("criterion"), "optimizer": values.get("optimizer"),
             "lr_scheduler": values.get("lr_scheduler"), "bpe": values.get("bpe"),
             "tokenizer": values.get("tokenizer")}
    model_cls = _model_class(names["model"])
    if model_cls is not None and hasattr(model_cls, "upgrade_legacy_args"):
        model_cls.upgrade_legacy_args(values)
    namespace = argparse.Namespace(**values)
    used = {"arch", "task", "criterion", "optimizer", "lr_scheduler", "bpe", "tokenizer", "_name"}
    cfg: Dict[str, Any] = {}
    for group, dc_type in GENERIC_GROUPS.items():
        node = dc_type.namespace_values(namespace)
        cfg[group] = node
        used.update(node)
    for group in COMPONENT_GROUPS:
        name = names[group]
        if name is None:
            continue
        dc_type = node_dataclass(group, str(name))
        node = {"_name": str(name)}
        if dc_type is not None:
            own = dc_type.namespace_values(namespace)
            node.update(own)
            used.update(own)
            used.update(f.name for f in dataclasses.fields(dc_type))
        cfg[group] = node
    unused = sorted(k for k in values if k not in used)
    return cfg, unused


def _model_class(name: Optional[str]) -> Optional[type]:
    if not name:
        return None
    from fairseq.models import MODEL_REGISTRY
    from fairseq.dataclass.initialize import import_components

    import_components()
    return MODEL_REGISTRY.get(str(name)).cls if str(name) in MODEL_REGISTRY else None


def _check_supported(saved: Dict[str, Any], path: str) -> None:
    """One clear error when a checkpoint needs a model or task this package does not have."""
    from fairseq.dataclass.initialize import import_components
    from fairseq.models import MODEL_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    import_components()
    _check_plugins(saved, path)
    for group, registry in (("model", MODEL_REGISTRY), ("task", TASK_REGISTRY)):
        node = saved.get(group)
        name = node.get("_name") if isinstance(node, dict) else None
        if not name:
            raise CheckpointError(f"{path}: its config names no {group} (cfg.{group}._name is empty)")
        if str(name) not in registry:
            raise CheckpointError(
                f"{path} holds a {group} {name!r}, which this package does not support "
                f"(supported {group}s: {', '.join(registry.choices())})")
    model_cls = MODEL_REGISTRY.get(str(saved["model"]["_name"])).cls
    check = getattr(model_cls, "unsupported_options", None)
    unsupported = check(saved["model"]) if check is not None else []
    if unsupported:
        raise CheckpointError(f"{path}: model options this package does not implement: "
                              f"{', '.join(unsupported)}")


def _check_plugins(saved: Dict[str, Any], path: str) -> None:
    """A checkpoint trained with ``--user-dir`` whose model, task or criterion is not registered
    now: say which ``--user-dir`` to pass (it is never imported from the checkpoint)."""
    from fairseq.registry import ALL_REGISTRIES

    user_dir = (saved.get("common") or {}).get("user_dir") if isinstance(saved.get("common"), dict) else None
    if not user_dir or os.path.basename(os.path.normpath(str(user_dir))) in sys.modules:
        return  # no plugin, or one of its name imported: the usual "not supported" errors follow
    for group in ("model", "task", "criterion"):
        node = saved.get(group)
        name = node.get("_name") if isinstance(node, dict) else None
        registry = ALL_REGISTRIES.get(group)
        if name and registry is not None and str(name) not in registry:
            raise PluginRequiredError(
                f"{path} holds the {group} {str(name)!r}, which no imported plugin registers; it was "
                f"trained with --user-dir {user_dir}: pass that plugin directory explicitly "
                "(--user-dir DIR, common.user_dir=DIR, or from_pretrained(..., user_dir=DIR)). "
                "A checkpoint's own user_dir is never imported: that would run code named by the file")


def config_from_checkpoint(state: Dict[str, Any], path: str = "the checkpoint") -> DictConfig:
    """The typed run config of a loaded checkpoint (see ``fairseq.dataclass.json_io``).

    Fields and whole nodes this package does not have (fairseq's ``generation``, ``bmuf``, ...,
    or the flags of an args-era checkpoint that no node takes) are named in one warning.

    Raises:
        CheckpointError: the checkpoint's model or task is not supported, or one of their
            values cannot be read.
        PluginRequiredError: it was trained with a ``--user-dir`` plugin that is not imported
            and its model, task or criterion is not registered (the checkpoint's own
            ``common.user_dir`` is never imported).
    """
    from fairseq.dataclass.json_io import ConfigValueError, config_from_dict

    saved = state["cfg"]
    # the checkpoint's common.user_dir is not imported (it would run code the file names): its
    # plugins must already be imported, from the user's --user-dir
    _check_supported(saved, path)
    saved = {group: dict(node) if isinstance(node, dict) else node for group, node in saved.items()}
    model = saved["model"]
    if model.get("max_target_positions") is None:
        # fairseq falls back to the tokens_per_sample the model was trained with
        fallback = model.get("tokens_per_sample") or (saved.get("task") or {}).get("tokens_per_sample")
        if fallback is not None:
            model["max_target_positions"] = fallback
        else:
            model.pop("max_target_positions", None)
    dropped = [f"args.{k}" for k in state.get("dropped_args", [])]
    try:
        return config_from_dict(saved, source=path, dropped=dropped)
    except ConfigValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _load_weights(model: torch.nn.Module, model_state: Dict[str, Any], path: str, strict: bool,
                  vocab_size: Optional[int] = None) -> None:
    try:
        model.load_state_dict(model_state, strict=strict)
    except RuntimeError as e:
        lines = [line.strip().rstrip(".") for line in str(e).splitlines() if line.strip()][1:3]
        hint = (f" (is task.data's dict.txt the one it was trained with? {vocab_size} types now)"
                if vocab_size is not None else "")
        raise CheckpointError(f"{path} does not fit the model built from its own config: "
                              f"{'; '.join(lines)}{hint}") from None


def prune_state_dict(state_dict: Dict[str, Any], model_cfg: Optional[Any]) -> Dict[str, Any]:
    """The weights of the layers ``model_cfg`` keeps (LayerDrop pruning), renumbered.

    With ``decoder_layers_to_keep="0,2"`` (or ``encoder_layers_to_keep``), the keys of layer 0
    and 2 become those of layers 0 and 1 and the other layers' keys are dropped; without it, or
    without a config, ``state_dict`` is returned as is.
    """
    if model_cfg is None:
        return state_dict
    passes = []
    for side in ("encoder", "decoder"):
        keep = getattr(model_cfg, f"{side}_layers_to_keep", None)
        if keep:
            kept = sorted(int(i) for i in str(keep).split(",") if i.strip())
            passes.append((re.compile(rf"^{side}.*\.layers\.(\d+)"), {old: new for new, old in enumerate(kept)}))
    if not passes:
        return state_dict
    logger.info("pruning the checkpoint's layers to those in *_layers_to_keep")
    pruned: Dict[str, Any] = {}
    for key, value in state_dict.items():
        if not re.search(r"\.layers\.(\d+)\.", key):
            pruned[key] = value
            continue
        for pattern, mapping in passes:
            m = pattern.search(key)
            if m and int(m.group(1)) in mapping:
                pruned[key[: m.start(1)] + str(mapping[int(m.group(1))]) + key[m.end(1):]] = value
    return pruned


def load_model_ensemble_and_task(filenames: Sequence[str], arg_overrides: Optional[Dict[str, Any]] = None,
                                 task: Any = None, strict: bool = True, suffix: str = "",
                                 num_shards: int = 1, state: Optional[Dict[str, Any]] = None):
    """Load models from checkpoints (this package's or fairseq's) for inference.

    Args:
        filenames: checkpoint paths (an ensemble: one model each).
        arg_overrides: ``{key: value}`` set on every config node with that key (``data`` sets
            the task's data directory); eval-time settings win over the checkpoint's.
            ``user_dir`` is the caller's plugin directory, imported first; the ``user_dir`` a
            checkpoint records is never imported.
        task: a set-up task to build the models with (default: the first checkpoint's task).
        strict: the state dict must match the model key for key.
        suffix: inserted before ``.pt`` of every filename (fairseq's checkpoint suffix).
        num_shards: model-parallel shards per model; only 1 is supported.
        state: an already loaded checkpoint dict to use instead of reading ``filenames[0]``.

    Returns:
        ``(models, cfg, task)``: models in eval mode, the first checkpoint's config, the task.

    Raises:
        CheckpointError: a missing, unsafe, corrupt (SHA-256 mismatch) or unsupported
            checkpoint (one line, nothing loaded).
        PluginRequiredError: its components come from a ``--user-dir`` plugin not given.
    """
    from fairseq import tasks
    from fairseq.dataclass.utils import overwrite_args_by_name

    if num_shards != 1:
        raise CheckpointError(f"num_shards={num_shards}: sharded (model-parallel) checkpoints "
                              "are not supported; give one file per model")
    overrides = dict(arg_overrides or {})
    data = overrides.pop("data", None)
    if overrides.get("user_dir"):  # the caller's plugin directory (never the checkpoint's)
        from fairseq.dataclass.initialize import import_user_module

        import_user_module(str(overrides["user_dir"]))
    models = []
    cfg = None
    for i, filename in enumerate(filenames):
        path = filename.replace(".pt", suffix + ".pt") if suffix else filename
        ckpt = state if (state is not None and i == 0) else load_checkpoint_to_cpu(path)
        model_cfg = config_from_checkpoint(ckpt, path)
        if data is not None:
            model_cfg.task.data = data
        if overrides:
            overwrite_args_by_name(model_cfg, overrides)
        if task is None:
            task = tasks.setup_task(model_cfg.task)
        try:
            model = task.build_model(model_cfg.model)
        except ValueError as e:
            raise CheckpointError(f"{path}: cannot build its model: {e}") from None
        vocab = len(task.source_dictionary) if getattr(task, "source_dictionary", None) is not None else None
        _load_weights(model, ckpt["model"], path, strict, vocab)
        model.eval()
        models.append(model)
        if cfg is None:
            cfg = model_cfg
    return models, cfg, task


def load_model_ensemble(filenames: Sequence[str], arg_overrides: Optional[Dict[str, Any]] = None,
                        task: Any = None, strict: bool = True, suffix: str = "", num_shards: int = 1,
                        state: Optional[Dict[str, Any]] = None):
    """Like :func:`load_model_ensemble_and_task`, returning ``(models, cfg)``."""
    models, cfg, _ = load_model_ensemble_and_task(filenames, arg_overrides, task, strict, suffix,
                                                  num_shards, state)
    return models, cfg


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def remove_partial_writes(save_dir: str) -> None:
    """Delete temporary files left by a save that was killed midway (never a real checkpoint).

    Training calls it holding the save_dir lock (:mod:`fairseq.save_dir_lock`), so no other run
    writes there; a temporary file whose name carries the PID of a live process other than this
    one is kept all the same.
    """
    from fairseq.distributed_utils import is_master

    if not is_master() or not os.path.isdir(save_dir):
        return
    for name in os.listdir(save_dir):
        if name.startswith(".tmp_checkpoint"):
            m = _TEMP_NAME.fullmatch(name)
            if m and int(m.group(1)) != os.getpid() and _pid_alive(int(m.group(1))):
                logger.warning("kept %s: process %s, which writes it, is alive", name, m.group(1))
                continue
            _remove_checkpoint(os.path.join(save_dir, name))
            logger.warning("removed %s, left by a save that was interrupted", name)
    from fairseq.distributed.fully_sharded import recover_old_dirs

    recover_old_dirs(save_dir)


def restore_save_names(path: str, extra_state: Dict[str, Any], ckpt: Any = None) -> List[str]:
    """Give the checkpoint ``path`` (``checkpoint_last.pt``, written first by every save) the
    other names its save meant to give it and did not, because the run was killed between them.

    A name that is missing, or is another file than ``path`` (an older ``checkpoint_best.pt``),
    becomes a hard link to ``path`` (a copy where links are impossible); then the usual
    retention rules of ``ckpt`` (the ``checkpoint`` config) apply. Call it on the first
    process, holding the save_dir lock.

    Returns:
        The names linked (or copied) now.
    """
    names = [n for n in extra_state.get("saved_as") or [] if isinstance(n, str) and n != os.path.basename(path)
             and re.fullmatch(r"checkpoint[\w.\-]*\.pt", n)]
    if not names or os.path.basename(path) != "checkpoint_last.pt":
        return []
    save_dir = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):  # a sharded checkpoint: directories of links to its files
        from fairseq.distributed import fully_sharded

        done = [n for n in names if not fully_sharded.same_dir(path, os.path.join(save_dir, n))]
        for name in done:
            fully_sharded.link_dir(path, os.path.join(save_dir, name))
    else:
        done = _restore_file_names(path, save_dir, names)
    if done:
        logger.warning("completed the save that was interrupted: %s now %s %s", ", ".join(done),
                       "is" if len(done) == 1 else "are", os.path.basename(path))
        if ckpt is not None:
            _prune(save_dir, ckpt)
    return done


def _restore_file_names(path: str, save_dir: str, names: List[str]) -> List[str]:
    own = os.stat(path)
    done = []
    for name in names:
        target = os.path.join(save_dir, name)
        try:
            other = os.stat(target)
        except FileNotFoundError:
            other = None
        if other is not None and (other.st_ino, other.st_dev) == (own.st_ino, own.st_dev):
            continue
        if other is not None and other.st_size == own.st_size and _same_bytes(path, target):
            continue  # the copy made where links are impossible
        atomic_link(path, target)
        done.append(name)
    return done


def _same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def checkpoint_path_to_restore(cfg: DictConfig) -> str:
    restore = cfg.checkpoint.restore_file
    if os.path.isabs(restore) or os.path.dirname(restore):
        return restore
    return os.path.join(cfg.checkpoint.save_dir, restore)


def load_checkpoint(cfg: Any, trainer: Any, **passthrough_args: Any) -> Tuple[Optional[Dict[str, Any]], Any]:
    """Restore the trainer from ``checkpoint.restore_file`` (or ``finetune_from_model``).

    With the whole run config this drives this package's :class:`~fairseq.trainer.Trainer`
    (:func:`_load_run_checkpoint`). With a ``checkpoint`` node, as fairseq's callers pass it, it
    follows fairseq's protocol: ``trainer.load_checkpoint(path, reset_optimizer,
    reset_lr_scheduler, optimizer_overrides, reset_meters=...)`` returns the extra state and
    ``trainer.get_train_iterator(epoch=..., load_dataset=True, **passthrough_args)`` the iterator.

    Returns:
        ``(extra_state, epoch_itr)``.
    """
    if _is_full_config(cfg):
        return _load_run_checkpoint(cfg, trainer)
    return _load_checkpoint_fairseq_protocol(cfg, trainer, **passthrough_args)


def _load_checkpoint_fairseq_protocol(cfg: Any, trainer: Any, **passthrough_args: Any):
    reset_optimizer = bool(cfg.reset_optimizer)
    reset_lr_scheduler = bool(cfg.reset_lr_scheduler)
    reset_meters = bool(cfg.reset_meters)
    reset_dataloader = bool(cfg.reset_dataloader)
    try:
        optimizer_overrides = ast.literal_eval(str(getattr(cfg, "optimizer_overrides", "{}") or "{}"))
    except (ValueError, SyntaxError):
        raise CheckpointError(f"checkpoint.optimizer_overrides={cfg.optimizer_overrides!r} is not a "
                              "literal dict, e.g. \"{'lr': 0.1}\"") from None
    finetune = cfg.finetune_from_model
    if finetune is not None and (reset_optimizer or reset_lr_scheduler or reset_meters or reset_dataloader):
        raise ValueError("--finetune-from-model can not be set together with either --reset-optimizer"
                         " or reset_lr_scheduler or reset_meters or reset_dataloader")
    if cfg.restore_file != "checkpoint_last.pt" and finetune:
        raise ValueError("--finetune-from-model and --restore-file (non-default value) can not be "
                         f"specified together: restore_file={cfg.restore_file!r}")
    suffix = getattr(trainer, "checkpoint_suffix", "") or ""
    if cfg.restore_file == "checkpoint_last.pt":
        path = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
        first_launch = not PathManager.exists(path)
        if first_launch and getattr(cfg, "continue_once", None) is not None:
            path = cfg.continue_once
        elif first_launch and finetune is not None:
            if not PathManager.exists(finetune):
                raise ValueError(f"--finetune-from-model {finetune} does not exist")
            path = finetune
            reset_optimizer = reset_lr_scheduler = reset_meters = reset_dataloader = True
            logger.info("loading pretrained model from %s: optimizer, lr scheduler, meters, "
                        "dataloader will be reset", path)
    else:
        path = cfg.restore_file.replace(".pt", f"{suffix}.pt") if suffix else cfg.restore_file
    extra_state = trainer.load_checkpoint(path, reset_optimizer, reset_lr_scheduler,
                                          optimizer_overrides, reset_meters=reset_meters)
    if extra_state is not None and "best" in extra_state and not reset_optimizer and not reset_meters:
        save_checkpoint.best = extra_state["best"]  # type: ignore[attr-defined]
    if extra_state is not None and not reset_dataloader:
        itr_state = extra_state["train_iterator"]
        epoch_itr = trainer.get_train_iterator(epoch=itr_state["epoch"], load_dataset=True,
                                               **passthrough_args)
        epoch_itr.load_state_dict(itr_state)
    else:
        epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=True, **passthrough_args)
    trainer.lr_step(epoch_itr.epoch)
    return extra_state, epoch_itr


def _load_run_checkpoint(cfg: DictConfig, trainer: Any) -> Tuple[Dict[str, Any], Any]:
    """Restore the trainer from ``checkpoint.restore_file`` if it exists; return the iterator.

    Returns:
        ``(extra_state, epoch_itr)``: the saved extra state (``{}`` for a fresh run) and the
        training iterator positioned where the checkpoint left off.
    """
    from fairseq.training import get_train_iterator

    remove_partial_writes(cfg.checkpoint.save_dir)
    path = checkpoint_path_to_restore(cfg)
    extra_state: Dict[str, Any] = {}
    explicit = cfg.checkpoint.restore_file != "checkpoint_last.pt"
    finetune = cfg.checkpoint.finetune_from_model
    if finetune and explicit:
        raise CheckpointError(
            "checkpoint.finetune_from_model and checkpoint.restore_file both name a checkpoint; "
            "give only one (finetune_from_model loads the weights only)")
    if os.path.isfile(path):
        state = load_checkpoint_to_cpu(path)
        trainer.load_state_dict(state, reset_optimizer=cfg.checkpoint.reset_optimizer,
                                reset_lr_scheduler=cfg.checkpoint.reset_lr_scheduler, source=path)
        extra_state = state.get("extra_state", {}) or {}
        logger.info("loaded checkpoint %s (epoch %s @ %d updates)", path,
                    extra_state.get("epoch"), trainer.get_num_updates())
        if cfg.checkpoint.reset_meters:
            extra_state.pop("train_wall", None)
    elif os.path.isdir(path):
        extra_state = _load_sharded_checkpoint(cfg, trainer, path)
    elif explicit:
        raise CheckpointError(f"checkpoint.restore_file={cfg.checkpoint.restore_file!r}: {path} does not exist")
    elif finetune:
        state = load_checkpoint_to_cpu(finetune)
        trainer.load_model_weights(state["model"], finetune)
        logger.info("fine-tuning from the weights of %s (optimizer, schedule and data start fresh)", finetune)
    else:
        logger.info("no checkpoint found at %s: starting from scratch", path)

    if extra_state and not cfg.checkpoint.reset_dataloader:
        itr_state = reshard_data_position(extra_state)
        epoch_itr = get_train_iterator(cfg, trainer.task, epoch=itr_state["epoch"])
        epoch_itr.load_state_dict(itr_state)
    else:
        epoch_itr = get_train_iterator(cfg, trainer.task, epoch=1)
    if extra_state.get("rng") is not None:
        set_rng_state(extra_state["rng"])
    return extra_state, epoch_itr


def _load_sharded_checkpoint(cfg: DictConfig, trainer: Any, path: str) -> Dict[str, Any]:
    """Restore the trainer from the DCP directory ``path`` (any number of processes wrote it);
    return its extra state."""
    from fairseq.distributed import fully_sharded

    try:
        meta = fully_sharded.read_extra(path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    trainer.load_sharded(path, meta, reset_optimizer=cfg.checkpoint.reset_optimizer,
                         reset_lr_scheduler=cfg.checkpoint.reset_lr_scheduler)
    extra_state = meta.get("extra_state", {}) or {}
    logger.info("loaded sharded checkpoint %s (epoch %s @ %d updates, written by %s processes)", path,
                extra_state.get("epoch"), trainer.get_num_updates(), extra_state.get("data_shards", "?"))
    if cfg.checkpoint.reset_meters:
        extra_state.pop("train_wall", None)
    return extra_state


def reshard_data_position(extra_state: Dict[str, Any]) -> Dict[str, Any]:
    """The saved data position, for this run's number of processes.

    Each process counts the batches of its own shard (shard ``k`` takes batches ``k, k + N,
    ...``), so a position saved by N processes is ``N / M`` times that count for M processes.
    When that is not a whole number the run restarts at the batch before it (and says so).
    """
    from fairseq.distributed_utils import get_world_size

    itr_state = dict(extra_state["train_iterator"])
    saved, now = int(extra_state.get("data_shards") or get_world_size()), get_world_size()
    position = int(itr_state.get("iterations_in_epoch", 0))
    if saved != now and position > 0:
        consumed = position * saved
        itr_state["iterations_in_epoch"] = consumed // now
        logger.info("data position: %d batches into the epoch on each of %d processes = %d on each of "
                    "%d now", position, saved, consumed // now, now)
        if consumed % now:
            logger.warning("the %d batches consumed by %d processes do not split evenly over %d: "
                           "resuming %d batches earlier", consumed, saved, now, consumed % now)
    return itr_state


def load_model_for_inference(path: str, overrides: Optional[Dict[str, Any]] = None,
                             data: Optional[str] = None):
    """Rebuild the task and model a checkpoint was trained with, weights loaded, in eval mode.

    Reads this package's checkpoints and fairseq's (0.12 ``cfg`` dicts and older ``args``
    Namespaces, with fairseq's state-dict layouts).

    Args:
        path: the checkpoint file.
        overrides: values set on every config node that has the key (eval-time settings
            such as ``tokens_per_sample`` win over the checkpoint's).
        data: a data directory replacing the checkpoint's ``task.data``.

    Returns:
        ``(model, task, cfg)``.
    """
    arg_overrides = dict(overrides or {})
    if data is not None:
        arg_overrides["data"] = data
    models, cfg, task = load_model_ensemble_and_task([path], arg_overrides=arg_overrides)
    return models[0], task, cfg


def upgrade_config(cfg: DictConfig, saved: Dict[str, Any]) -> DictConfig:
    """Merge a saved plain config into the current schema ``cfg`` (typed, string forms parsed).

    Keys the current code lacks are dropped with one warning; keys the checkpoint lacks keep the
    current defaults.
    """
    from fairseq.dataclass.json_io import decode_node, node_dataclass

    dropped: List[str] = []
    for group, values in saved.items():
        if not isinstance(values, dict) or group not in cfg.keys() or not isinstance(cfg[group], DictConfig):
            if group != "_name" and values is not None and group not in cfg.keys():
                dropped.append(f"{group} (whole node)")
            continue
        dc_type = node_dataclass(group, values.get("_name") or cfg[group].get("_name"))
        if dc_type is None:
            continue
        for key, value in decode_node(dc_type, values, f"{group}.", dropped).items():
            cfg[group][key] = value
    if dropped:
        logger.warning("checkpoint config keys unknown to this version were ignored: %s",
                       ", ".join(dropped))
    return cfg
