"""When checkpoints are written, under which names, and which old ones are pruned.

Every save writes ``checkpoint_last.pt`` first and gives the file its other names as hard links
(copies where links are impossible), so ``checkpoint_last.pt`` is never older than another
complete checkpoint. ``checkpoint.write_checkpoints_asynchronously`` hands the write to one
background thread (:class:`_BackgroundWrites`).

With ``checkpoint.save_format=safetensors`` each name is a pair, ``NAME.pt`` and
``NAME.safetensors``, written, completed and removed by :mod:`fairseq.checkpoint.pair`.
"""
import hashlib
import io
import logging
import os
import re
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from omegaconf import DictConfig

from fairseq.checkpoint import sharded
from fairseq.checkpoint.fairseq_layout import to_fairseq_layout, to_fairseq_weights
from fairseq.checkpoint.files import atomic_link, remove_path, torch_save_checkpoint
from fairseq.checkpoint.integrity import with_integrity
from fairseq.checkpoint.pair import (  # noqa: F401 -- save_pair: its documented path is this module
    WEIGHTS_KEY, WEIGHTS_SUFFIX, import_safetensors, remove_checkpoint, remove_stale_weights, safetensors_metadata,
    save_pair, split_model_state, tidy_pairs, weights_path, write_pair,
)
from fairseq.checkpoint.state import CHECKPOINT_VERSION, get_rng_state, is_full_config, plain_config
from fairseq.checkpoint.task_state import add_task_state
from fairseq.file_io import atomic_write
from fairseq.distributed import fully_sharded
from fairseq.distributed_utils import get_world_size, is_master
from fairseq.errors import ConfigError, ResourceError

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
    full = cfg if is_full_config(cfg) else trainer.cfg
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
    # optional: a trainer of fairseq's protocol (save_checkpoint's public signature) has no such flag
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
    if ckpt.no_save_optimizer_state:
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
    # optional: a trainer of fairseq's protocol may have no task
    add_task_state(snapshot, getattr(trainer, "task", None))
    save_dir = ckpt.save_dir
    first = os.path.join(save_dir, names[0])
    save_format = str(ckpt.save_format or "pt")
    if not as_dirs:  # the entries fairseq 0.12.2 reads (a sharded directory is none of its)
        snapshot = to_fairseq_layout(snapshot)
        if save_format == "pt":  # its weights' key names (in place of ours: the file is no bigger)
            to_fairseq_weights(snapshot, getattr(trainer, "unwrapped_model", None))
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
            remove_path(first)
        atomic_write(first, save)
        for name in names[1:]:  # one file, many names (a copy where links are impossible)
            atomic_link(first, os.path.join(save_dir, name))
        # weights of a safetensors pair these names had (save_format changed): no longer theirs
        remove_stale_weights(save_dir, names)
        logger.info(done)
        prune_checkpoints(save_dir, ckpt)

    save_run_config(cfg, save_dir)
    if ckpt.write_checkpoints_asynchronously:
        # serialized now (training goes on changing the weights), written by a thread
        data = io.BytesIO()
        torch.save(snapshot, data)
        _background_writes.submit(lambda: write(lambda f: f.write(data.getbuffer())))
    else:
        wait_for_checkpoint_writes()
        write(lambda f: torch_save_checkpoint(snapshot, f, save_dir, first))


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
        prune_checkpoints(save_dir, ckpt)

    save_run_config(cfg, save_dir)
    if ckpt.write_checkpoints_asynchronously:
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
            write_pair(first, write_weights, lambda f, _sha, _size: f.write(buffer.getbuffer()))
            finish()

        _background_writes.submit(job)
        return
    wait_for_checkpoint_writes()

    def save_weights(path: str) -> None:
        st.save_file(tensors, path, metadata=metadata)

    write_pair(first, save_weights, lambda f, sha, size: torch_save_checkpoint(state_with(sha, size), f, save_dir, first))
    finish()


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
    trainer.save_sharded(first, extra, with_optimizer=not ckpt.no_save_optimizer_state)
    if not is_master():
        return
    for name in names[1:]:
        sharded.link_dir(first, os.path.join(ckpt.save_dir, name))
    save_run_config(cfg, ckpt.save_dir)
    logger.info("saved %s (sharded, epoch %d @ %d updates%s)", ", ".join(names), extra["extra_state"]["epoch"],
                trainer.get_num_updates(),
                f", valid {ckpt.best_checkpoint_metric} {val_loss:.3f}" if val_loss is not None else "")
    prune_checkpoints(ckpt.save_dir, ckpt)


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


def prune_checkpoints(save_dir: str, ckpt: Any) -> None:
    """Remove old interval/epoch checkpoints beyond ``keep_interval_updates``/``keep_last_epochs``
    (and ``keep_best_checkpoints``) of ``ckpt`` (the ``checkpoint`` config node); a safetensors
    pair goes as a whole, its ``.pt`` first. Interrupted pair saves are finished first."""
    tidy_pairs(save_dir)

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
            remove_checkpoint(path)
    if ckpt.keep_last_epochs > 0:
        for _, path in matching(r"checkpoint(\d+)")[ckpt.keep_last_epochs:]:
            remove_checkpoint(path)
    if ckpt.keep_best_checkpoints > 0:
        metric = re.escape(str(ckpt.best_checkpoint_metric))
        found = matching(rf"checkpoint\.best_{metric}_(-?[\d.]+(?:e-?\d+)?)", float)
        found.sort(key=lambda item: item[0], reverse=bool(ckpt.maximize_best_checkpoint_metric))
        for _, path in found[ckpt.keep_best_checkpoints:]:
            remove_checkpoint(path)


