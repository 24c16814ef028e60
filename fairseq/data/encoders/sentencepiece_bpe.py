"""SentencePiece models (``.model`` files), unigram or BPE."""
from dataclasses import dataclass, field

from fairseq.data.encoders import register_bpe
from fairseq.data.encoders.errors import local_file, require
from fairseq.dataclass import FairseqDataclass

WORD_START = "\u2581"


@dataclass
class SentencepieceConfig(FairseqDataclass):
    sentencepiece_model: str = field(default="???", metadata={"help": "path to the .model file"})
    sentencepiece_enable_sampling: bool = field(default=False,
                                                metadata={"help": "sample a segmentation (subword "
                                                          "regularization) instead of the best one"})
    sentencepiece_alpha: float = field(default=0.1,
                                       metadata={"help": "smoothing of the sampled segmentation "
                                                 "(with sentencepiece_enable_sampling)"})


@register_bpe("sentencepiece", dataclass=SentencepieceConfig)
class SentencepieceBPE:
    """text <-> space-separated SentencePiece pieces."""

    def __init__(self, cfg):
        spm = require("sentencepiece", "sentencepiece", "the sentencepiece BPE")
        self.enable_sampling = cfg.sentencepiece_enable_sampling
        self.alpha = cfg.sentencepiece_alpha
        self.sp = spm.SentencePieceProcessor()
        self.sp.Load(local_file("bpe.sentencepiece_model", cfg.sentencepiece_model))

    def encode(self, x: str) -> str:
        pieces = self.sp.Encode(x, out_type=str, enable_sampling=self.enable_sampling,
                                alpha=self.alpha, nbest_size=-1 if self.enable_sampling else 0)
        return " ".join(pieces)

    def decode(self, x: str) -> str:
        return x.replace(" ", "").replace(WORD_START, " ").strip()

    def is_beginning_of_word(self, x: str) -> bool:
        if x in ("<unk>", "<s>", "</s>", "<pad>"):
            return True
        return x.startswith(WORD_START)
