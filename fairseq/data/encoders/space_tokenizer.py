"""The ``space`` tokenizer: runs of whitespace become one space."""
import re

from fairseq.data.encoders import register_tokenizer
from fairseq.dataclass import FairseqDataclass

_WHITESPACE = re.compile(r"\s+")


@register_tokenizer("space", dataclass=FairseqDataclass)
class SpaceTokenizer:
    """Runs of whitespace become one space; decoding keeps the text (no settings)."""

    def __init__(self, *unused):
        pass

    def encode(self, x: str) -> str:
        return _WHITESPACE.sub(" ", x)

    def decode(self, x: str) -> str:
        return x
