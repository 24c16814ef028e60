"""Linear warmup, then polynomial decay to ``end_learning_rate`` at ``total_num_update``."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.errors import ConfigError
from fairseq.optim.lr_scheduler import register_lr_scheduler
from fairseq.optim.lr_scheduler.fairseq_lr_scheduler import FairseqLRScheduler


@dataclass
class PolynomialDecayLRScheduleConfig(FairseqDataclass):
    warmup_updates: int = field(
        default=0, metadata={"help": "raise the lr linearly to its peak over the first N updates", "min": 0}
    )
    force_anneal: Optional[int] = field(
        default=None,
        metadata={"help": "from this epoch on, restart the decay at each epoch from the lr then in force",
                  "min": 1},
    )
    end_learning_rate: float = field(
        default=0.0, metadata={"help": "lr reached at total_num_update and kept afterwards", "min": 0}
    )
    power: float = field(default=1.0, metadata={"help": "exponent of the decay (1: linear)", "above": 0})
    total_num_update: float = field(
        default=II("optimization.max_update"),
        metadata={"help": "update at which the decay reaches end_learning_rate", "min": 0},
    )
    lr: List[float] = II("optimization.lr")


@register_lr_scheduler("polynomial_decay", dataclass=PolynomialDecayLRScheduleConfig)
class PolynomialDecayLRSchedule(FairseqLRScheduler):
    """Warm up linearly to the peak lr, then decay polynomially to ``end_learning_rate`` (fairseq 0.12).

    With peak ``L`` (``optimization.lr``, one value), end ``E``, ``W`` warmup and ``T`` total
    updates and ``power`` ``k``, the lr after update ``n`` is

    * ``n <= W`` (``W > 0``): ``L n / W`` (so 0 after ``step_update(0)``; the first update of a
      run uses it, as in fairseq);
    * ``n >= T``: ``E``;
    * otherwise: ``(L - E) (1 - (n - W) / (T - W))^k + E``.

    Built, the optimizer holds ``L / W`` (``L`` without warmup); :meth:`step_begin_epoch`
    re-applies the last warmup factor to the epoch's peak, as fairseq does.

    ``force_anneal``: on entering each epoch ``e >= force_anneal`` (``e > 1``), the peak ``L``
    becomes the lr in force at that moment, so the curve continues from a lower peak and the lr
    falls faster with every epoch. The last epoch entered and the peak, once moved, are part of
    :meth:`state_dict`, so resuming inside an epoch does not re-anchor it a second time.

    Raises:
        ConfigError: naming the key, for a list of lrs, ``total_num_update <= 0``, a negative
            ``warmup_updates`` or ``end_learning_rate``, a non-positive ``power`` or
            ``force_anneal``.
    """

    def __init__(self, cfg: Any, optimizer: Any):
        super().__init__(cfg, optimizer)
        lrs = [cfg.lr] if isinstance(cfg.lr, (int, float)) else [float(v) for v in cfg.lr]
        if len(lrs) != 1:
            raise ConfigError(f"lr_scheduler=polynomial_decay takes one lr (the peak), got "
                             f"optimization.lr={lrs}; use lr_scheduler=fixed for per-epoch lr lists")
        self.base_lr = self.peak_lr = float(lrs[0])
        self.warmup_updates = int(cfg.warmup_updates)
        if self.warmup_updates < 0:
            raise ConfigError(f"lr_scheduler.warmup_updates={self.warmup_updates}: must be >= 0")
        self.total_num_update = float(cfg.total_num_update or 0)
        if not self.total_num_update > 0:
            raise ConfigError(
                f"lr_scheduler.total_num_update={cfg.total_num_update}: must be > 0; set "
                "--total-num-update (or --max-update, which it follows by default) to the length "
                "of the run")
        self.end_learning_rate = float(cfg.end_learning_rate)
        if not self.end_learning_rate >= 0.0:
            raise ConfigError(f"lr_scheduler.end_learning_rate={self.end_learning_rate}: must be >= 0")
        self.power = float(cfg.power)
        if not self.power > 0.0:
            raise ConfigError(f"lr_scheduler.power={self.power}: must be > 0 (1 decays linearly)")
        self.force_anneal: Optional[int] = None if cfg.force_anneal is None else int(cfg.force_anneal)
        if self.force_anneal is not None and self.force_anneal < 1:
            raise ConfigError(f"lr_scheduler.force_anneal={self.force_anneal}: must be an epoch "
                             "number >= 1, or None to never re-anchor the decay")
        self.warmup_factor = 1.0 / self.warmup_updates if self.warmup_updates > 0 else 1.0
        self.epoch = 1  # the last epoch entered: a resumed epoch is not re-anchored twice
        self.optimizer.set_lr(self.warmup_factor * self.peak_lr)

    def lr_at(self, num_updates: int) -> float:
        """The lr after ``num_updates`` updates, for the current peak."""
        if self.warmup_updates > 0 and num_updates <= self.warmup_updates:
            return self.peak_lr * num_updates / self.warmup_updates
        if num_updates >= self.total_num_update:
            return self.end_learning_rate
        span = self.total_num_update - self.warmup_updates
        remaining = 1.0 - (num_updates - self.warmup_updates) / span
        return (self.peak_lr - self.end_learning_rate) * remaining ** self.power + self.end_learning_rate

    def step_begin_epoch(self, epoch: int) -> float:
        """Before epoch ``epoch``: from ``force_anneal`` on, the lr in force becomes the peak."""
        if self.force_anneal is not None and epoch > self.epoch and epoch >= self.force_anneal:
            self.peak_lr = self.optimizer.get_lr()
        self.epoch = max(self.epoch, epoch)
        self.optimizer.set_lr(self.warmup_factor * self.peak_lr)
        return self.optimizer.get_lr()

    def step_update(self, num_updates: int) -> float:
        if self.warmup_updates > 0 and num_updates <= self.warmup_updates:
            self.warmup_factor = num_updates / self.warmup_updates
        lr = self.lr_at(num_updates)
        self.optimizer.set_lr(lr)
        return lr

    def state_dict(self) -> Dict[str, Any]:
        state = {**super().state_dict(), "epoch": self.epoch}
        if self.peak_lr != self.base_lr:  # re-anchored by force_anneal; otherwise --lr rules
            state["peak_lr"] = self.peak_lr
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.epoch = int(state_dict.get("epoch", self.epoch))
        self.peak_lr = float(state_dict.get("peak_lr", self.peak_lr))
