"""The training loop both front doors run: epochs, logging, validation and checkpoints.

``run_training(cfg)`` takes the one resolved :class:`~fairseq.dataclass.configs.FairseqConfig`
(a DictConfig), whichever door built it.
"""
import logging
import math
import random
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fairseq import checkpoint_utils, distributed_utils, tasks
from fairseq.logging import progress_bar as pb
from fairseq.logging.meters import StopwatchMeter
from fairseq.logging.writers import MetricWriters
from fairseq.trainer import Trainer

logger = logging.getLogger("fairseq.train")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_train_iterator(cfg: DictConfig, task: Any, epoch: int):
    """The batch iterator of epoch ``epoch`` (its data shard is loaded when the data has several)."""
    split = cfg.dataset.train_subset
    if split not in task.datasets or ":" in str(cfg.task.data):
        task.load_dataset(split, epoch=epoch)
    dataset = task.dataset(split)
    return task.get_batch_iterator(
        dataset,
        max_tokens=cfg.dataset.max_tokens,
        max_sentences=cfg.dataset.batch_size,
        max_positions=task.max_positions(),
        ignore_invalid_inputs=True,
        required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
        seed=cfg.common.seed,
        num_shards=cfg.distributed_training.distributed_world_size,
        shard_id=cfg.distributed_training.distributed_rank,
        num_workers=cfg.dataset.num_workers,
        epoch=epoch,
    )


def reduce_stats(task: Any, criterion: Any, logging_outputs: List[Dict[str, Any]]) -> Dict[str, float]:
    """The task's metrics over logging outputs summed across all processes."""
    merged = distributed_utils.sum_logging_outputs(logging_outputs)
    return task.reduce_metrics([merged], criterion) if merged else {}


class IntervalStats:
    """Collects per-update outputs (device tensors) and reduces them once per log interval."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.logging_outputs: List[Dict[str, Any]] = []
        self.gnorms: List[torch.Tensor] = []
        self.updates = 0
        self.start = time.perf_counter()
        self.last_lr = 0.0
        self.loss_scale = None

    def add(self, step_output: Dict[str, Any]) -> None:
        self.logging_outputs.extend(step_output["logging_outputs"])
        self.gnorms.append(step_output["gnorm"])
        self.updates += 1
        self.last_lr = step_output["lr"]
        self.loss_scale = step_output.get("loss_scale")

    def reduce(self, task: Any, criterion: Any, train_wall: float, start_time: float) -> Dict[str, float]:
        stats = reduce_stats(task, criterion, self.logging_outputs)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {k: stats[k] for k in ("loss", "nll_loss", "ppl") if k in stats}
        ntokens = stats.get("ntokens", 0.0)
        out["wps"] = round(ntokens / elapsed, 1)
        out["ups"] = round(self.updates / elapsed, 2)
        out["wpb"] = round(ntokens / max(self.updates, 1), 1)
        out["bsz"] = round(stats.get("nsentences", 0) / max(self.updates, 1), 1)
        if self.gnorms:
            out["gnorm"] = float(torch.stack(self.gnorms).mean().item())
        out["lr"] = self.last_lr
        if self.loss_scale is not None:
            out["loss_scale"] = float(self.loss_scale)
        out["train_wall"] = round(train_wall, 1)
        out["wall"] = round(time.perf_counter() - start_time, 1)
        return out


def validate(cfg: DictConfig, trainer: Trainer, task: Any, epoch: int, subsets: List[str],
             writers: Optional[MetricWriters] = None) -> List[Optional[float]]:
    """Validate on each subset; return the ``best_checkpoint_metric`` of each."""
    values: List[Optional[float]] = []
    for subset in subsets:
        itr = task.get_batch_iterator(
            task.dataset(subset),
            max_tokens=cfg.dataset.max_tokens_valid,
            max_sentences=cfg.dataset.batch_size_valid,
            max_positions=task.max_positions(),
            ignore_invalid_inputs=cfg.dataset.skip_invalid_size_inputs_valid_test,
            required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
            seed=cfg.common.seed,
            num_shards=cfg.distributed_training.distributed_world_size,
            shard_id=cfg.distributed_training.distributed_rank,
            num_workers=cfg.dataset.num_workers,
            epoch=1,
        ).next_epoch_itr(shuffle=False)
        progress = pb.progress_bar(itr, log_format=cfg.common.log_format, log_interval=cfg.common.log_interval,
                                   epoch=epoch, prefix=f"valid on '{subset}' subset",
                                   no_progress_bar=cfg.common.no_progress_bar)
        logs = []
        for sample in progress:
            log = trainer.valid_step(sample)
            if log is not None:
                logs.append(log)
        progress.close()
        stats = reduce_stats(task, trainer.criterion, logs)
        metric = cfg.checkpoint.best_checkpoint_metric
        value = stats.get(metric)
        if stats and value is None:
            raise KeyError(f"checkpoint.best_checkpoint_metric={metric!r} is not a validation "
                           f"metric; choose one of {sorted(stats)}")
        shown = {k: stats[k] for k in ("loss", "nll_loss", "ppl") if k in stats}
        if distributed_utils.is_master():
            progress.print(shown, tag=subset, step=trainer.get_num_updates())
            if writers is not None:
                writers.log(subset, shown, trainer.get_num_updates())
        values.append(value)
    return values


def _check_finite(stats: Dict[str, float], num_updates: int) -> None:
    loss = stats.get("loss")
    if loss is not None and not math.isfinite(loss):
        raise FloatingPointError(
            f"the training loss became {loss} by update {num_updates}; stopping without saving, "
            "so the last checkpoint stays the last good one. Lower optimization.lr, set "
            "optimization.clip_norm, or check the data.")


def train_epoch(cfg: DictConfig, trainer: Trainer, task: Any, epoch_itr: Any,
                state: Dict[str, Any]) -> Tuple[List[Optional[float]], bool]:
    """Train one epoch (or until a stop condition); return (valid losses, should_stop)."""
    from fairseq.data.iterators import GroupedIterator

    epoch = epoch_itr.next_epoch_idx
    update_freqs = list(cfg.optimization.update_freq)
    update_freq = update_freqs[min(epoch, len(update_freqs)) - 1]
    itr = epoch_itr.next_epoch_itr(shuffle=True)
    grouped = GroupedIterator(itr, update_freq)
    progress = pb.progress_bar(grouped, log_format=cfg.common.log_format,
                               log_interval=cfg.common.log_interval, epoch=epoch_itr.epoch,
                               no_progress_bar=cfg.common.no_progress_bar)
    trainer.lr_step_begin_epoch(epoch_itr.epoch)
    log_interval = max(int(cfg.common.log_interval), 1)
    max_update = cfg.optimization.max_update or math.inf
    stop_seconds = float(cfg.optimization.stop_time_hours) * 3600 or math.inf
    subsets = [s for s in str(cfg.dataset.valid_subset).split(",") if s]
    interval, epoch_stats = IntervalStats(), IntervalStats()
    train_wall: StopwatchMeter = state["train_wall"]
    writers: MetricWriters = state["writers"]
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
            stats = interval.reduce(task, trainer.criterion, train_wall.elapsed_time, state["start_time"])
            _check_finite(stats, num_updates)
            if master:
                progress.log(stats, tag="train_inner", step=num_updates)
                writers.log("train_inner", stats, num_updates)
            interval.reset()
        end_of_epoch = not grouped.has_next()
        reason = None
        if num_updates >= max_update:
            reason = f"reached optimization.max_update={cfg.optimization.max_update}"
        elif train_wall.elapsed_time >= stop_seconds:
            reason = f"trained for optimization.stop_time_hours={cfg.optimization.stop_time_hours}"
        elif out["lr"] <= cfg.optimization.stop_min_lr:
            reason = f"lr {out['lr']:g} reached optimization.stop_min_lr={cfg.optimization.stop_min_lr}"
        valid_losses, patience_stop = validate_and_save(
            cfg, trainer, task, epoch_itr, subsets, end_of_epoch, reason is not None, state, epoch_stats)
        if patience_stop and reason is None:
            reason = (f"no improvement of valid {cfg.checkpoint.best_checkpoint_metric} in "
                      f"checkpoint.patience={cfg.checkpoint.patience} validations")
        if reason is not None:
            logger.info("stopping: %s", reason)
            should_stop = True
            break
    if epoch_stats.updates:
        stats = epoch_stats.reduce(task, trainer.criterion, train_wall.elapsed_time, state["start_time"])
        if master:
            progress.print(stats, tag="train", step=trainer.get_num_updates())
            writers.log("train", stats, trainer.get_num_updates())
    progress.close()
    return valid_losses, should_stop


def validate_and_save(cfg: DictConfig, trainer: Trainer, task: Any, epoch_itr: Any, subsets: List[str],
                      end_of_epoch: bool, stopping: bool, state: Dict[str, Any],
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
        valid_losses = validate(cfg, trainer, task, epoch, subsets, state["writers"])
        value = valid_losses[0]
        if value is not None:
            improved = checkpoint_utils.is_better(value, state.get("best"), cfg)
            if improved:
                state["best"] = value
                state["num_bad_validations"] = 0
            else:
                state["num_bad_validations"] = state.get("num_bad_validations", 0) + 1
    if do_save:
        checkpoint_utils.save_checkpoint(cfg, trainer, epoch_itr, valid_losses[0], end_of_epoch,
                                         state, improved)
    patience = int(ck.patience)
    return valid_losses, patience > 0 and state.get("num_bad_validations", 0) >= patience


def run_training(cfg: DictConfig) -> Dict[str, Any]:
    """Train as ``cfg`` says, resuming from ``checkpoint.restore_file`` when it exists.

    Returns:
        ``{"num_updates", "epoch", "best"}`` at the end.
    """
    set_seed(cfg.common.seed)
    if distributed_utils.is_master():
        logger.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    task = tasks.setup_task(cfg.task)
    subsets = [s for s in str(cfg.dataset.valid_subset).split(",") if s]
    if not cfg.dataset.disable_validation:
        for subset in subsets:
            task.load_dataset(subset, epoch=1)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    nparams = sum(p.numel() for p in model.parameters())
    logger.info("model %s: %d parameters; criterion %s", cfg.model._name, nparams, cfg.criterion._name)
    trainer = Trainer(cfg, task, model, criterion)
    extra_state, epoch_itr = checkpoint_utils.load_checkpoint(cfg, trainer)
    writers = MetricWriters(cfg.common) if distributed_utils.is_master() else MetricWriters(None)
    state = {"best": extra_state.get("best"),
             "num_bad_validations": extra_state.get("num_bad_validations", 0),
             "train_wall": StopwatchMeter(extra_state.get("train_wall", 0.0)),
             "start_time": time.perf_counter(), "writers": writers}
    max_epoch = cfg.optimization.max_epoch or math.inf
    max_update = cfg.optimization.max_update or math.inf
    logger.info("training on %s x %d with max_tokens=%s, batch_size=%s, update_freq=%s", trainer.device,
                trainer.world_size, cfg.dataset.max_tokens, cfg.dataset.batch_size,
                list(cfg.optimization.update_freq))
    if trainer.get_num_updates() >= max_update:
        logger.info("already at update %d >= optimization.max_update=%d: nothing to do",
                    trainer.get_num_updates(), cfg.optimization.max_update)
    try:
        while epoch_itr.next_epoch_idx <= max_epoch and trainer.get_num_updates() < max_update:
            valid_losses, should_stop = train_epoch(cfg, trainer, task, epoch_itr, state)
            if should_stop:
                break
            trainer.lr_step(epoch_itr.epoch, valid_losses[0])
            epoch_itr = get_train_iterator(cfg, task, epoch_itr.next_epoch_idx)
    finally:
        writers.close()
    logger.info("done training: %d updates in %.1f s", trainer.get_num_updates(),
                time.perf_counter() - state["start_time"])
    return {"num_updates": trainer.get_num_updates(), "epoch": epoch_itr.epoch, "best": state.get("best")}
