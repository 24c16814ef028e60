"""The Trainer: one update of the model from a list of batches, and its saved state.

Both front doors reach this class with the same resolved config. The hot path avoids host
synchronisation: losses stay on the device until the training loop logs them (every
``common.log_interval`` updates), and gradients are normalised and clipped with one fused
multiply. The exceptions are float16 loss scaling (one check for overflow per update) and
multi-process runs (one all-reduce of the update's sample size).

Precision (``common.*``):

========================  ===============================  ==================================
flag                      on a GPU                          on a CPU
========================  ===============================  ==================================
(none)                    float32                           float32
``bf16``                  bfloat16 autocast                 bfloat16 autocast
``fp16``                  float16 autocast + loss scaling   float32 + loss scaling, one warning
``memory_efficient_fp16`` as ``fp16``                       as ``fp16``
``amp``                   float16 autocast + loss scaling   bfloat16 autocast
========================  ===============================  ==================================

On a CPU, ``fp16`` keeps the dynamic loss scaler (scaling by powers of two is exact in float32),
so overflow handling, its logs and its checkpoint state behave as on a GPU.
"""
import contextlib
import logging
import warnings
from typing import Any, Dict, List, Optional

import torch

from fairseq import compile_utils, distributed_utils, optim, precision
from fairseq.checkpoint import sharded
from fairseq.utils import move_to_device
from fairseq.distributed import fully_sharded
from fairseq.modules import fused_cross_entropy
from fairseq.optim import lr_scheduler as lr_scheduler_module
from fairseq.optim.dynamic_loss_scaler import DynamicLossScaler

logger = logging.getLogger(__name__)
# the arguments of fairseq's signatures that have no effect here and were warned about already
_warned_no_effect: set = set()


def get_train_iterator(cfg: Any, task: Any, epoch: int):
    """The batch iterator of epoch ``epoch`` (its data shard is loaded when the data has several)."""
    split = cfg.dataset.train_subset
    if split not in task.datasets or ":" in str(cfg.task.data):
        task.load_dataset(split, epoch=epoch)
    dataset = task.dataset(split)
    from fairseq.data.data_utils import name_batch_limits

    # a sample no batch of max_tokens can hold stops the run here, before its first update, with
    # the two settings that fix it (samples longer than the model's positions are skipped, as
    # in fairseq; one too large for a batch is a setting to change, not data to drop)
    # optional: a task other than language_modeling (a plugin's) may have no tokens_per_sample
    with name_batch_limits(split, cfg.task.data, "dataset.max_tokens", cfg.task.get("tokens_per_sample")):
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


class Trainer:
    """Owns the model, criterion, optimizer, lr scheduler, precision and update counter."""

    def __init__(self, cfg: Any, task: Any, model: torch.nn.Module, criterion: torch.nn.Module):
        self.cfg = cfg
        self.task = task
        use_cuda = torch.cuda.is_available() and not cfg.common.cpu
        self.device = torch.device("cuda", cfg.distributed_training.device_id) if use_cuda \
            else torch.device("cpu")
        self.world_size = distributed_utils.get_world_size()
        self.autocast_dtype: Optional[torch.dtype] = None
        self.scaler: Optional[DynamicLossScaler] = None
        self._setup_precision(cfg.common, use_cuda)
        self._model = model.to(self.device)
        # ddp_backend=fully_sharded with several processes: FSDP2 shards the parameters in place
        # (before self._params is read: the optimizer gets the shards)
        self.is_fully_sharded = fully_sharded.is_fully_sharded(cfg) and self.world_size > 1
        if self.is_fully_sharded:
            fully_sharded.shard_model(self._model, self.device, param_dtype=(
                torch.bfloat16 if self.autocast_dtype == torch.bfloat16 else None))
        self.criterion = criterion.to(self.device)
        self._wrapped_model: Optional[torch.nn.Module] = None
        self._optimizer = None
        self._lr_scheduler = None
        self._num_updates = 0
        self._dummy_batch: Optional[Dict[str, Any]] = None
        self._params = [p for p in self._model.parameters() if p.requires_grad]
        self._params += [p for p in self.criterion.parameters() if p.requires_grad]
        if self.world_size > 1:
            per_process = distributed_utils.all_gather_list(fully_sharded.local_parameter_bytes(self._model))
            logger.info("parameter memory per process (bytes, ddp_backend=%s): %s",
                        cfg.distributed_training.ddp_backend, per_process)

    def _setup_precision(self, common: Any, use_cuda: bool) -> None:
        wants_fp16 = common.fp16 or common.memory_efficient_fp16
        if common.bf16:
            self.autocast_dtype = torch.bfloat16
        elif common.amp and not use_cuda:
            self.autocast_dtype = torch.bfloat16
        elif wants_fp16 or common.amp:
            if use_cuda:
                self.autocast_dtype = torch.float16
            else:
                warnings.warn("common.fp16=true needs a CUDA GPU and none is available: computing in "
                              "float32 with dynamic loss scaling (common.bf16=true gives reduced "
                              "precision on CPU)", stacklevel=3)
            update_freq = max(list(self.cfg.optimization.update_freq) or [1])
            window = common.fp16_scale_window or max(2**14 // self.world_size // update_freq, 1)
            self.scaler = DynamicLossScaler(
                init_scale=float(common.fp16_init_scale), scale_window=window,
                tolerance=float(common.fp16_scale_tolerance), threshold=common.threshold_loss_scale,
                min_loss_scale=float(common.min_loss_scale))
        if self.autocast_dtype == torch.bfloat16:
            precision.notice_if_bf16_is_slow("cuda" if use_cuda else "cpu",
                                             "common.bf16=true" if common.bf16 else "common.amp=true")

    # -- model, optimizer and schedule --------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        """The model, wrapped for data-parallel training when there are several processes."""
        if self._wrapped_model is None:
            if self.cfg.common.compile:  # in place: the same module and state_dict keys
                compile_utils.compile_training_forward(self._model)
            dt = self.cfg.distributed_training
            if self.world_size > 1 and str(dt.ddp_backend) in ("pytorch_ddp", "c10d"):
                device_ids = [self.device.index] if self.device.type == "cuda" else None
                self._wrapped_model = distributed_utils.ModuleProxyDDP(
                    self._model, device_ids=device_ids,
                    find_unused_parameters=bool(dt.find_unused_parameters))
            else:
                self._wrapped_model = self._model
        return self._wrapped_model

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self._model

    def _build_optimizer(self) -> None:
        self._optimizer = optim.build_optimizer(self.cfg.optimizer, self._params)
        self._lr_scheduler = lr_scheduler_module.build_lr_scheduler(self.cfg.lr_scheduler, self._optimizer)
        self._lr_scheduler.step_update(self._num_updates)

    @property
    def optimizer(self):
        if self._optimizer is None:
            self._build_optimizer()
        return self._optimizer

    @property
    def lr_scheduler(self):
        if self._lr_scheduler is None:
            self._build_optimizer()
        return self._lr_scheduler

    def get_lr(self) -> float:
        return self.optimizer.get_lr()

    def get_num_updates(self) -> int:
        return self._num_updates

    def set_num_updates(self, num_updates: int) -> None:
        self._num_updates = num_updates
        self.lr_scheduler.step_update(num_updates)

    def lr_step_begin_epoch(self, epoch: int) -> float:
        self.lr_scheduler.step_begin_epoch(epoch)
        return self.lr_scheduler.step_update(self._num_updates)

    def lr_step(self, epoch: int, val_loss: Optional[float] = None) -> float:
        """At the end of an epoch: let the scheduler react, then re-apply the per-update lr."""
        self.lr_scheduler.step(epoch, val_loss)
        return self.lr_scheduler.step_update(self._num_updates)

    # -- steps -----------------------------------------------------------------------------
    def _autocast(self, enabled: bool = True):
        """The reduced-precision region of a forward (``nullcontext`` in float32). Autocast keeps
        the low-precision copies of the weights it makes until the outermost region ends: a
        region spanning all the micro-batches of an update, with their backward passes in a
        nested ``enabled=False`` region, casts each weight once per update, not once per batch."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype, enabled=enabled)

    def _casts_per_update(self):
        """The fused loss's output-weight cast shared by the micro-batches of an update, as
        autocast shares the layers' (not when fully sharded: the gathered weight is freed after
        each forward, and a kept cast would hold its memory)."""
        if self.autocast_dtype is None or self.is_fully_sharded:
            return contextlib.nullcontext()
        return fused_cross_entropy.weight_casts_per_update()

    def _no_sync(self, last: bool):
        model = self.model
        if last or not hasattr(model, "no_sync") or self.world_size == 1:
            return contextlib.nullcontext()
        return model.no_sync()

    def train_step(self, samples: List[Dict[str, Any]]) -> Dict[str, Any]:
        """One update from ``samples`` (``update_freq`` batches, gradients accumulated).

        Returns:
            ``{"logging_outputs", "gnorm" (tensor), "lr", "sample_size", "loss_scale",
            "overflow"}``; tensors stay on the device. After an fp16 overflow the update is
            skipped (``overflow`` is True and the update count does not move).

        Raises:
            FloatingPointError: the fp16 loss scale fell below ``common.min_loss_scale``.
        """
        model = self.model
        model.train()
        self.criterion.train()
        optimizer = self.optimizer
        logging_outputs = []
        local_sample_size = 0
        with self._autocast(), self._casts_per_update():  # one region: each weight cast once
            for i, sample in enumerate(samples):
                is_dummy = not sample
                if is_dummy:
                    # a shard padded with an empty batch still joins the gradient all-reduce
                    if self._dummy_batch is None or self.world_size == 1:
                        continue
                    sample = self._dummy_batch
                elif self._dummy_batch is None:
                    self._dummy_batch = sample
                sample = move_to_device(sample, self.device)
                if self.is_fully_sharded:  # reduce-scatter the gradients summed over all batches once
                    model.set_requires_gradient_sync(i == len(samples) - 1)
                with self._no_sync(last=i == len(samples) - 1):
                    loss, sample_size, log = self.task.train_step(
                        sample, model, self.criterion, update_num=self._num_updates)
                    if is_dummy:
                        loss = loss * 0.0
                    if self.scaler is not None:
                        loss = loss * self.scaler.loss_scale
                with self._autocast(enabled=False):  # backward outside autocast, the cache kept
                    loss.backward()
                if not is_dummy:
                    logging_outputs.append(log)
                    local_sample_size += int(sample_size)

        total_sample_size = local_sample_size
        if self.world_size > 1:
            total_sample_size = int(distributed_utils.all_reduce_sum(
                torch.tensor(float(local_sample_size), device=self.device)).item())
            if str(self.cfg.distributed_training.ddp_backend) == "no_c10d":
                for p in self._params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    distributed_utils.all_reduce_sum(p.grad)
        grads = [p.grad for p in self._params if p.grad is not None]
        gnorm = torch.zeros((), device=self.device)
        overflow = False
        if grads and total_sample_size > 0:
            # DDP averages gradients over processes; bring them back to a sum, then normalise
            ddp_mean = self.world_size if self.model is not self._model or self.is_fully_sharded else 1
            coef = ddp_mean / total_sample_size
            if self.scaler is not None:
                coef /= self.scaler.loss_scale
            # sharded gradients (DTensors): the norm is all-reduced, the global one on every process
            gnorm = fully_sharded.replicated_value(torch.nn.utils.get_total_norm(grads)) * coef
            if self.scaler is not None:
                overflow = not bool(torch.isfinite(gnorm).item())
            if not overflow:
                scale = torch.full((), coef, device=self.device)
                clip = float(self.cfg.optimization.clip_norm)
                if clip > 0:
                    scale = scale * torch.clamp(clip / (gnorm + 1e-6), max=1.0)
                torch._foreach_mul_([fully_sharded.local_tensor(g) for g in grads], scale)
                optimizer.step()
        optimizer.zero_grad()
        if self.scaler is not None:
            self.scaler.update(overflow)
            if overflow:
                logger.info("gradient overflow at update %d: update skipped, loss scale lowered to %g",
                            self._num_updates + 1, self.scaler.loss_scale)
                if self.scaler.below_minimum():
                    raise FloatingPointError(
                        f"the fp16 loss scale fell to {self.scaler.loss_scale:g}, below "
                        f"common.min_loss_scale={self.scaler.min_loss_scale:g}: the gradients keep "
                        "overflowing. Lower optimization.lr, or train with common.bf16=true or in float32.")
                return {"logging_outputs": [], "gnorm": gnorm.detach(), "lr": self.get_lr(),
                        "sample_size": 0, "loss_scale": self.scaler.loss_scale, "overflow": True}
        self._num_updates += 1
        lr = self.lr_scheduler.step_update(self._num_updates)
        return {"logging_outputs": logging_outputs, "gnorm": gnorm.detach(), "lr": lr,
                "sample_size": total_sample_size, "overflow": False,
                "loss_scale": self.scaler.loss_scale if self.scaler is not None else None}

    @torch.no_grad()
    def valid_step(self, sample: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        self._model.eval()
        self.criterion.eval()
        if not sample:
            if self.is_fully_sharded and self._dummy_batch is not None:
                # a shard padded with an empty batch still joins the parameter all-gathers
                with self._autocast():
                    self.task.valid_step(move_to_device(self._dummy_batch, self.device), self._model,
                                         self.criterion)
            return None
        sample = move_to_device(sample, self.device)
        with self._autocast():
            _, _, log = self.task.valid_step(sample, self._model, self.criterion)
        return log

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The trainer's whole state; when fully sharded, gathered onto the first process
        (a collective: every process calls it; the others get no model or optimizer)."""
        if self.is_fully_sharded:
            state = fully_sharded.full_state(self._model, self.optimizer.optimizer)
        else:
            state = {"model": self._model.state_dict(), "optimizer": self.optimizer.state_dict()}
        state.update(self.train_state())
        return state

    def train_state(self) -> Dict[str, Any]:
        """What the state holds besides the model and optimizer tensors: schedule, update
        count, loss scaler."""
        state = {"lr_scheduler": self.lr_scheduler.state_dict(), "num_updates": self._num_updates}
        if self.scaler is not None:
            state["loss_scaler"] = self.scaler.state_dict()
        return state

    def save_sharded(self, path: str, extra: Dict[str, Any], with_optimizer: bool = True) -> None:
        """Write a ``torch.distributed.checkpoint`` directory (see
        :mod:`fairseq.distributed.fully_sharded`); every process calls it."""
        keys = ["model", "optimizer"] if with_optimizer else ["model"]
        sharded.save_sharded(path, self._model, self.optimizer.optimizer if with_optimizer else None,
                                   dict(extra, sharded_keys=keys, **self.train_state()))

    def load_sharded(self, path: str, meta: Dict[str, Any], reset_optimizer: bool = False,
                     reset_lr_scheduler: bool = False) -> None:
        """Restore from a ``torch.distributed.checkpoint`` directory whose ``extra.pt`` is
        ``meta``, written by any number of processes; every process calls it."""
        from fairseq.errors import CheckpointError

        has_optimizer = "optimizer" in meta.get("sharded_keys", ["optimizer"])
        try:
            sharded.load_sharded(path, self._model, self.optimizer.optimizer
                                       if has_optimizer and not reset_optimizer else None)
        except (RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise CheckpointError(f"the sharded checkpoint {path} does not fit this model or cannot "
                                  f"be read: {first}") from None
        self._load_train_state(meta, reset_optimizer, reset_lr_scheduler)

    def get_train_iterator(self, epoch: int, combine: bool = True, load_dataset: bool = True,
                           data_selector: Any = None, shard_batch_itr: bool = True,
                           disable_iterator_cache: bool = False) -> Any:
        """The training batch iterator of ``epoch`` (fairseq's signature; this process's shard).
        The dataset is loaded when it is not yet (or when the data has several shards); the
        other arguments are accepted for fairseq's callers and have no effect (one warning for
        each given a value other than its default)."""
        given = {"combine": combine is not True, "load_dataset": load_dataset is not True,
                 "data_selector": data_selector is not None, "shard_batch_itr": shard_batch_itr is not True,
                 "disable_iterator_cache": disable_iterator_cache is not False}
        for name in (n for n, changed in given.items() if changed and n not in _warned_no_effect):
            # said once per process: fairseq's loops call this every epoch with the same values
            _warned_no_effect.add(name)
            logger.warning("Trainer.get_train_iterator(%s=...) has no effect: the data of the epoch is "
                           "loaded and sharded as task.data and the number of processes say", name)
        return get_train_iterator(self.cfg, self.task, epoch)

    def load_model_weights(self, model_state: Dict[str, Any], source: str) -> None:
        """Load model weights, explaining a mismatch (another vocabulary, other sizes)."""
        try:
            if self.is_fully_sharded:
                # the sharded load bypasses the model's load_state_dict: fairseq's key layout
                # (single-file checkpoints are written in it) is converted here
                upgrade = getattr(self._model, "upgrade_state_dict", None)
                fully_sharded.load_full_model(self._model, upgrade(dict(model_state)) if upgrade else model_state)
            else:
                self._model.load_state_dict(model_state, strict=True)
        except RuntimeError as e:
            from fairseq.errors import CheckpointError

            first = [line.strip().rstrip(".") for line in str(e).splitlines() if line.strip()][1:3]
            raise CheckpointError(
                f"the checkpoint {source} does not fit this model: {'; '.join(first)}. A size "
                "mismatch in embed_tokens or output_projection means another vocabulary (dict.txt); "
                "others mean different model.* settings than the run that saved it") from None

    def load_state_dict(self, state: Dict[str, Any], reset_optimizer: bool = False,
                        reset_lr_scheduler: bool = False, source: str = "") -> None:
        self.load_model_weights(state["model"], source)
        if not reset_optimizer and "optimizer" in state:
            if self.is_fully_sharded:  # each process keeps its shards of the moments
                lr = self.get_lr()
                fully_sharded.load_full_optimizer(self._model, self.optimizer.optimizer, state["optimizer"])
                self.optimizer.set_lr(lr)
            else:
                self.optimizer.load_state_dict(state["optimizer"])
        self._load_train_state(state, reset_optimizer, reset_lr_scheduler)

    def _load_train_state(self, state: Dict[str, Any], reset_optimizer: bool,
                          reset_lr_scheduler: bool) -> None:
        self._num_updates = int(state.get("num_updates", 0))
        if not reset_lr_scheduler and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.scaler is not None and "loss_scaler" in state and not reset_optimizer:
            self.scaler.load_state_dict(state["loss_scaler"])
        self.lr_scheduler.step_update(self._num_updates)
