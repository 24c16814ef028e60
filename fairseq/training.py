"""The training loop both front doors run: epochs, logging, validation and checkpoints.

``run_training(cfg)`` takes the one resolved :class:`~fairseq.dataclass.configs.FairseqConfig`
(a DictConfig), whichever door built it.
"""
import itertools
import logging
import math
import os
import random
import signal
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fairseq import checkpoint_utils, distributed_utils, tasks
from fairseq.cpu_threads import local_processes, set_cpu_threads
from fairseq.logging import metrics
from fairseq.logging import progress_bar as pb
from fairseq.logging.meters import StopwatchMeter
from fairseq.logging.writers import MetricWriters
from fairseq.registry import legacy_flag
from fairseq.trainer import Trainer, get_train_iterator  # noqa: F401 -- also imported from here
from fairseq.training_state import (  # noqa: F401 -- also imported from here
    InterruptRequest, TrainingInterrupted, TrainingState, ValidationStopped, interrupt_message, stop_on_interrupt,
    stop_requested)

logger = logging.getLogger("fairseq.train")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# what every record derives from rather than shows as a metric of its own
_BOOKKEEPING = {"loss", "nll_loss", "ppl", "ntokens", "nsentences", "sample_size"}


def reduce_stats(task: Any, criterion: Any, logging_outputs: List[Dict[str, Any]]) -> Dict[str, float]:
    """The task's metrics over logging outputs summed across all processes.

    A criterion may return its metrics from ``reduce_metrics`` (this package's criterions), or
    log them there with ``fairseq.metrics.log_scalar`` / ``log_derived`` and return nothing, as
    fairseq's do: both reach the stats, and the logged ones the records (:func:`metric_stats`).
    """
    merged = distributed_utils.sum_logging_outputs(logging_outputs)
    if not merged:
        return {}
    with metrics.aggregate(new_root=True) as logged:
        returned = task.reduce_metrics([merged], criterion)
    stats: Dict[str, float] = {}
    for key, value in logged.get_smoothed_values().items():
        stats[key] = float(value.item() if torch.is_tensor(value) else value)
    if returned:
        stats.update(returned)
    for key in ("ntokens", "nsentences", "sample_size"):  # a criterion that logs only its loss
        if key not in stats and key in merged:
            value = merged[key]
            stats[key] = float(value.item() if torch.is_tensor(value) else value)
    return stats


def metric_stats(stats: Dict[str, float]) -> Dict[str, float]:
    """``loss`` (and ``nll_loss`` when it differs by construction) and ``ppl``, rounded as fairseq.

    As fairseq's criterions do, ``nll_loss`` is shown only when the loss is not averaged over
    target tokens (``sample_size != ntokens``: sentence averaging, label smoothing).
    """
    out: Dict[str, float] = {}
    if "loss" in stats:
        out["loss"] = round(stats["loss"], 3)
    if "nll_loss" in stats and stats.get("sample_size") != stats.get("ntokens"):
        out["nll_loss"] = round(stats["nll_loss"], 3)
    if "ppl" in stats:
        out["ppl"] = round(stats["ppl"], 2) if math.isfinite(stats["ppl"]) else stats["ppl"]
    for key, value in stats.items():  # metrics a criterion logged itself (metrics.log_scalar)
        if key not in _BOOKKEEPING and not key.startswith("_"):
            out[key] = value
    return out


class IntervalStats:
    """Collects per-update outputs (device tensors) and reduces them once per log interval."""

    def __init__(self, train_wall: Optional[StopwatchMeter] = None) -> None:
        self.train_wall = train_wall
        self.reset()

    def reset(self) -> None:
        self.logging_outputs: List[Dict[str, Any]] = []
        self.gnorms: List[torch.Tensor] = []
        self.updates = 0
        self.start = time.perf_counter()
        self.train_wall_at_start = self.train_wall.elapsed_time if self.train_wall is not None else 0.0
        self.last_lr = 0.0
        self.loss_scale = None

    def add(self, step_output: Dict[str, Any]) -> None:
        self.logging_outputs.extend(step_output["logging_outputs"])
        self.gnorms.append(step_output["gnorm"])
        self.updates += 1
        self.last_lr = step_output["lr"]
        self.loss_scale = step_output.get("loss_scale")

    def reduce(self, task: Any, criterion: Any, num_updates: int, start_time: float,
               clip_norm: float = 0.0) -> Dict[str, Any]:
        """fairseq's record, in its order: ``loss, [nll_loss,] ppl, wps, ups, wpb, bsz,
        num_updates, lr, gnorm, [clip,] [loss_scale,] train_wall, [gb_free,] wall``."""
        stats = reduce_stats(task, criterion, self.logging_outputs)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        updates = max(self.updates, 1)
        out: Dict[str, Any] = metric_stats(stats)
        ntokens = stats.get("ntokens", 0.0)
        out["wps"] = round(ntokens / elapsed, 1)
        out["ups"] = round(self.updates / elapsed, 2)
        out["wpb"] = round(ntokens / updates, 1)
        out["bsz"] = round(stats.get("nsentences", 0) / updates, 1)
        out["num_updates"] = num_updates
        out["lr"] = self.last_lr
        if self.gnorms:
            gnorms = torch.stack(self.gnorms).float()
            out["gnorm"] = round(float(gnorms.mean().item()), 3)
            if clip_norm > 0:
                out["clip"] = round(100.0 * float((gnorms > clip_norm).float().mean().item()), 1)
        if self.loss_scale is not None:
            out["loss_scale"] = round(float(self.loss_scale), 4)
        wall_now = self.train_wall.elapsed_time if self.train_wall is not None else 0.0
        out["train_wall"] = round(wall_now - self.train_wall_at_start, 0)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["gb_free"] = round(torch.cuda.mem_get_info()[0] / 1024 ** 3, 1)
        out["wall"] = round(time.perf_counter() - start_time, 0)
        return out


def valid_subsets(cfg: DictConfig) -> List[str]:
    """The subsets ``dataset.valid_subset`` names (comma-separated), in order."""
    return [s.strip() for s in str(cfg.dataset.valid_subset).split(",") if s.strip()]


def valid_iterator(cfg: DictConfig, task: Any, subset: str) -> Any:
    """The batches of validation subset ``subset`` (an epoch iterator, not started).

    With ``dataset.skip_invalid_size_inputs_valid_test`` the samples longer than the task's
    positions, or than ``dataset.max_tokens_valid`` lets a batch hold, are skipped with a warning.

    Raises:
        SampleTooLargeError: without that flag, for a sample no batch can hold (the message
            names the sample, its size and the settings that fix it).
    """
    from fairseq.data.data_utils import name_batch_limits, positions_within_batch

    skip = bool(cfg.dataset.skip_invalid_size_inputs_valid_test)
    max_tokens = cfg.dataset.max_tokens_valid
    positions = positions_within_batch(task.max_positions(), max_tokens) if skip else task.max_positions()
    # max_tokens_valid follows max_tokens unless given: then the message names the flag given
    key = "dataset.max_tokens" if max_tokens == cfg.dataset.max_tokens else "dataset.max_tokens_valid"
    # optional: a task other than language_modeling (a plugin's) may have no tokens_per_sample
    with name_batch_limits(subset, cfg.task.data, key, cfg.task.get("tokens_per_sample"), skip):
        return task.get_batch_iterator(
            task.dataset(subset),
            max_tokens=max_tokens,
            max_sentences=cfg.dataset.batch_size_valid,
            max_positions=positions,
            ignore_invalid_inputs=skip,
            required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
            seed=cfg.common.seed,
            num_shards=cfg.distributed_training.distributed_world_size,
            shard_id=cfg.distributed_training.distributed_rank,
            num_workers=cfg.dataset.num_workers,
            epoch=1,
        )


def validate(cfg: DictConfig, trainer: Trainer, task: Any, epoch: int, subsets: List[str],
             writers: Optional[MetricWriters] = None, best: Optional[float] = None,
             interrupt: Optional[InterruptRequest] = None) -> List[Optional[float]]:
    """Validate on each subset; return the ``best_checkpoint_metric`` of each.

    Each subset's record (``valid``, ``valid1``, ...) carries ``loss``, ``ppl``, ``wps``,
    ``wpb``, ``bsz`` and ``num_updates``; the first one also ``best_<metric>`` once a best
    value exists (``best`` before this validation), as in fairseq.
    ``dataset.max_valid_steps`` (``--nval``) caps the batches of each subset (fairseq 0.12
    evaluates one more than it asks for; this evaluates exactly that many).

    Raises:
        ValidationStopped: ``interrupt`` was requested (a stop signal) before the last batch;
            the pass stops between two batches and logs no record.
    """
    values: List[Optional[float]] = []
    metric = cfg.checkpoint.best_checkpoint_metric
    max_steps = cfg.dataset.max_valid_steps
    for index, subset in enumerate(subsets):
        logger.info('begin validation on "%s" subset', subset)
        itr = valid_iterator(cfg, task, subset).next_epoch_itr(shuffle=False)
        total = len(itr) if max_steps is None else min(int(max_steps), len(itr))  # the steps it will take
        progress = pb.progress_bar(itr, log_format=cfg.common.log_format, log_interval=cfg.common.log_interval,
                                   log_seconds=cfg.common.log_seconds, total=total,
                                   epoch=epoch, prefix=f"valid on '{subset}' subset",
                                   no_progress_bar=cfg.common.no_progress_bar)
        start = time.perf_counter()
        logs = valid_steps(trainer, progress, max_steps, interrupt and (lambda: interrupt.requested))
        batches = len(logs)
        progress.close()
        if interrupt is not None and interrupt.requested and itr.n < total:
            logger.info('validation on "%s" stopped after %d of %d batches: its loss is not used', subset, itr.n, total)
            raise ValidationStopped(subset)
        elapsed = max(time.perf_counter() - start, 1e-9)
        # every process counts its own batches; the record shows this one's averages
        stats = reduce_stats(task, trainer.criterion, logs)
        value = stats.get(metric)
        if stats and value is None:
            raise KeyError(f"checkpoint.best_checkpoint_metric={metric!r} is not a validation "
                           f"metric; choose one of {sorted(stats)}")
        shown: Dict[str, Any] = metric_stats(stats)
        ntokens = stats.get("ntokens", 0.0)
        shown["wps"] = round(ntokens / elapsed, 1)
        shown["wpb"] = round(ntokens / max(batches, 1), 1)
        shown["bsz"] = round(stats.get("nsentences", 0) / max(batches, 1), 1)
        shown["num_updates"] = trainer.get_num_updates()
        if index == 0 and best is not None and value is not None:
            pick = max if cfg.checkpoint.maximize_best_checkpoint_metric else min
            shown[f"best_{metric}"] = round(pick(best, value), 3)
        if distributed_utils.is_master():
            progress.print(shown, tag=subset, step=trainer.get_num_updates())
            if writers is not None:
                writers.log(subset, shown, trainer.get_num_updates())
        values.append(value)
    return values


def valid_steps(trainer: Trainer, batches: Any, max_steps: Optional[int] = None,
                stop: Optional[Callable[[], bool]] = None) -> List[Dict[str, Any]]:
    """The logging outputs of ``trainer.valid_step`` over ``batches`` (at most ``max_steps``;
    empty batches give none): the one validation loop, of training and of ``fairseq-validate``,
    so both compute in the run's precision on its device. ``stop()`` is asked after each batch:
    True ends the loop there (a stop signal during training's validation)."""
    logs = []
    for step, sample in enumerate(batches):
        if max_steps is not None and step >= max_steps:
            break
        log = trainer.valid_step(sample)
        if log is not None:
            logs.append(log)
        if stop is not None and stop():
            break
    return logs


def _check_finite(stats: Dict[str, float], num_updates: int) -> None:
    loss = stats.get("loss")
    if loss is not None and not math.isfinite(loss):
        raise FloatingPointError(
            f"the training loss became {loss} by update {num_updates}; stopping without saving, "
            "so the last checkpoint stays the last good one. Lower optimization.lr, set "
            "optimization.clip_norm, or check the data.")


def train_epoch(cfg: DictConfig, trainer: Trainer, task: Any, epoch_itr: Any,
                state: TrainingState) -> Tuple[List[Optional[float]], bool]:
    """Train one epoch (or until a stop condition); return (valid losses, should_stop)."""
    from fairseq.data.iterators import GroupedIterator

    epoch = epoch_itr.next_epoch_idx
    update_freqs = list(cfg.optimization.update_freq)
    update_freq = update_freqs[min(epoch, len(update_freqs)) - 1]
    itr = epoch_itr.next_epoch_itr(shuffle=True)
    grouped = GroupedIterator(itr, update_freq)
    progress = pb.progress_bar(grouped, log_format=cfg.common.log_format,
                               log_interval=cfg.common.log_interval, epoch=epoch_itr.epoch,
                               log_seconds=cfg.common.log_seconds,
                               no_progress_bar=cfg.common.no_progress_bar)
    trainer.lr_step_begin_epoch(epoch_itr.epoch)
    log_interval = max(int(cfg.common.log_interval), 1)
    max_update = cfg.optimization.max_update or math.inf
    stop_seconds = float(cfg.optimization.stop_time_hours) * 3600 or math.inf
    subsets = valid_subsets(cfg)
    train_wall = state.train_wall
    interval, epoch_stats = IntervalStats(train_wall), IntervalStats(train_wall)
    clip_norm = float(cfg.optimization.clip_norm or 0.0)
    writers = state.writers
    master = distributed_utils.is_master()
    valid_losses: List[Optional[float]] = [None]
    should_stop = False
    for samples in progress:
        train_wall.start()
        out = trainer.train_step(samples)
        train_wall.stop()
        if out["overflow"]:
            continue
        interval.add(out)
        epoch_stats.add(out)
        num_updates = trainer.get_num_updates()
        if num_updates % log_interval == 0:
            stats = interval.reduce(task, trainer.criterion, num_updates, state.start_time, clip_norm)
            _check_finite(stats, num_updates)
            if master:
                progress.log(stats, tag="train_inner", step=num_updates)
                writers.log("train_inner", stats, num_updates)
            interval.reset()
        end_of_epoch = not grouped.has_next()
        if stop_requested(state):
            stop_on_interrupt(cfg, trainer, epoch_itr, end_of_epoch, state)
            should_stop = True
            break
        reason = None
        if num_updates >= max_update:
            reason = f"reached optimization.max_update={cfg.optimization.max_update}"
        elif train_wall.elapsed_time >= stop_seconds:
            reason = f"trained for optimization.stop_time_hours={cfg.optimization.stop_time_hours}"
        valid_losses, patience_stop = validate_and_save(
            cfg, trainer, task, epoch_itr, subsets, end_of_epoch, reason is not None, state, epoch_stats)
        if stop_requested(state):  # it came during the validation (then nothing was saved) or the save
            stop_on_interrupt(cfg, trainer, epoch_itr, end_of_epoch, state)
            should_stop = True
            break
        if patience_stop and reason is None:
            reason = (f"no improvement of valid {cfg.checkpoint.best_checkpoint_metric} in "
                      f"checkpoint.patience={cfg.checkpoint.patience} validations")
        if reason is not None:
            logger.info("stopping: %s", reason)
            should_stop = True
            break
    if epoch_stats.updates and not state.interrupted:  # after a stop, only what finished is logged
        logger.info("end of epoch %d (average epoch stats below)", epoch_itr.epoch)
        stats = epoch_stats.reduce(task, trainer.criterion, trainer.get_num_updates(), state.start_time,
                                   clip_norm)
        if master:
            progress.print(stats, tag="train", step=trainer.get_num_updates())
            writers.log("train", stats, trainer.get_num_updates())
    progress.close()
    return valid_losses, should_stop


def validate_and_save(cfg: DictConfig, trainer: Trainer, task: Any, epoch_itr: Any, subsets: List[str],
                      end_of_epoch: bool, stopping: bool, state: TrainingState,
                      epoch_stats: IntervalStats) -> Tuple[List[Optional[float]], bool]:
    """Validate and save when due; return (valid metrics, whether patience ran out)."""
    num_updates = trainer.get_num_updates()
    epoch = epoch_itr.epoch
    ds, ck = cfg.dataset, cfg.checkpoint
    do_save = (end_of_epoch and epoch % ck.save_interval == 0) or stopping or (
        ck.save_interval_updates > 0 and num_updates % ck.save_interval_updates == 0)
    do_validate = not ds.disable_validation and (
        (end_of_epoch and epoch % ds.validate_interval == 0) or stopping or do_save
        or (ds.validate_interval_updates > 0 and num_updates % ds.validate_interval_updates == 0))
    valid_losses: List[Optional[float]] = [None]
    if (do_save or do_validate) and epoch_stats.logging_outputs:
        # never save after a non-finite loss: the last checkpoint must stay a good one
        _check_finite(reduce_stats(task, trainer.criterion, epoch_stats.logging_outputs[-1:]), num_updates)
    improved = False
    if do_validate:
        try:
            valid_losses = validate(cfg, trainer, task, epoch, subsets, state.writers, state.best, state.interrupt)
        except ValidationStopped:
            # a partial pass says nothing of best or patience, and a save here would record it
            return [None], False
        value = valid_losses[0]
        if value is not None:
            improved = checkpoint_utils.is_better(value, state.best, cfg)
            if improved:
                state.best = value
                state.num_bad_validations = 0
            else:
                state.num_bad_validations += 1
    if do_save:
        checkpoint_utils.save_checkpoint(cfg, trainer, epoch_itr, valid_losses[0], end_of_epoch,
                                         state, improved)
        if not ck.no_save and not ck.no_last_checkpoints:
            state.last_checkpoint = (os.path.join(ck.save_dir, "checkpoint_last.pt"), num_updates)
    patience = int(ck.patience)
    return valid_losses, patience > 0 and state.num_bad_validations >= patience


REQUIRED_COMPONENTS = {"model": (legacy_flag("model"), "transformer_lm"),
                       "optimizer": (legacy_flag("optimizer"), "adam")}


def require_components(cfg: DictConfig) -> None:
    """Stop with one line when no model or optimizer is chosen.

    ``fairseq-train``, like fairseq 0.12, has no default ``--arch`` or ``--optimizer``; the
    Hydra door picks both in ``config/config.yaml``, so only a deleted group (``~optimizer``)
    gets here.

    Raises:
        ConfigError: naming the flag, the Hydra key and an example.
    """
    from fairseq.errors import ConfigError

    for group, (flag, example) in REQUIRED_COMPONENTS.items():
        # optional: this is the check that the group was chosen at all
        if cfg.get(group) is None:
            raise ConfigError(f"{group}: none chosen, and training needs one; give {flag} NAME to "
                              f"fairseq-train (e.g. {flag} {example}; it has no default, as in fairseq) "
                              f"or {group}=NAME to fairseq-hydra-train")


def load_valid_datasets(cfg: DictConfig, task: Any) -> None:
    """Load the validation subsets, after checking that none in the data directory is ignored.

    With ``dataset.combine_valid_subsets`` the splits ``valid``, ``valid1``, ``valid2``, ... are
    loaded as one ``valid`` subset (fairseq's ``--combine-val``); otherwise each subset named in
    ``dataset.valid_subset`` is loaded on its own.

    Raises:
        ConfigError: a ``valid1``-like split in the data directory would be silently ignored.
    """
    from fairseq.data.data_utils import raise_if_valid_subsets_unintentionally_ignored

    raise_if_valid_subsets_unintentionally_ignored(cfg)
    if cfg.dataset.disable_validation:
        return
    if cfg.dataset.combine_valid_subsets:
        load_combined_split(task, "valid")
        return
    for subset in valid_subsets(cfg):
        task.load_dataset(subset, epoch=1, combine=False)


def load_combined_split(task: Any, split: str) -> None:
    """Load ``split``, ``split1``, ``split2``, ... (up to the first missing one) as ``split``."""
    from fairseq.data.concat_dataset import ConcatDataset

    parts = []
    for k in itertools.count():
        name = split if k == 0 else f"{split}{k}"
        try:
            task.load_dataset(name, epoch=1, combine=False)
        except FileNotFoundError:
            if k == 0:
                raise
            break
        parts.append(task.datasets.pop(name))
    task.datasets[split] = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    logger.info("combined %d %s subsets: %d samples", len(parts), split, len(task.datasets[split]))


def run_training(cfg: DictConfig) -> Dict[str, Any]:
    """Train as ``cfg`` says, resuming from ``checkpoint.restore_file`` when it exists.

    Ctrl-C (SIGINT), SIGTERM or SIGHUP stops after the current update, validation batch or
    epoch (with ``checkpoint.save_on_interrupt`` saving ``checkpoint_last.pt`` there first,
    unvalidated); a second one stops at once.

    Returns:
        ``{"num_updates", "epoch", "best"}`` at the end.

    Raises:
        TrainingInterrupted: after a stop signal; its message says where the last checkpoint is.
    """
    interrupt = InterruptRequest(distributed_utils.get_world_size() == 1,
                                 bool(cfg.checkpoint.save_on_interrupt))
    state = TrainingState(interrupt=interrupt)
    try:
        with interrupt:
            result = _run_training(cfg, state)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt as e:  # a second signal, one before training, or one with many processes
        trainer = state.trainer
        signum = getattr(e, "signum", signal.SIGINT)
        raise TrainingInterrupted(interrupt_message(
            cfg, trainer.get_num_updates() if trainer is not None else None,
            state.last_checkpoint, False, signum), signum) from None
    if state.interrupted:
        raise TrainingInterrupted(interrupt_message(cfg, result["num_updates"], state.last_checkpoint,
                                                    state.saved_on_interrupt, interrupt.signum), interrupt.signum)
    return result


def write_config(cfg: DictConfig) -> Optional[str]:
    """Write the full resolved config to ``save_dir/config.json`` now (every save rewrites it);
    its path, or None when nothing is saved or it cannot be written (the run does not need it)."""
    from fairseq.checkpoint.saving import save_run_config
    from fairseq.dataclass.json_io import CONFIG_JSON

    if cfg.checkpoint.no_save:
        return None
    try:
        save_run_config(cfg, cfg.checkpoint.save_dir)
    except OSError as e:
        logger.warning("could not write the run's config to %s: %s", cfg.checkpoint.save_dir, e.strerror)
        return None
    return os.path.join(cfg.checkpoint.save_dir, CONFIG_JSON)


def run_header(cfg: DictConfig, task: Any, model: Any, config_file: Optional[str],
               threads: Optional[str] = None) -> List[str]:
    """The few lines a run starts with, instead of its full config: the task and data, the
    model and its size, the batch and the lr (and the CPU threads), where checkpoints and logs go."""
    m, d, o = cfg.model, cfg.dataset, cfg.optimization
    nparams = sum(p.numel() for p in model.parameters())
    shape = ""
    if m.get("decoder_layers") is not None and m.get("decoder_embed_dim") is not None:
        shape = (f" ({m.decoder_layers} layers x {m.decoder_embed_dim}, ffn {m.get('decoder_ffn_embed_dim')}, "
                 f"{m.get('decoder_attention_heads')} heads)")
    batch = (f"max_tokens {d.max_tokens}" if d.max_tokens else "") + \
        (" and " if d.max_tokens and d.batch_size else "") + (f"batch_size {d.batch_size}" if d.batch_size else "")
    world = int(cfg.distributed_training.distributed_world_size)
    sched = cfg.lr_scheduler._name if cfg.get("lr_scheduler") is not None else None  # optional: unchosen
    warmup = cfg.lr_scheduler.get("warmup_updates") if sched else None
    lines = [
        # optional: data and tokens_per_sample are language_modeling's; a plugin task may lack them
        f"task {cfg.task._name}: data {cfg.task.get('data')}, dictionary {len(task.source_dictionary):,} types, "
        f"tokens_per_sample {cfg.task.get('tokens_per_sample')}",
        f"model {m._name}{shape}: {nparams:,} parameters; criterion {cfg.criterion._name}",
        f"batch {batch or 'unset'} x update_freq {list(o.update_freq)} x {world} process{'es' if world > 1 else ''}; "
        f"optimizer {cfg.optimizer._name}, lr {list(o.lr)}"
        + (f" ({sched}{f', warmup {warmup} updates' if warmup else ''})" if sched else "")
        + f"; max_update {o.max_update or 'none'}, max_epoch {o.max_epoch or 'none'}"
        + (f"; {threads}" if threads else ""),
    ]
    where = "nothing saved (checkpoint.no_save)" if cfg.checkpoint.no_save else \
        f"checkpoints in {os.path.abspath(cfg.checkpoint.save_dir)}"
    extras = [f"full config {config_file}" if config_file else "",
              f"log file {cfg.common.log_file}" if cfg.common.log_file else "",
              f"tensorboard {cfg.common.tensorboard_logdir}" if cfg.common.tensorboard_logdir else ""]
    lines.append("; ".join([where] + [e for e in extras if e]))
    return lines


def _run_training(cfg: DictConfig, state: TrainingState) -> Dict[str, Any]:
    require_components(cfg)
    # the doors check the values (and the rules relating them) already; a config handed straight
    # to run_training gets the same checks, and the log paths are checked before any work
    from fairseq.dataclass.overrides import check_values

    check_values(cfg)
    if distributed_utils.is_master():
        pb.verify_log_paths(cfg.common)
    if distributed_utils.is_master():  # a save_dir that cannot be written stops before training
        checkpoint_utils.verify_checkpoint_directory(cfg.checkpoint.save_dir)
    set_seed(cfg.common.seed)
    # torchrun says how many processes share this machine; a single process has it alone
    threads = set_cpu_threads(cfg.common.cpu_threads, local_processes())
    config_file = write_config(cfg) if distributed_utils.is_master() else None
    if distributed_utils.is_master() and cfg.common.print_config:
        logger.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    task = tasks.setup_task(cfg.task)
    load_valid_datasets(cfg, task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    if distributed_utils.is_master():
        for line in run_header(cfg, task, model, config_file, threads):
            logger.info("%s", line)
    trainer = Trainer(cfg, task, model, criterion)
    state.trainer = trainer
    extra_state, epoch_itr = checkpoint_utils.load_checkpoint(cfg, trainer)
    if not cfg.dataset.disable_validation:
        # batch every validation subset once now (the training split was, just above): a sample
        # no batch can hold stops the run before its first update, not after an epoch
        for subset in valid_subsets(cfg):
            if subset in task.datasets:
                valid_iterator(cfg, task, subset)
    writers = MetricWriters(cfg.common) if distributed_utils.is_master() else MetricWriters(None)
    state.best, state.num_bad_validations = extra_state.get("best"), extra_state.get("num_bad_validations", 0)
    state.train_wall = StopwatchMeter(extra_state.get("train_wall", 0.0))
    state.start_time = time.perf_counter()
    state.writers = writers
    if extra_state and cfg.checkpoint.restore_file == "checkpoint_last.pt":
        restored = checkpoint_utils.checkpoint_path_to_restore(cfg)
        state.last_checkpoint = (restored, trainer.get_num_updates())
        if distributed_utils.is_master() and not cfg.checkpoint.no_save:
            # a run killed between the files of one save: give the file its other names now
            checkpoint_utils.restore_save_names(restored, extra_state, cfg.checkpoint)
    max_epoch = cfg.optimization.max_epoch or math.inf
    max_update = cfg.optimization.max_update or math.inf
    logger.info("training on %s x %d with max_tokens=%s, batch_size=%s, update_freq=%s", trainer.device, trainer.world_size,
                cfg.dataset.max_tokens, cfg.dataset.batch_size, list(cfg.optimization.update_freq))
    if trainer.get_num_updates() >= max_update:
        logger.info("already at update %d >= optimization.max_update=%d: nothing to do",
                    trainer.get_num_updates(), cfg.optimization.max_update)
    lr = trainer.get_lr()
    try:
        while epoch_itr.next_epoch_idx <= max_epoch and trainer.get_num_updates() < max_update:
            if stop_requested(state):  # during the setup or the work between two epochs
                stop_on_interrupt(cfg, trainer, epoch_itr, False, state)
                break
            if lr <= cfg.optimization.stop_min_lr and trainer.get_num_updates() > 0:
                logger.info("stopping: the lr %g is at or below optimization.stop_min_lr=%g", lr, cfg.optimization.stop_min_lr)
                break
            valid_losses, should_stop = train_epoch(cfg, trainer, task, epoch_itr, state)
            if should_stop:
                break
            lr = trainer.lr_step(epoch_itr.epoch, valid_losses[0])
            epoch_itr = get_train_iterator(cfg, task, epoch_itr.next_epoch_idx)
    finally:
        try:
            # a checkpoint still written in the background is complete before the run returns
            checkpoint_utils.wait_for_checkpoint_writes()
        finally:
            writers.close()
    if not state.interrupted:
        logger.info("done training: %d updates in %.1f s", trainer.get_num_updates(), time.perf_counter() - state.start_time)
    return {"num_updates": trainer.get_num_updates(), "epoch": epoch_itr.epoch, "best": state.best}
