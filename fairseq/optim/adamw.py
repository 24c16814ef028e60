"""``--optimizer adamw``: the same decoupled-weight-decay Adam, with AdamW's usual decay default.

fairseq itself has only ``adam`` (already AdamW-style). ``adamw`` exists so that configs written
for other toolkits work unchanged; it differs from ``adam`` only in ``weight_decay`` defaulting
to 0.01.
"""
from dataclasses import dataclass, field

from fairseq.optim import register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig


@dataclass
class FairseqAdamWConfig(FairseqAdamConfig):
    """``adam``'s fields; only the weight decay default differs."""

    weight_decay: float = field(default=0.01, metadata={"help": "decoupled weight decay", "min": 0})


@register_optimizer("adamw", dataclass=FairseqAdamWConfig)
class FairseqAdamW(FairseqAdam):
    """``torch.optim.AdamW`` with ``weight_decay`` 0.01 by default; otherwise exactly ``adam``."""
