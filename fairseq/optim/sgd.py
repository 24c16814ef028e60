"""``--optimizer sgd``: stochastic gradient descent, with optional (heavy-ball) momentum."""
from dataclasses import dataclass, field
from typing import Any, List

import torch
from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.optim import register_optimizer
from fairseq.optim.fairseq_optimizer import check_non_negative, fast_path
from fairseq.optim.fairseq_optimizer import FairseqOptimizer, first_lr


@dataclass
class FairseqSGDConfig(FairseqDataclass):
    momentum: float = field(default=0.0, metadata={"help": "momentum factor (0: plain SGD)", "min": 0})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty added to the gradient",
                                                           "min": 0})
    lr: List[float] = II("optimization.lr")


@register_optimizer("sgd", dataclass=FairseqSGDConfig)
class FairseqSGD(FairseqOptimizer):
    """``torch.optim.SGD``: ``b <- m b + g + wd p``; ``p <- p - lr b`` (``b = g`` without momentum)."""

    def __init__(self, cfg: Any, params: List[torch.nn.Parameter]):
        super().__init__(cfg)
        params = list(params)
        check_non_negative(cfg, "momentum", "weight_decay")
        self._optimizer = torch.optim.SGD(params, lr=first_lr(cfg.lr), momentum=float(cfg.momentum),
                                          weight_decay=float(cfg.weight_decay), **fast_path(params))
