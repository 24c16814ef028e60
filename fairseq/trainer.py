"""The Trainer: one update of the model from a list of batches, and its saved state.

Both front doors reach this class with the same resolved config. The hot path avoids host
synchronisation: losses stay on the device until the training loop logs them (every
``common.log_interval`` updates), gradients are normalised and clipped with one fused multiply.
"""
import contextlib
import logging
import warnings
from typing import Any, Dict, List, Optional

import torch

from fairseq import optim
from fairseq.optim import lr_scheduler as lr_scheduler_module

logger = logging.getLogger(__name__)


def move_to_device(sample: Any, device: torch.device) -> Any:
    if torch.is_tensor(sample):
        return sample.to(device, non_blocking=True)
    if isinstance(sample, dict):
        return {k: move_to_device(v, device) for k, v in sample.items()}
    if isinstance(sample, (list, tuple)):
        return type(sample)(move_to_device(v, device) for v in sample)
    return sample


class Trainer:
    """Owns the model, criterion, optimizer, lr scheduler, precision and update counter."""

    def __init__(self, cfg: Any, task: Any, model: torch.nn.Module, criterion: torch.nn.Module):
        self.cfg = cfg
        self.task = task
        use_cuda = torch.cuda.is_available() and not cfg.common.cpu
        self.device = torch.device("cuda", cfg.distributed_training.device_id) if use_cuda \
            else torch.device("cpu")
        self.autocast_dtype: Optional[torch.dtype] = None
        self.grad_scaler: Optional[torch.amp.GradScaler] = None
        if cfg.common.bf16:
            self.autocast_dtype = torch.bfloat16
        elif cfg.common.fp16:
            if self.device.type == "cuda":
                self.autocast_dtype = torch.float16
                window = cfg.common.fp16_scale_window or 2000
                self.grad_scaler = torch.amp.GradScaler(
                    "cuda", init_scale=float(cfg.common.fp16_init_scale), growth_interval=window)
            else:
                warnings.warn("common.fp16=true needs a CUDA GPU and none is available: training in "
                              "float32 instead (common.bf16=true gives reduced precision on CPU)",
                              stacklevel=2)
        self.model = model.to(self.device)
        self.criterion = criterion.to(self.device)
        self._optimizer = None
        self._lr_scheduler = None
        self._num_updates = 0
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self._params += [p for p in self.criterion.parameters() if p.requires_grad]

    # -- optimizer and schedule -----------------------------------------------------------------
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

    def lr_step(self, epoch: int, val_loss: Optional[float] = None) -> float:
        """At the end of an epoch: let the scheduler react, then re-apply the per-update lr."""
        self.lr_scheduler.step(epoch, val_loss)
        return self.lr_scheduler.step_update(self._num_updates)

    # -- steps -----------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def train_step(self, samples: List[Dict[str, Any]]) -> Dict[str, Any]:
        """One update from ``samples`` (``update_freq`` batches, gradients accumulated).

        Returns:
            ``{"logging_outputs": [...], "gnorm": tensor, "lr": float, "sample_size": int}``;
            tensors stay on the device.
        """
        self.model.train()
        self.criterion.train()
        optimizer = self.optimizer
        logging_outputs = []
        total_sample_size = 0
        for sample in samples:
            if not sample:  # an empty batch pads a shard; it contributes nothing
                continue
            sample = move_to_device(sample, self.device)
            with self._autocast():
                loss, sample_size, log = self.task.train_step(
                    sample, self.model, self.criterion, update_num=self._num_updates)
            if self.grad_scaler is not None:
                loss = self.grad_scaler.scale(loss)
            loss.backward()
            logging_outputs.append(log)
            total_sample_size += int(sample_size)
        grads = [p.grad for p in self._params if p.grad is not None]
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(optimizer.optimizer)
        gnorm = torch.zeros((), device=self.device)
        if grads and total_sample_size > 0:
            # normalise by the update's sample size and clip, in one multiply
            gnorm = torch.nn.utils.get_total_norm(grads) / total_sample_size
            coef = torch.full((), 1.0 / total_sample_size, device=self.device)
            clip = float(self.cfg.optimization.clip_norm)
            if clip > 0:
                coef = coef * torch.clamp(clip / (gnorm + 1e-6), max=1.0)
            torch._foreach_mul_(grads, coef)
            if self.grad_scaler is not None:
                self.grad_scaler.step(optimizer.optimizer)
                self.grad_scaler.update()
            else:
                optimizer.step()
        optimizer.zero_grad()
        self._num_updates += 1
        lr = self.lr_scheduler.step_update(self._num_updates)
        return {"logging_outputs": logging_outputs, "gnorm": gnorm.detach(), "lr": lr,
                "sample_size": total_sample_size,
                "loss_scale": self.grad_scaler.get_scale() if self.grad_scaler is not None else None}

    @torch.no_grad()
    def valid_step(self, sample: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        self.model.eval()
        self.criterion.eval()
        if not sample:
            return None
        sample = move_to_device(sample, self.device)
        with self._autocast():
            _, _, log = self.task.valid_step(sample, self.model, self.criterion)
        return log

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "num_updates": self._num_updates,
        }
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any], reset_optimizer: bool = False,
                        reset_lr_scheduler: bool = False) -> None:
        missing, unexpected = self.model.load_state_dict(state["model"], strict=False)
        if missing or unexpected:
            raise RuntimeError(
                "the checkpoint does not fit this model: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; "
                "check model.* settings (and the dictionary) against the run that saved it")
        self._num_updates = int(state.get("num_updates", 0))
        if not reset_optimizer and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if not reset_lr_scheduler and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.lr_scheduler.step_update(self._num_updates)
