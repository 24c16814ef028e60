"""When checkpoints are written, under which names, and which old ones are pruned.

Every save writes ``checkpoint_last.pt`` first and gives the file its other names as hard links
(copies where links are impossible), so ``checkpoint_last.pt`` is never older than another
complete checkpoint. ``checkpoint.write_checkpoints_asynchronously`` hands the write to one
background thread (:class:`_BackgroundWrites`).

With ``checkpoint.save_format=safetensors`` each name is a pair, ``NAME.pt`` (the training state,
with the SHA-256 of the weights) and ``NAME.safetensors`` (the weights; layout in
:mod:`fairseq.checkpoint.state`), written by :func:`_write_pair`: both files to temporaries,
fsynced, then the ``.pt`` renamed into place, then the weights. A kill between those two renames
leaves the new ``.pt`` and the complete weights under their temporary name, which the next load
finds by their SHA-256 and renames (``loading.interrupted_save_weights``). The other names link
the weights first and the ``.pt`` second; pruning removes both files of a name, and a name
linked to ``checkpoint_last.pt`` without its weights (a kill between links) gets them at the
next save or start (:func:`_complete_pairs`).
"""
import errno
import hashlib
import io
import logging
import os
import re
import tempfile
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from omegaconf import DictConfig

from fairseq.checkpoint import sharded
from fairseq.checkpoint.files import _atomic_write, _fsync_dir, _temp_prefix, _umask, atomic_link, pid_alive
from fairseq.checkpoint.integrity import file_sha256, with_integrity, weights_file_matches
from fairseq.checkpoint.loading import _WEIGHTS_TEMP, interrupted_save_weights
from fairseq.checkpoint.state import (
    CHECKPOINT_VERSION, WEIGHTS_KEY, WEIGHTS_SUFFIX, _is_full_config, _torch_load, get_rng_state,
    import_safetensors, plain_config, safetensors_metadata, split_model_state, state_file_path,
    weights_path,
)
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
    save_format = str(ckpt.get("save_format", "pt") or "pt")
    if as_dirs:
        if save_format != "pt":
            _warn_sharded_format()
        wait_for_checkpoint_writes()
        _save_sharded(cfg, trainer, snapshot, names, val_loss)
        return
    done = "saved %s (epoch %d @ %d updates%s)" % (
        ", ".join(names), epoch, updates,
        f", valid {ckpt.best_checkpoint_metric} {val_loss:.3f}" if val_loss is not None else "")
    if save_format == "safetensors":
        _save_pair(cfg, snapshot, names, done)
        return
    # the format marker and the SHA-256 of the whole checkpoint (tensors, config, optimizer and
    # scheduler state, RNG, extra_state), checked when it is read
    snapshot = with_integrity(snapshot)

    def write(save: Any) -> None:
        if os.path.isdir(first):  # a sharded checkpoint of the same name (save_consolidated changed)
            sharded.remove_path(first)
        _atomic_write(first, save)
        for name in names[1:]:  # one file, many names (a copy where links are impossible)
            atomic_link(first, os.path.join(save_dir, name))
        # weights of a safetensors pair these names had (save_format changed): no longer theirs
        _remove_stale_weights(save_dir, names)
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


# -- safetensors pairs -----------------------------------------------------------------------------
_sharded_format_warned = False


def _warn_sharded_format() -> None:
    global _sharded_format_warned
    if not _sharded_format_warned:
        _sharded_format_warned = True
        logger.warning("checkpoint.save_format=safetensors applies to single-file checkpoints: sharded "
                       "(fully_sharded) checkpoints are written as torch.distributed.checkpoint "
                       "directories; add --save-consolidated (checkpoint.save_consolidated=true) for pairs")


def _save_pair(cfg: DictConfig, snapshot: Dict[str, Any], names: List[str], done: str) -> None:
    """Write ``snapshot`` (the trainer's state and extra_state, no integrity record yet) as the
    safetensors pair ``names[0]`` and give it the other ``names`` (weights first, then ``.pt``);
    in the background with ``checkpoint.write_checkpoints_asynchronously``."""
    ckpt = cfg.checkpoint
    save_dir = ckpt.save_dir
    first = os.path.join(save_dir, names[0])
    st = import_safetensors("checkpoint.save_format=safetensors (--save-format safetensors)")
    tensors, record = split_model_state(snapshot.pop("model"))
    metadata = safetensors_metadata(os.path.basename(first), record)
    record["file"] = os.path.basename(weights_path(first))

    def state_with(sha: str, size: int) -> Dict[str, Any]:
        return with_integrity({**snapshot, WEIGHTS_KEY: dict(record, sha256=sha, bytes=size)})

    def finish() -> None:
        for name in names[1:]:
            target = os.path.join(save_dir, name)
            # the weights first: a kill between the two links leaves a .pt older than its weights
            # under a name the rerun links again (restore_save_names), completing the pair
            atomic_link(weights_path(first), weights_path(target))
            atomic_link(first, target)
        logger.info(done)
        _prune(save_dir, ckpt)

    save_run_config(cfg, save_dir)
    if ckpt.get("write_checkpoints_asynchronously", False):
        # serialized now (training goes on changing the weights and moments), written by a thread
        data = st.save(tensors, metadata=metadata)
        sha, size = hashlib.sha256(data).hexdigest(), len(data)
        buffer = io.BytesIO()
        torch.save(state_with(sha, size), buffer)

        def write_weights(path: str) -> Tuple[str, int]:
            with open(path, "wb") as f:
                f.write(data)
            return sha, size

        def job() -> None:
            _write_pair(first, write_weights, lambda f, _sha, _size: f.write(buffer.getbuffer()))
            finish()

        _background_writes.submit(job)
        return
    wait_for_checkpoint_writes()

    def save_weights(path: str) -> None:
        st.save_file(tensors, path, metadata=metadata)

    _write_pair(first, save_weights, lambda f, sha, size: _torch_save(state_with(sha, size), f, save_dir, first))
    finish()


def save_pair(state: Dict[str, Any], path: str) -> None:
    """Write a checkpoint dict (with its ``model``, as ``load_checkpoint_to_cpu`` returns it) as
    the safetensors pair ``path`` (``NAME.pt``) and ``NAME.safetensors``, atomically: e.g. to
    turn a single ``.pt`` into a pair. (The other way: ``torch_persistent_save`` of the loaded
    pair writes one ``.pt``.)

    Raises:
        ConfigError: ``path`` does not end in ``.pt``, or safetensors is not installed.
        CheckpointError: ``state`` holds no ``model`` state dict.
    """
    from fairseq.errors import CheckpointError

    if not str(path).endswith(".pt"):
        raise ConfigError(f"save_pair: {path} does not end in .pt; the pair is NAME.pt and NAME.safetensors")
    model = state.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"save_pair: the state to write as {path} has no 'model' state dict")
    st = import_safetensors("writing a safetensors pair")
    rest = {k: v for k, v in state.items() if k not in ("model", WEIGHTS_KEY)}
    tensors, record = split_model_state(model)
    metadata = safetensors_metadata(os.path.basename(path), record)
    record["file"] = os.path.basename(weights_path(path))
    directory = os.path.dirname(os.path.abspath(path))
    _write_pair(path, lambda p: st.save_file(tensors, p, metadata=metadata),
                lambda f, sha, size: _torch_save(with_integrity({**rest, WEIGHTS_KEY: dict(record, sha256=sha, bytes=size)}),
                                                 f, directory, path))


def _new_temp(path: str) -> Tuple[int, str]:
    """A new temporary file beside ``path`` (``.tmp_<name>.<pid>.<random>``), with the mode the
    umask gives: ``(fd, its path)``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=directory)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def _full_disk(error: BaseException) -> bool:
    text = str(error)
    return ((isinstance(error, OSError) and error.errno == errno.ENOSPC)
            or "No space left" in text or "StorageFull" in text)


def _write_pair(first: str, write_weights: Callable[[str], Optional[Tuple[str, int]]],
                write_state: Callable[[Any, str, int], Any]) -> None:
    """Write the pair ``first`` (``NAME.pt``) and ``NAME.safetensors`` atomically as a pair.

    ``write_weights(path)`` writes the weights file at the temporary ``path`` (returning its
    SHA-256 and size when it knows them); ``write_state(file, sha256, size)`` writes the ``.pt``
    that names them. Both are fsynced as temporaries, then the ``.pt`` is renamed into place (the
    commit: from then on it names the new weights) and the weights after it. An error before the
    commit removes both temporaries and leaves the previous pair whole.

    Raises:
        DiskFullError: the device filled up (nothing of this save is left).
    """
    weights = weights_path(first)
    directory = os.path.dirname(os.path.abspath(first))
    if os.path.isdir(first):  # a sharded checkpoint of the same name (save_consolidated changed)
        sharded.remove_path(first)
    weights_tmp: Optional[str] = None
    state_tmp: Optional[str] = None
    committed = False
    try:
        fd, weights_tmp = _new_temp(weights)
        os.close(fd)
        known = write_weights(weights_tmp)
        os.chmod(weights_tmp, 0o666 & ~_umask())  # safetensors creates the file anew (mode 0600)
        fd = os.open(weights_tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        sha, size = known if known is not None else file_sha256(weights_tmp)
        fd, state_tmp = _new_temp(first)
        with os.fdopen(fd, "wb") as f:
            write_state(f, sha, size)
            f.flush()
            os.fsync(f.fileno())
        os.replace(state_tmp, first)
        committed = True
        os.replace(weights_tmp, weights)
    except BaseException as e:
        if committed and weights_tmp is not None and os.path.exists(weights_tmp):
            try:  # the .pt names these weights now: complete the pair rather than drop them
                os.replace(weights_tmp, weights)
            except OSError:
                pass  # the next load completes it (interrupted_save_weights)
        else:
            for tmp in (weights_tmp, state_tmp):
                if tmp is not None and os.path.exists(tmp):
                    os.remove(tmp)
        if _full_disk(e) and not isinstance(e, DiskFullError):
            raise DiskFullError(f"no space left on device while writing {weights} and {first}; free "
                                "space there or give another checkpoint.save_dir (--save-dir); the "
                                "previous checkpoints are untouched") from None
        raise
    _fsync_dir(directory)


def _remove_stale_weights(save_dir: str, names: List[str]) -> None:
    """Remove the ``.safetensors`` of ``names`` just written as single ``.pt`` files: weights
    of an earlier save in the other format, which no ``.pt`` names any more."""
    for name in names:
        stale = weights_path(os.path.join(save_dir, name))
        if os.path.lexists(stale) and not os.path.isdir(stale):
            os.remove(stale)


def _pair_record(path: str) -> Optional[Dict[str, Any]]:
    """The ``model_safetensors`` entry of the ``.pt`` ``path``; None when it is no pair's (or
    cannot be read)."""
    try:
        state = _torch_load(path)
    except Exception:  # noqa: BLE001 -- unreadable: no pair to complete (its loader says why)
        return None
    record = state.get(WEIGHTS_KEY) if isinstance(state, dict) else None
    return record if isinstance(record, dict) else None


def _complete_pairs(save_dir: str) -> None:
    """Give every name hard-linked to ``checkpoint_last.pt`` the same weights file.

    A save links the weights of each further name before its ``.pt``; a run killed between those
    links leaves names whose ``.pt`` the rerun links to ``checkpoint_last.pt``
    (``restore_save_names``) while their ``.safetensors`` is missing or older. Those get
    ``checkpoint_last.safetensors`` now, when ``checkpoint_last.pt`` is a pair's (read only
    then); when it is a single file, their leftover weights are removed. Cheap otherwise: stats.
    """
    last = os.path.join(save_dir, "checkpoint_last.pt")
    try:
        own = os.stat(last)
    except OSError:
        return
    if not os.path.isfile(last):
        return
    last_weights = weights_path(last)
    try:
        reference = os.stat(last_weights)
    except OSError:
        reference = None
    behind = []
    for name in sorted(os.listdir(save_dir)):
        if name == "checkpoint_last.pt" or not re.fullmatch(r"checkpoint[\w.\-]*\.pt", name):
            continue
        path = os.path.join(save_dir, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_ino, st.st_dev) != (own.st_ino, own.st_dev):
            continue
        try:
            partner = os.stat(weights_path(path))
        except OSError:
            partner = None
        if reference is None and partner is None:
            continue
        if reference is not None and partner is not None and (
                (partner.st_ino, partner.st_dev) == (reference.st_ino, reference.st_dev)
                or (partner.st_size == reference.st_size
                    and file_sha256(weights_path(path)) == file_sha256(last_weights))):
            continue
        behind.append(path)
    if not behind:
        return
    record = _pair_record(last)
    for path in behind:
        if record is not None and reference is not None:
            atomic_link(last_weights, weights_path(path))
        elif record is None and os.path.lexists(weights_path(path)):
            os.remove(weights_path(path))
    if record is not None and reference is not None:
        logger.warning("completed the save that was interrupted: %s now %s the weights of "
                       "checkpoint_last.pt", ", ".join(os.path.basename(weights_path(p)) for p in behind),
                       "holds" if len(behind) == 1 else "hold")


def _remove_weight_temps(save_dir: str) -> None:
    """Remove the temporary weights files (``.tmp_NAME.safetensors.<pid>.*``) of saves that are no
    longer running, unless one holds the weights its ``NAME.pt`` names: that one completes its
    save (renamed into place). A live writer's (another process's) are kept."""
    try:
        names = sorted(os.listdir(save_dir))
    except OSError:
        return
    for name in names:
        m = _WEIGHTS_TEMP.fullmatch(name)
        if not m:
            continue
        pid = int(m.group(2))
        if pid != os.getpid() and pid_alive(pid):
            continue
        temp = os.path.join(save_dir, name)
        weights = os.path.join(save_dir, m.group(1))
        pt = state_file_path(weights)
        record = _pair_record(pt) if os.path.isfile(pt) else None
        if (record is not None and isinstance(record.get("bytes"), int)
                and os.path.getsize(temp) == record["bytes"] and not weights_file_matches(weights, record)
                and interrupted_save_weights(weights, record) == weights):
            continue
        if os.path.lexists(temp):
            os.remove(temp)
            logger.warning("removed %s, left by a save that was interrupted", name)


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
    """Remove old interval/epoch checkpoints beyond ``keep_interval_updates``/``keep_last_epochs``
    (and ``keep_best_checkpoints``); a safetensors pair goes as a whole, its ``.pt`` first."""
    _complete_pairs(save_dir)
    _remove_weight_temps(save_dir)

    def matching(pattern: str, number: Callable[[str], Any] = int) -> List[Tuple[Any, str]]:
        """``(number, NAME.pt)`` of every checkpoint name ``pattern`` (without the extension)
        matches, as a ``.pt`` or a ``.safetensors`` (a pair's weights left alone count too)."""
        found: Dict[str, Any] = {}
        for name in os.listdir(save_dir):
            for ext in (".pt", WEIGHTS_SUFFIX):
                if name.endswith(ext):
                    m = re.fullmatch(pattern, name[: -len(ext)])
                    if m:
                        found[name[: -len(ext)]] = number(m.group(1))
        return sorted(((n, os.path.join(save_dir, stem + ".pt")) for stem, n in found.items()),
                      key=lambda item: item[0], reverse=True)

    if ckpt.keep_interval_updates > 0:
        for _, path in matching(r"checkpoint_\d+_(\d+)")[ckpt.keep_interval_updates:]:
            _remove_checkpoint(path)
    if ckpt.keep_last_epochs > 0:
        for _, path in matching(r"checkpoint(\d+)")[ckpt.keep_last_epochs:]:
            _remove_checkpoint(path)
    if ckpt.keep_best_checkpoints > 0:
        metric = re.escape(str(ckpt.best_checkpoint_metric))
        found = matching(rf"checkpoint\.best_{metric}_(-?[\d.]+(?:e-?\d+)?)", float)
        found.sort(key=lambda item: item[0], reverse=bool(ckpt.maximize_best_checkpoint_metric))
        for _, path in found[ckpt.keep_best_checkpoints:]:
            _remove_checkpoint(path)


def _remove_checkpoint(path: str) -> None:
    """Remove a checkpoint file, or a sharded checkpoint's directory; for ``NAME.pt`` also the
    ``NAME.safetensors`` of its pair (after it: a kill between leaves weights no .pt names, which
    the next pruning removes, never a .pt without its weights)."""
    sharded.remove_path(path)
    if path.endswith(".pt"):
        partner = weights_path(path)
        if os.path.lexists(partner) and not os.path.isdir(partner):
            os.remove(partner)
