"""Linear warmup, then cosine annealing from ``max_lr`` down to ``lr``, with warm restarts."""
import math
from dataclasses import dataclass, field
from typing import Any, List, Tuple

from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import register_lr_scheduler
from fairseq.optim.lr_scheduler.fairseq_lr_scheduler import FairseqLRScheduler


@dataclass
class CosineLRScheduleConfig(FairseqDataclass):
    warmup_updates: int = field(
        default=0, metadata={"help": "warm the lr up linearly over this many updates"}
    )
    warmup_init_lr: float = field(
        default=-1, metadata={"help": "lr at update 0 of the warmup; -1 means the minimum lr (--lr)"}
    )
    max_lr: float = field(
        default=1.0, metadata={"help": "peak lr of the cosine cycles; --lr is their minimum"}
    )
    t_mult: float = field(
        default=1.0, metadata={"help": "each restart period is t_mult times the previous one (>= 1)"}
    )
    lr_period_updates: float = field(
        default=-1,
        metadata={"help": "updates in the first cosine period; -1 means max_update - warmup_updates"},
    )
    lr_shrink: float = field(
        default=0.1, metadata={"help": "multiply both the peak and the minimum lr by this at each restart"}
    )
    lr: List[float] = II("optimization.lr")
    max_update: int = II("optimization.max_update")


@register_lr_scheduler("cosine", dataclass=CosineLRScheduleConfig)
class CosineSchedule(FairseqLRScheduler):
    """Cosine annealing with warm restarts (SGDR) after an optional linear warmup.

    With ``min = lr`` (``optimization.lr``, one value), ``max = max_lr`` and ``W`` warmup updates:

    * ``n < W``: ``init + n (max - init) / W``, where ``init = warmup_init_lr`` (-1: ``min``).
    * ``n >= W``: with ``k = n - W`` and first period ``P``, cycle ``i`` spans
      ``P t_mult^i`` updates and starts after ``P (t_mult^i - 1) / (t_mult - 1)`` (``i P`` when
      ``t_mult = 1``). At ``t`` updates into cycle ``i`` of length ``T``, with ``s = lr_shrink^i``:
      ``lr = min s + (max s - min s) (1 + cos(pi t / T)) / 2``.

    ``P`` is ``lr_period_updates``, or ``max_update - W`` (one cycle over the whole run) when that
    is -1. The lr depends only on the update count, so the scheduler holds no state of its own.

    Raises:
        ValueError: naming the key, for a list of lrs, ``max_lr < lr``, ``t_mult < 1``, a
            non-positive ``lr_shrink`` or negative ``warmup_updates``, or no period (neither
            ``lr_period_updates`` nor ``optimization.max_update`` beyond the warmup).
    """

    def __init__(self, cfg: Any, optimizer: Any):
        super().__init__(cfg, optimizer)
        lrs = [cfg.lr] if isinstance(cfg.lr, (int, float)) else [float(v) for v in cfg.lr]
        if len(lrs) != 1:
            raise ValueError(f"lr_scheduler=cosine takes one lr (the minimum), got optimization.lr={lrs}; "
                             "use lr_scheduler=fixed for per-epoch lr lists")
        self.min_lr = float(lrs[0])
        self.max_lr = float(cfg.max_lr)
        if not self.max_lr >= self.min_lr >= 0.0:
            raise ValueError(
                f"lr_scheduler.max_lr={self.max_lr} with optimization.lr={lrs}: cosine anneals from "
                "max_lr (the peak, --max-lr) down to lr (the minimum, --lr), so need "
                "max_lr >= lr >= 0, e.g. --lr 1e-6 --max-lr 1e-3")
        self.warmup_updates = int(cfg.warmup_updates)
        if self.warmup_updates < 0:
            raise ValueError(f"lr_scheduler.warmup_updates={self.warmup_updates}: must be >= 0")
        init = float(cfg.warmup_init_lr)
        self.warmup_init_lr = self.min_lr if init < 0 else init
        self.t_mult = float(cfg.t_mult)
        if not self.t_mult >= 1.0:
            raise ValueError(f"lr_scheduler.t_mult={self.t_mult}: must be >= 1 (each restart period "
                             "is t_mult times the previous; 1 keeps them equal)")
        self.lr_shrink = float(cfg.lr_shrink)
        if not self.lr_shrink > 0.0:
            raise ValueError(f"lr_scheduler.lr_shrink={self.lr_shrink}: must be > 0 (1 keeps every "
                             "cycle's peak and minimum)")
        self.period = self._first_period(cfg)
        self.optimizer.set_lr(self.lr_at(0))

    def _first_period(self, cfg: Any) -> float:
        period = float(cfg.lr_period_updates)
        if period > 0:
            return period
        max_update = int(cfg.max_update or 0)
        if max_update - self.warmup_updates <= 0:
            raise ValueError(
                f"lr_scheduler.lr_period_updates={cfg.lr_period_updates} asks for one cosine cycle over "
                f"optimization.max_update={max_update} minus lr_scheduler.warmup_updates="
                f"{self.warmup_updates}, which leaves no updates; set --max-update above the warmup "
                "or --lr-period-updates to a positive number")
        return float(max_update - self.warmup_updates)

    def cycle_position(self, updates_after_warmup: int) -> Tuple[int, float, float]:
        """``(cycle index, updates into the cycle, cycle length)`` after ``updates_after_warmup``."""
        k, period, t_mult = float(updates_after_warmup), self.period, self.t_mult
        if t_mult == 1.0:
            cycle = math.floor(k / period)
            return cycle, k - cycle * period, period

        def start(i: int) -> float:
            return period * (t_mult ** i - 1.0) / (t_mult - 1.0)

        cycle = math.floor(math.log(1.0 + k * (t_mult - 1.0) / period, t_mult))
        # the logarithm can land a hair on the wrong side of a restart; settle it exactly
        while start(cycle + 1) <= k:
            cycle += 1
        while cycle > 0 and start(cycle) > k:
            cycle -= 1
        return cycle, k - start(cycle), period * t_mult ** cycle

    def lr_at(self, num_updates: int) -> float:
        """The lr after ``num_updates`` updates."""
        if num_updates < self.warmup_updates:
            return self.warmup_init_lr + num_updates * (self.max_lr - self.warmup_init_lr) / self.warmup_updates
        cycle, t_cur, t_len = self.cycle_position(num_updates - self.warmup_updates)
        shrink = self.lr_shrink ** cycle
        low, high = self.min_lr * shrink, self.max_lr * shrink
        return low + 0.5 * (high - low) * (1.0 + math.cos(math.pi * t_cur / t_len))

    def step_update(self, num_updates: int) -> float:
        lr = self.lr_at(num_updates)
        self.optimizer.set_lr(lr)
        return lr
