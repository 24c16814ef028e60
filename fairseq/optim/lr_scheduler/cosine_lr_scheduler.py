"""Linear warmup to the peak ``lr``, then cosine annealing down to ``min_lr``, with warm restarts."""
import math
from dataclasses import dataclass, field
from typing import Any, List, Tuple

from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.errors import ConfigError
from fairseq.optim.lr_scheduler import register_lr_scheduler
from fairseq.optim.lr_scheduler.fairseq_lr_scheduler import FairseqLRScheduler


@dataclass
class CosineLRScheduleConfig(FairseqDataclass):
    warmup_updates: int = field(
        default=0, metadata={"help": "raise the lr linearly to its peak over the first N updates", "min": 0}
    )
    warmup_init_lr: float = field(
        default=-1, metadata={"help": "lr at update 0 of the warmup; -1 means min_lr", "min": 0,
                               "also": (-1,)}
    )
    lr: List[float] = field(
        default=II("optimization.lr"),
        metadata={"help": "peak lr of the cosine cycles (one value), above min_lr"},
    )
    min_lr: float = field(default=0.0, metadata={"help": "lowest lr, reached at the end of a cycle",
                                                 "min": 0})
    t_mult: float = field(
        default=1.0, metadata={"help": "each restart period is t_mult times the previous one (>= 1)",
                                "min": 1}
    )
    lr_period_updates: float = field(
        default=-1,
        metadata={"help": "updates in the first cosine period; -1 means max_update - warmup_updates",
                  "above": 0, "also": (-1,)},
    )
    lr_shrink: float = field(
        default=0.1, metadata={"help": "multiply both the peak and min_lr by this at each restart",
                                "above": 0}
    )
    max_update: int = II("optimization.max_update")


@register_lr_scheduler("cosine", dataclass=CosineLRScheduleConfig)
class CosineLRSchedule(FairseqLRScheduler):
    """Cosine annealing with warm restarts (SGDR) after an optional linear warmup (fairseq 0.12).

    With peak ``max = lr`` (``optimization.lr``, one value), floor ``min = min_lr`` and ``W``
    warmup updates, the lr after update ``n`` is

    * ``n < W``: ``init + n (max - init) / W``, where ``init = warmup_init_lr`` (-1: ``min``);
    * ``n >= W``: with ``k = n - W`` and first period ``P``, cycle ``i`` spans ``P t_mult^i``
      updates and starts after ``P (t_mult^i - 1) / (t_mult - 1)`` (``i P`` when ``t_mult = 1``).
      At ``t`` updates into cycle ``i`` of length ``T``, with ``s = lr_shrink^i``:
      ``lr = min s + (max s - min s) (1 + cos(pi t / T)) / 2``.

    ``P`` is ``lr_period_updates``, or ``max_update - W`` when that is -1, so one cycle spans the
    whole run and the lr after the very last update (``n = max_update``) is already the next
    cycle's peak, ``max * lr_shrink``; no update uses it. Before the first ``step_update`` the
    optimizer holds ``init``. The lr depends only on the update count.

    Raises:
        ConfigError: naming the key, for a list of lrs, ``lr <= min_lr``, ``t_mult < 1``, a
            non-positive ``lr_shrink`` or negative ``warmup_updates``, or no period (neither
            ``lr_period_updates`` nor ``optimization.max_update`` beyond the warmup).
    """

    def __init__(self, cfg: Any, optimizer: Any):
        super().__init__(cfg, optimizer)
        lrs = [cfg.lr] if isinstance(cfg.lr, (int, float)) else [float(v) for v in cfg.lr]
        if len(lrs) != 1:
            raise ConfigError(f"lr_scheduler=cosine takes one lr (the peak), got optimization.lr={lrs}; "
                             "use lr_scheduler=fixed for per-epoch lr lists")
        self.max_lr = float(lrs[0])
        self.min_lr = float(cfg.min_lr)
        if not self.max_lr > self.min_lr >= 0.0:
            raise ConfigError(
                f"optimization.lr={lrs} with lr_scheduler.min_lr={self.min_lr}: cosine anneals from "
                "lr (the peak, --lr) down to min_lr (the floor, --min-lr), so need lr > min_lr >= 0, "
                "e.g. --lr 1e-3 --min-lr 1e-6")
        self.warmup_updates = int(cfg.warmup_updates)
        if self.warmup_updates < 0:
            raise ConfigError(f"lr_scheduler.warmup_updates={self.warmup_updates}: must be >= 0")
        init = float(cfg.warmup_init_lr)
        self.warmup_init_lr = self.min_lr if init < 0 else init
        self.t_mult = float(cfg.t_mult)
        if not self.t_mult >= 1.0:
            raise ConfigError(f"lr_scheduler.t_mult={self.t_mult}: must be >= 1 (each restart period "
                             "is t_mult times the previous; 1 keeps them equal)")
        self.lr_shrink = float(cfg.lr_shrink)
        if not self.lr_shrink > 0.0:
            raise ConfigError(f"lr_scheduler.lr_shrink={self.lr_shrink}: must be > 0 (1 keeps every "
                             "cycle's peak and floor)")
        self.period = self._first_period(cfg)
        self.optimizer.set_lr(self.warmup_init_lr)

    def _first_period(self, cfg: Any) -> float:
        period = float(cfg.lr_period_updates)
        if period > 0:
            return period
        max_update = int(cfg.max_update or 0)
        if max_update - self.warmup_updates <= 0:
            raise ConfigError(
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

