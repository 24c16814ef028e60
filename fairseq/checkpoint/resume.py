"""Resuming a run: start-up cleanup of a save killed midway, the names it did not give, the
trainer restored from ``checkpoint.restore_file`` (or ``finetune_from_model``) and the data
position rescaled when the number of processes changed."""
import ast
import logging
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig

from fairseq.checkpoint import sharded
from fairseq.checkpoint.files import atomic_link, temp_writer_pid, writer_gone
from fairseq.checkpoint.loading import load_checkpoint_to_cpu
from fairseq.checkpoint.pair import remove_checkpoint
from fairseq.checkpoint.saving import prune_checkpoints, save_checkpoint
from fairseq.checkpoint.state import is_full_config, set_rng_state
from fairseq.checkpoint.task_state import restore_task_state
from fairseq.distributed_utils import get_world_size, is_master
from fairseq.errors import CheckpointError, CheckpointNotFoundError
from fairseq.file_io import PathManager

logger = logging.getLogger("fairseq.checkpoint_utils")  # the name fairseq logs checkpoints under


def remove_partial_writes(save_dir: str) -> None:
    """Delete the temporaries left by a save that was killed midway (never a real checkpoint).

    Only what the writers themselves create is touched: a regular file (or a sharded save's
    directory) named ``.tmp_<checkpoint name>.<pid>.<random>`` whose writer ``<pid>`` is dead
    (:func:`~fairseq.checkpoint.files.temp_writer_pid`); a user's ``.tmp_checkpoint_notes`` stays.
    Training calls it holding the save_dir lock (:mod:`fairseq.save_dir_lock`), so no other run
    writes there; a temporary whose writer is alive is kept all the same, and named.
    """
    if not is_master() or not os.path.isdir(save_dir):
        return
    for name in sorted(os.listdir(save_dir)):
        pid = temp_writer_pid(save_dir, name)
        if pid is None:
            continue
        if not writer_gone(pid):
            logger.warning("kept %s: process %s, which writes it, is alive", name, pid)
            continue
        remove_checkpoint(os.path.join(save_dir, name))
        logger.warning("removed %s, left by a save that was interrupted", name)
    sharded.recover_old_dirs(save_dir)


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
        done = [n for n in names if not sharded.same_dir(path, os.path.join(save_dir, n))]
        for name in done:
            sharded.link_dir(path, os.path.join(save_dir, name))
    else:
        done = _restore_file_names(path, save_dir, names)
    if done:
        logger.warning("completed the save that was interrupted: %s now %s %s", ", ".join(done),
                       "is" if len(done) == 1 else "are", os.path.basename(path))
        if ckpt is not None:
            prune_checkpoints(save_dir, ckpt)
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
    if is_full_config(cfg):
        return _load_run_checkpoint(cfg, trainer)
    return _load_checkpoint_fairseq_protocol(cfg, trainer, **passthrough_args)


def _load_checkpoint_fairseq_protocol(cfg: Any, trainer: Any, **passthrough_args: Any):
    reset_optimizer = bool(cfg.reset_optimizer)
    reset_lr_scheduler = bool(cfg.reset_lr_scheduler)
    reset_meters = bool(cfg.reset_meters)
    reset_dataloader = bool(cfg.reset_dataloader)
    try:
        # fairseq's own checkpoint node declares optimizer_overrides (and continue_once, below);
        # optional: this package's schema does not (it has no such flags)
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
    suffix = getattr(trainer, "checkpoint_suffix", "") or ""  # optional: fairseq's trainers have it, ours not
    if cfg.restore_file == "checkpoint_last.pt":
        path = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
        first_launch = not PathManager.exists(path)
        # optional: continue_once exists only in fairseq's own checkpoint node (see above)
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
        # as fairseq does: the task's entry of extra_state, under its class name
        restore_task_state({"extra_state": extra_state}, getattr(trainer, "task", None))
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
        restore_task_state(state, trainer.task)
        logger.info("loaded checkpoint %s (epoch %s @ %d updates)", path,
                    extra_state.get("epoch"), trainer.get_num_updates())
        if cfg.checkpoint.reset_meters:
            extra_state.pop("train_wall", None)
    elif os.path.isdir(path):
        extra_state = _load_sharded_checkpoint(cfg, trainer, path)
    elif explicit:
        raise CheckpointNotFoundError(f"checkpoint.restore_file={cfg.checkpoint.restore_file!r}: {path} does not exist; "
                                      "give an existing checkpoint, or leave --restore-file out to start (or resume) "
                                      "from the save_dir")
    elif finetune:
        state = load_checkpoint_to_cpu(finetune)
        trainer.load_model_weights(state["model"], finetune)
        logger.info("fine-tuning from the weights of %s (optimizer, schedule and data start fresh)", finetune)
    else:
        logger.info("no checkpoint found at %s: starting from scratch", path)

    if extra_state and not cfg.checkpoint.reset_dataloader:
        itr_state = reshard_data_position(extra_state)
        epoch_itr = trainer.get_train_iterator(epoch=itr_state["epoch"])
        epoch_itr.load_state_dict(itr_state)
    else:
        epoch_itr = trainer.get_train_iterator(epoch=1)
    if extra_state.get("rng") is not None:
        set_rng_state(extra_state["rng"])
    return extra_state, epoch_itr


def _load_sharded_checkpoint(cfg: DictConfig, trainer: Any, path: str) -> Dict[str, Any]:
    """Restore the trainer from the DCP directory ``path`` (any number of processes wrote it);
    return its extra state."""
    try:
        meta = sharded.read_extra(path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    trainer.load_sharded(path, meta, reset_optimizer=cfg.checkpoint.reset_optimizer,
                         reset_lr_scheduler=cfg.checkpoint.reset_lr_scheduler)
    extra_state = meta.get("extra_state", {}) or {}
    restore_task_state(meta, trainer.task)
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

