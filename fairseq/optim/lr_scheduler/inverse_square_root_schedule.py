"""Linear warmup, then decay proportional to the inverse square root of the update number."""
from dataclasses import dataclass, field
from typing import Any, List

from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.errors import ConfigError
from fairseq.optim.fairseq_optimizer import first_lr
from fairseq.optim.lr_scheduler import register_lr_scheduler
from fairseq.optim.lr_scheduler.fairseq_lr_scheduler import FairseqLRScheduler


@dataclass
class InverseSquareRootLRScheduleConfig(FairseqDataclass):
    warmup_updates: int = field(
        default=4000, metadata={"help": "warm the lr up linearly over this many updates", "min": 0}
    )
    warmup_init_lr: float = field(
        default=-1, metadata={"help": "lr at update 0; -1 means 0 with warmup, else the peak lr",
                               "min": 0, "also": (-1,)}
    )
    lr: List[float] = II("optimization.lr")


@register_lr_scheduler("inverse_sqrt", dataclass=InverseSquareRootLRScheduleConfig)
class InverseSquareRootSchedule(FairseqLRScheduler):
    """``lr(n) = init + n (peak - init) / W`` for ``n < W``, then ``peak * sqrt(W / n)``.

    ``W`` is ``warmup_updates`` and ``peak`` the first value of ``optimization.lr``.
    """

    def __init__(self, cfg: Any, optimizer: Any):
        super().__init__(cfg, optimizer)
        lr = list(cfg.lr) if not isinstance(cfg.lr, (int, float)) else [cfg.lr]
        if len(lr) > 1:
            raise ConfigError(
                f"lr_scheduler=inverse_sqrt takes one lr, got optimization.lr={lr}; "
                "use lr_scheduler=fixed for per-epoch lr lists")
        self.peak_lr = first_lr(lr)
        self.warmup_updates = max(int(cfg.warmup_updates), 0)
        init = float(cfg.warmup_init_lr)
        self.warmup_init_lr = init if init >= 0 else (0.0 if self.warmup_updates > 0 else self.peak_lr)
        self.lr_step = ((self.peak_lr - self.warmup_init_lr) / self.warmup_updates
                        if self.warmup_updates > 0 else 0.0)
        self.decay_factor = self.peak_lr * max(self.warmup_updates, 1) ** 0.5
        self.optimizer.set_lr(self.warmup_init_lr)

    def lr_at(self, num_updates: int) -> float:
        if num_updates < self.warmup_updates:
            return self.warmup_init_lr + num_updates * self.lr_step
        return self.decay_factor * max(num_updates, 1) ** -0.5

    def step_update(self, num_updates: int) -> float:
        lr = self.lr_at(num_updates)
        self.optimizer.set_lr(lr)
        return lr
