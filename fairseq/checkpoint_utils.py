"""Saving (atomic) and loading (weights-only) checkpoints.

A checkpoint is a dict of tensors and plain containers only:

* ``cfg``: the full resolved run config (plain dicts, enums as strings);
* ``model``, ``optimizer``, ``lr_scheduler``, ``num_updates`` (the trainer's state);
* ``extra_state``: epoch, data-iterator position, best validation metric, RNG states.

It is written to a temporary file in the same directory, fsynced and renamed, so a kill during a
save leaves the previous checkpoint intact; it is read with ``torch.load(weights_only=True)``,
so loading never runs code from the file.
"""
import logging
import os
import random
import re
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit; the message says which and why."""


def _atomic_write(path: str, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``: readers see the old file or the complete new one, never a partial write."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
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


def save_checkpoint(cfg: DictConfig, trainer: Any, epoch_itr: Any, val_loss: Optional[float],
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
    from fairseq.distributed_utils import is_master

    ckpt = cfg.checkpoint
    if ckpt.no_save or not is_master():
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
        names.append("checkpoint_last.pt")
    if not names:
        return

    snapshot = trainer.state_dict()
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
    }
    save_dir = ckpt.save_dir
    first = os.path.join(save_dir, names[0])
    atomic_save(snapshot, first)
    for name in names[1:]:
        atomic_copy(first, os.path.join(save_dir, name))
    logger.info("saved %s (epoch %d @ %d updates%s)", ", ".join(names), epoch, updates,
                f", valid {ckpt.best_checkpoint_metric} {val_loss:.3f}" if val_loss is not None else "")
    _prune(save_dir, ckpt)


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
            os.remove(path)
    if ckpt.keep_last_epochs > 0:
        for _, path in matching(r"checkpoint(\d+)\.pt")[ckpt.keep_last_epochs:]:
            os.remove(path)
    if ckpt.keep_best_checkpoints > 0:
        metric = re.escape(str(ckpt.best_checkpoint_metric))
        found = []
        for name in os.listdir(save_dir):
            m = re.fullmatch(rf"checkpoint\.best_{metric}_(-?[\d.]+(?:e-?\d+)?)\.pt", name)
            if m:
                found.append((float(m.group(1)), os.path.join(save_dir, name)))
        found.sort(reverse=bool(ckpt.maximize_best_checkpoint_metric))
        for _, path in found[ckpt.keep_best_checkpoints:]:
            os.remove(path)


# -- loading -----------------------------------------------------------------------------------
def load_checkpoint_to_cpu(path: str) -> Dict[str, Any]:
    """Read a checkpoint safely (weights only) onto the CPU.

    Raises:
        CheckpointError: the file is missing, truncated, or holds anything but tensors and
            plain containers.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any unpickling failure becomes one clear message
        raise CheckpointError(
            f"cannot load checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}. "
            "It is truncated, corrupt, or holds objects other than tensors and plain containers "
            "(refused: loading it could run code)") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    return state


def remove_partial_writes(save_dir: str) -> None:
    """Delete temporary files left by a save that was killed midway (never a real checkpoint)."""
    from fairseq.distributed_utils import is_master

    if not is_master() or not os.path.isdir(save_dir):
        return
    for name in os.listdir(save_dir):
        if name.startswith(".tmp_checkpoint"):
            os.remove(os.path.join(save_dir, name))
            logger.warning("removed %s, left by a save that was interrupted", name)


def checkpoint_path_to_restore(cfg: DictConfig) -> str:
    restore = cfg.checkpoint.restore_file
    if os.path.isabs(restore) or os.path.dirname(restore):
        return restore
    return os.path.join(cfg.checkpoint.save_dir, restore)


def load_checkpoint(cfg: DictConfig, trainer: Any) -> Tuple[Dict[str, Any], Any]:
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
    elif explicit:
        raise CheckpointError(f"checkpoint.restore_file={cfg.checkpoint.restore_file!r}: {path} does not exist")
    elif finetune:
        state = load_checkpoint_to_cpu(finetune)
        trainer.load_model_weights(state["model"], finetune)
        logger.info("fine-tuning from the weights of %s (optimizer, schedule and data start fresh)", finetune)
    else:
        logger.info("no checkpoint found at %s: starting from scratch", path)

    if extra_state and not cfg.checkpoint.reset_dataloader:
        itr_state = extra_state["train_iterator"]
        epoch_itr = get_train_iterator(cfg, trainer.task, epoch=itr_state["epoch"])
        epoch_itr.load_state_dict(itr_state)
    else:
        epoch_itr = get_train_iterator(cfg, trainer.task, epoch=1)
    if extra_state.get("rng") is not None:
        set_rng_state(extra_state["rng"])
    return extra_state, epoch_itr


def load_model_for_inference(path: str, overrides: Optional[Dict[str, Any]] = None,
                             data: Optional[str] = None):
    """Rebuild the task and model a checkpoint was trained with, weights loaded, in eval mode.

    Args:
        path: the checkpoint file.
        overrides: values set on every config node that has the key (eval-time settings
            such as ``tokens_per_sample`` win over the checkpoint's).
        data: a data directory replacing the checkpoint's ``task.data``.

    Returns:
        ``(model, task, cfg)``.
    """
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.utils import overwrite_args_by_name

    from fairseq.dataclass.initialize import import_user_module

    state = load_checkpoint_to_cpu(path)
    saved = state["cfg"]
    user_dir = (saved.get("common") or {}).get("user_dir")
    if user_dir and os.path.isdir(user_dir):
        import_user_module(user_dir)  # the checkpoint's components may come from a plugin
    cfg = compose_config([f"{g}={saved[g]['_name']}" for g in ("task", "model", "criterion",
                                                                   "optimizer", "lr_scheduler")
                          if isinstance(saved.get(g), dict) and saved[g].get("_name")])
    cfg = upgrade_config(cfg, saved)
    if data is not None:
        cfg.task.data = data
    if overrides:
        overwrite_args_by_name(cfg, overrides)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path} does not fit the model built from its own config: {str(e).splitlines()[0]} "
            f"(is task.data's dict.txt the one it was trained with? {len(task.source_dictionary)} "
            "types now)") from e
    model.eval()
    return model, task, cfg


def upgrade_config(cfg: DictConfig, saved: Dict[str, Any]) -> DictConfig:
    """Merge a saved plain config into the current schema ``cfg``.

    Keys the current code lacks are dropped with a warning; keys the checkpoint lacks keep the
    current defaults.
    """
    dropped: List[str] = []

    def merge(node: DictConfig, values: Dict[str, Any], prefix: str) -> None:
        for key, value in values.items():
            if key not in node.keys():
                dropped.append(prefix + key)
                continue
            if isinstance(value, dict) and isinstance(node[key], DictConfig):
                merge(node[key], value, f"{prefix}{key}.")
            else:
                node[key] = value

    merge(cfg, saved, "")
    if dropped:
        logger.warning("checkpoint config keys unknown to this version were ignored: %s",
                       ", ".join(dropped))
    return cfg
