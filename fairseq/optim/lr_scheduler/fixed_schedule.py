"""A fixed lr per epoch (``--lr 0.5,0.25,0.1``), optional annealing, optional warmup."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.errors import ConfigError
from fairseq.optim.lr_scheduler import register_lr_scheduler
from fairseq.optim.lr_scheduler.fairseq_lr_scheduler import FairseqLRScheduler


@dataclass
class FixedLRScheduleConfig(FairseqDataclass):
    force_anneal: Optional[int] = field(
        default=None, metadata={"help": "from this epoch on, multiply the lr by lr_shrink every epoch",
                                "min": 1}
    )
    lr_shrink: float = field(
        default=0.1, metadata={"help": "factor applied to the lr once per annealed epoch", "above": 0}
    )
    warmup_updates: int = field(
        default=0, metadata={"help": "ramp the lr up linearly over the first N updates", "min": 0}
    )
    lr: List[float] = II("optimization.lr")


@register_lr_scheduler("fixed", dataclass=FixedLRScheduleConfig)
class FixedLRSchedule(FairseqLRScheduler):
    """One lr per epoch from the ``optimization.lr`` list, then (optionally) geometric annealing.

    With ``lrs = optimization.lr`` and epochs numbered from 1, epoch ``e`` runs at

    * ``lrs[min(e, len(lrs)) - 1]`` (the last value repeats) while ``force_anneal`` is unset or
      ``e < force_anneal``;
    * ``lrs[-1] * lr_shrink ** (e - force_anneal + 1)`` from ``e = force_anneal`` on, as in
      fairseq: epoch ``force_anneal`` is already shrunk once.

    During the first ``warmup_updates`` updates (``n < W``) the epoch lr is multiplied by
    ``(n + 1) / W``: ``lr / W`` for the first update, the full lr from update ``W - 1`` on.

    As in fairseq, the epoch's lr is chosen by ``step_begin_epoch(epoch)``; ``step`` at the end
    of an epoch only records the validation loss, so the lr it returns (the one the
    ``stop_min_lr`` check reads) is still that of the epoch just finished. The current epoch is
    part of :meth:`state_dict`, with fairseq's ``lr`` key.

    Raises:
        ConfigError: naming the key, for an empty or negative lr list, a negative
            ``warmup_updates``, a non-positive ``lr_shrink`` or ``force_anneal``.
    """

    def __init__(self, cfg: Any, optimizer: Any):
        super().__init__(cfg, optimizer)
        self.lrs = [float(cfg.lr)] if isinstance(cfg.lr, (int, float)) else [float(v) for v in cfg.lr]
        if not self.lrs or min(self.lrs) < 0.0:
            raise ConfigError(f"optimization.lr={self.lrs}: lr_scheduler=fixed needs one or more lrs "
                             ">= 0, one per epoch, e.g. [0.25] or [1.0,0.5,0.25]")
        self.force_anneal: Optional[int] = None if cfg.force_anneal is None else int(cfg.force_anneal)
        if self.force_anneal is not None and self.force_anneal < 1:
            raise ConfigError(f"lr_scheduler.force_anneal={self.force_anneal}: must be an epoch "
                             "number >= 1, or None to never anneal")
        self.lr_shrink = float(cfg.lr_shrink)
        if not self.lr_shrink > 0.0:
            raise ConfigError(f"lr_scheduler.lr_shrink={self.lr_shrink}: must be > 0 (e.g. 0.1)")
        self.warmup_updates = int(cfg.warmup_updates)
        if self.warmup_updates < 0:
            raise ConfigError(f"lr_scheduler.warmup_updates={self.warmup_updates}: must be >= 0")
        self.epoch = 1
        self.num_updates = 0
        self.optimizer.set_lr(self.lr_at(self.epoch, 0))

    def epoch_lr(self, epoch: int) -> float:
        """The lr of epoch ``epoch`` (1-based) once warmup is over."""
        if self.force_anneal is None or epoch < self.force_anneal:
            return self.lrs[min(max(epoch, 1), len(self.lrs)) - 1]
        return self.lrs[-1] * self.lr_shrink ** (epoch - self.force_anneal + 1)

    def lr_at(self, epoch: int, num_updates: int) -> float:
        """The lr in force in epoch ``epoch`` after ``num_updates`` updates."""
        lr = self.epoch_lr(epoch)
        if num_updates < self.warmup_updates:
            lr *= (num_updates + 1) / self.warmup_updates
        return lr

    def _apply(self) -> float:
        lr = self.lr_at(self.epoch, self.num_updates)
        self.optimizer.set_lr(lr)
        return lr

    def step_begin_epoch(self, epoch: int) -> float:
        """Before epoch ``epoch``: switch to its lr."""
        self.epoch = epoch
        return self._apply()

    def step_update(self, num_updates: int) -> float:
        self.num_updates = num_updates
        return self._apply()

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "epoch": self.epoch, "lr": self.epoch_lr(self.epoch)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.epoch = int(state_dict.get("epoch", self.epoch))
