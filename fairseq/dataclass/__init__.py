"""Typed configuration dataclasses and their conversions."""
from fairseq.dataclass.configs import FairseqConfig, FairseqDataclass
from fairseq.dataclass.constants import ChoiceEnum

__all__ = ["ChoiceEnum", "FairseqConfig", "FairseqDataclass"]
