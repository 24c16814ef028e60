"""``--optimizer adamw``: the same decoupled-weight-decay Adam, with AdamW's usual decay default.

fairseq itself has only ``adam`` (already AdamW-style). ``adamw`` exists so that configs written
for other toolkits work unchanged; it differs from ``adam`` only in ``weight_decay`` defaulting
to 0.01.
"""
from dataclasses import dataclass, field
from typing import List

from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.optim import register_optimizer
from fairseq.optim.adam import FairseqAdam


@dataclass
class FairseqAdamWConfig(FairseqDataclass):
    adam_betas: List[float] = field(
        default_factory=lambda: [0.9, 0.999],
        metadata={"help": "betas for Adam; a list [0.9,0.98] or the string '(0.9, 0.98)'"},
    )
    adam_eps: float = field(default=1e-8, metadata={"help": "epsilon for Adam"})
    weight_decay: float = field(default=0.01, metadata={"help": "decoupled weight decay"})
    amsgrad: bool = field(
        default=False,
        metadata={"help": "use the AMSGrad variant (the maximum of past second moments)"},
    )
    lr: List[float] = II("optimization.lr")


@register_optimizer("adamw", dataclass=FairseqAdamWConfig)
class FairseqAdamW(FairseqAdam):
    """``torch.optim.AdamW`` with ``weight_decay`` 0.01 by default; otherwise exactly ``adam``."""
