"""Linear warmup, then polynomial decay to ``end_learning_rate`` at ``total_num_update``."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import register_lr_scheduler
from fairseq.optim.lr_scheduler.fairseq_lr_scheduler import FairseqLRScheduler


@dataclass
class PolynomialDecayLRScheduleConfig(FairseqDataclass):
    warmup_updates: int = field(
        default=0, metadata={"help": "warm the lr up linearly from 0 over this many updates"}
    )
    force_anneal: Optional[int] = field(
        default=None,
        metadata={"help": "from this epoch on, restart the decay at each epoch from the lr then in force"},
    )
    end_learning_rate: float = field(
        default=0.0, metadata={"help": "lr reached at total_num_update and kept afterwards"}
    )
    power: float = field(default=1.0, metadata={"help": "exponent of the decay (1: linear)"})
    total_num_update: int = field(
        default=II("optimization.max_update"),
        metadata={"help": "update at which the decay reaches end_learning_rate"},
    )
    lr: List[float] = II("optimization.lr")


@register_lr_scheduler("polynomial_decay", dataclass=PolynomialDecayLRScheduleConfig)
class PolynomialDecayLRSchedule(FairseqLRScheduler):
    """Warm up linearly to the peak lr, then decay polynomially to ``end_learning_rate``.

    With peak ``L`` (``optimization.lr``, one value), end ``E``, ``W`` warmup and ``T`` total
    updates and ``power`` ``k``:

    * ``n < W``: ``L n / W`` (0 at update 0);
    * ``W <= n < T``: ``(L - E) (1 - (n - W) / (T - W))^k + E``;
    * ``n >= T``: ``E``.

    ``force_anneal`` keeps fairseq's meaning for this scheduler: on entering each epoch
    ``e >= force_anneal`` (``e > 1``), the peak ``L`` becomes the lr in force at that moment, so
    the same curve continues from a lower peak and the lr falls faster with every epoch.
    The current epoch, and the peak once ``force_anneal`` moved it, are part of :meth:`state_dict`.

    Raises:
        ValueError: naming the key, for a list of lrs, ``total_num_update <= warmup_updates``,
            a negative ``warmup_updates`` or ``end_learning_rate``, a non-positive ``power``
            or ``force_anneal``.
    """

    def __init__(self, cfg: Any, optimizer: Any):
        super().__init__(cfg, optimizer)
        lrs = [cfg.lr] if isinstance(cfg.lr, (int, float)) else [float(v) for v in cfg.lr]
        if len(lrs) != 1:
            raise ValueError(f"lr_scheduler=polynomial_decay takes one lr (the peak), got "
                             f"optimization.lr={lrs}; use lr_scheduler=fixed for per-epoch lr lists")
        self.base_lr = self.peak_lr = float(lrs[0])
        self.warmup_updates = int(cfg.warmup_updates)
        if self.warmup_updates < 0:
            raise ValueError(f"lr_scheduler.warmup_updates={self.warmup_updates}: must be >= 0")
        self.total_num_update = int(cfg.total_num_update or 0)
        if self.total_num_update <= self.warmup_updates:
            raise ValueError(
                f"lr_scheduler.total_num_update={self.total_num_update} must exceed "
                f"lr_scheduler.warmup_updates={self.warmup_updates}: set --total-num-update "
                "(or --max-update, which it follows by default) to the length of the run")
        self.end_learning_rate = float(cfg.end_learning_rate)
        if not self.end_learning_rate >= 0.0:
            raise ValueError(f"lr_scheduler.end_learning_rate={self.end_learning_rate}: must be >= 0")
        self.power = float(cfg.power)
        if not self.power > 0.0:
            raise ValueError(f"lr_scheduler.power={self.power}: must be > 0 (1 decays linearly)")
        self.force_anneal: Optional[int] = None if cfg.force_anneal is None else int(cfg.force_anneal)
        if self.force_anneal is not None and self.force_anneal < 1:
            raise ValueError(f"lr_scheduler.force_anneal={self.force_anneal}: must be an epoch "
                             "number >= 1, or None to never re-anchor the decay")
        self.epoch = 1
        self.num_updates = 0
        self.optimizer.set_lr(self.lr_at(0))

    def lr_at(self, num_updates: int) -> float:
        """The lr after ``num_updates`` updates, for the current peak."""
        if num_updates < self.warmup_updates:
            return self.peak_lr * num_updates / self.warmup_updates
        if num_updates >= self.total_num_update:
            return self.end_learning_rate
        remaining = 1.0 - (num_updates - self.warmup_updates) / (self.total_num_update - self.warmup_updates)
        return (self.peak_lr - self.end_learning_rate) * remaining ** self.power + self.end_learning_rate

    def _enter_epoch(self, epoch: int) -> float:
        if epoch != self.epoch:
            self.epoch = epoch
            if self.force_anneal is not None and epoch > 1 and epoch >= self.force_anneal:
                self.peak_lr = self.lr_at(self.num_updates)
        return self.step_update(self.num_updates)

    def step_begin_epoch(self, epoch: int) -> float:
        """Before epoch ``epoch``; a no-op when :meth:`step` already entered it."""
        return self._enter_epoch(epoch)

    def step(self, epoch: int, val_loss: Optional[float] = None) -> float:
        """At the end of epoch ``epoch``: record ``val_loss`` and enter epoch ``epoch + 1``."""
        super().step(epoch, val_loss)
        return self._enter_epoch(epoch + 1)

    def step_update(self, num_updates: int) -> float:
        self.num_updates = num_updates
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
