"""Adam with decoupled weight decay, as fairseq's ``--optimizer adam`` behaves."""
from dataclasses import dataclass, field
from typing import Any, List

import torch
from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.errors import ConfigError
from fairseq.dataclass.values import parse_sequence
from fairseq.optim import register_optimizer
from fairseq.optim.fairseq_optimizer import FairseqOptimizer, check_non_negative, fast_path, first_lr


@dataclass
class FairseqAdamConfig(FairseqDataclass):
    adam_betas: List[float] = field(
        default_factory=lambda: [0.9, 0.999],
        metadata={"help": "betas for Adam; a list [0.9,0.98] or the string '(0.9, 0.98)'",
                  "len": 2, "min": 0, "below": 1},
    )
    adam_eps: float = field(default=1e-8, metadata={"help": "epsilon for Adam", "min": 0})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay", "min": 0})
    amsgrad: bool = field(
        default=False,
        metadata={"help": "use the AMSGrad variant (the maximum of past second moments)"},
    )
    lr: List[float] = II("optimization.lr")


def parse_betas(value: Any) -> List[float]:
    """Betas from a list, a tuple, or the legacy string ``'(0.9, 0.98)'`` (no ``eval``).

    Args:
        value: ``[0.9, 0.98]``, ``(0.9, 0.98)``, ``"(0.9, 0.98)"``, ``"0.9,0.98"`` or a ListConfig.

    Returns:
        The two betas as floats.

    Raises:
        ConfigError: naming ``optimizer.adam_betas`` when the value is not two numbers in [0, 1).
    """
    try:
        betas = parse_sequence(value, float)
    except ValueError as e:
        raise ConfigError(f"optimizer.adam_betas={value!r}: {e}; write e.g. [0.9,0.98]") from e
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"optimizer.adam_betas={value!r}: need two values in [0, 1), e.g. [0.9,0.98]")
    return betas


@register_optimizer("adam", dataclass=FairseqAdamConfig)
class FairseqAdam(FairseqOptimizer):
    """``torch.optim.AdamW`` (decoupled weight decay), fused on devices that support it.

    The weight decay is decoupled (``p <- p - lr * weight_decay * p``, as in AdamW), which is
    what fairseq's ``adam`` does; ``amsgrad`` keeps the fused path, which supports it.
    """

    def __init__(self, cfg: Any, params: List[torch.nn.Parameter]):
        super().__init__(cfg)
        params = list(params)
        check_non_negative(cfg, "adam_eps", "weight_decay")
        kwargs = dict(lr=first_lr(cfg.lr), betas=tuple(parse_betas(cfg.adam_betas)),
                      eps=float(cfg.adam_eps), weight_decay=float(cfg.weight_decay),
                      amsgrad=bool(cfg.amsgrad))
        self._optimizer = torch.optim.AdamW(params, **kwargs, **fast_path(params))
