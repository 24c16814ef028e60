"""Byte-level BPE through the ``tokenizers`` package (``vocab.json`` + ``merges.txt``)."""
from dataclasses import dataclass, field

from fairseq.data.encoders import register_bpe
from fairseq.data.encoders.errors import local_file, require
from fairseq.dataclass import FairseqDataclass


@dataclass
class HuggingFaceByteLevelBPEConfig(FairseqDataclass):
    bpe_merges: str = field(default="???", metadata={"help": "path to merges.txt"})
    bpe_vocab: str = field(default="???", metadata={"help": "path to vocab.json"})
    bpe_add_prefix_space: bool = field(default=False,
                                       metadata={"help": "add a space before the text, so its "
                                                 "first word is encoded like any other"})


@register_bpe("hf_byte_bpe", dataclass=HuggingFaceByteLevelBPEConfig)
class HuggingFaceByteLevelBPE:
    """text <-> space-separated ids of a ``tokenizers`` byte-level BPE."""

    def __init__(self, cfg):
        tokenizers = require("tokenizers", "tokenizers", "the hf_byte_bpe BPE")
        self.bpe = tokenizers.ByteLevelBPETokenizer(
            local_file("bpe.bpe_vocab", cfg.bpe_vocab), local_file("bpe.bpe_merges", cfg.bpe_merges),
            add_prefix_space=cfg.bpe_add_prefix_space)

    def encode(self, x: str) -> str:
        return " ".join(map(str, self.bpe.encode(x).ids))

    def decode(self, x: str) -> str:
        return self.bpe.decode([int(t) for t in x.split() if t.isdigit()])

    def is_beginning_of_word(self, x: str) -> bool:
        return self.decode(x).startswith(" ")
