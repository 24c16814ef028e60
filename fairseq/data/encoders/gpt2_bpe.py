"""GPT-2's byte-level BPE, read from local ``encoder.json`` and ``vocab.bpe`` files.

Text is cut into word-like pieces (a leading space belongs to the word after it), each piece's
UTF-8 bytes are written as printable characters, and the merges of ``vocab.bpe`` are applied
lowest rank first. ``encode`` returns the BPE ids as a space-separated string (the symbols of a
fairseq GPT-2 ``dict.txt``); ``decode`` inverts it exactly.
"""
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Tuple

from fairseq.data.encoders import register_bpe
from fairseq.data.encoders.errors import EncoderSetupError, local_file, require
from fairseq.dataclass import FairseqDataclass

DEFAULT_ENCODER_JSON = "https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe/encoder.json"
DEFAULT_VOCAB_BPE = "https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe/vocab.bpe"

# contractions, letters, digits, other symbols, each optionally after one space; then spaces
PIECE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=1)
def byte_to_char() -> Dict[int, str]:
    """A printable character for each byte: printable Latin-1 bytes stand for themselves, the
    others (controls, space, ...) are moved to code points from 256 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


class ByteLevelBPE:
    """The BPE model: ``encoder`` maps merged symbols to ids, ``merges`` are ranked pairs."""

    def __init__(self, encoder: Dict[str, int], merges: List[Tuple[str, str]]):
        regex = require("regex", "regex", "the gpt2 BPE")
        self.pattern = regex.compile(PIECE_PATTERN)
        self.encoder = encoder
        self.decoder = {i: s for s, i in encoder.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = byte_to_char()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.cache: Dict[str, List[str]] = {}

    def _merge(self, piece: str) -> List[str]:
        if piece in self.cache:
            return self.cache[piece]
        symbols = list(piece)
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        if len(self.cache) < 100_000:
            self.cache[piece] = symbols
        return symbols

    def encode(self, text: str) -> List[int]:
        ids = []
        for piece in self.pattern.findall(text):
            chars = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            for symbol in self._merge(chars):
                if symbol not in self.encoder:
                    raise EncoderSetupError(f"the BPE vocabulary has no symbol {symbol!r}: "
                                            "encoder.json and vocab.bpe do not belong together")
                ids.append(self.encoder[symbol])
        return ids

    def decode(self, ids: List[int]) -> str:
        chars = "".join(self.decoder.get(i, "") for i in ids)
        return bytes(self.byte_decoder[c] for c in chars).decode("utf-8", errors="replace")


def load_merges(path: str) -> List[Tuple[str, str]]:
    merges = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#version"):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise EncoderSetupError(f"{path}: {line!r} is not a merge ('a b')")
            merges.append((parts[0], parts[1]))
    return merges


@dataclass
class GPT2BPEConfig(FairseqDataclass):
    gpt2_encoder_json: str = field(default=DEFAULT_ENCODER_JSON,
                                   metadata={"help": "path to GPT-2's encoder.json (a local file)"})
    gpt2_vocab_bpe: str = field(default=DEFAULT_VOCAB_BPE,
                                metadata={"help": "path to GPT-2's vocab.bpe (a local file)"})


@register_bpe("gpt2", dataclass=GPT2BPEConfig)
class GPT2BPE:
    """fairseq's ``gpt2`` BPE: text <-> space-separated BPE ids."""

    def __init__(self, cfg):
        encoder_json = local_file("bpe.gpt2_encoder_json", cfg.gpt2_encoder_json)
        vocab_bpe = local_file("bpe.gpt2_vocab_bpe", cfg.gpt2_vocab_bpe)
        try:
            with open(encoder_json, encoding="utf-8") as f:
                encoder = json.load(f)
        except (OSError, ValueError) as e:
            raise EncoderSetupError(f"bpe.gpt2_encoder_json={encoder_json!r} is not a JSON "
                                    f"object of symbol -> id: {e}") from e
        self.bpe = ByteLevelBPE(encoder, load_merges(vocab_bpe))

    def encode(self, x: str) -> str:
        return " ".join(map(str, self.bpe.encode(x)))

    def decode(self, x: str) -> str:
        return self.bpe.decode([int(t) for t in x.split() if t.isdigit()])

    def is_beginning_of_word(self, x: str) -> bool:
        return self.decode(x).startswith(" ")
