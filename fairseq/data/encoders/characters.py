"""One symbol per character (``characters``) or per UTF-8 byte (``bytes``).

Spaces become ``▁`` so that symbols can be joined by spaces and split again.
"""
import re
from typing import Dict

from fairseq.data.encoders import register_bpe
from fairseq.dataclass import FairseqDataclass

SPACE = " "
SPACE_ESCAPE = "\u2581"
_WHITESPACE = re.compile(r"\s+")


@register_bpe("characters", dataclass=FairseqDataclass)
class Characters:
    """One symbol per character; spaces become ``▁`` (no settings)."""

    def __init__(self, *unused):
        pass

    @staticmethod
    def encode(x: str) -> str:
        return SPACE.join(x.replace(SPACE, SPACE_ESCAPE))

    @staticmethod
    def decode(x: str) -> str:
        return x.replace(SPACE, "").replace(SPACE_ESCAPE, SPACE)


def _byte_chars() -> Dict[int, str]:
    # printable Latin-1 bytes stand for themselves; the rest move past 255 (no-break space
    # is moved too, so that every symbol is visible)
    printable = set(range(32, 127)) | set(range(161, 173)) | set(range(174, 256))
    return {b: chr(b) if b in printable else chr(256 + b) for b in range(256)}


BYTE_TO_CHAR = _byte_chars()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def best_utf8_decode(data: bytes) -> str:
    """Decode, dropping the fewest bytes needed when generation produced invalid UTF-8."""
    return data.decode("utf-8", errors="ignore")


@register_bpe("bytes", dataclass=FairseqDataclass)
class Bytes:
    """One symbol per UTF-8 byte, written as a printable character (no settings)."""

    def __init__(self, *unused):
        pass

    @staticmethod
    def encode(x: str) -> str:
        normalized = _WHITESPACE.sub(SPACE, x)
        chars = "".join(BYTE_TO_CHAR[b] for b in normalized.encode("utf-8"))
        return SPACE.join(chars.replace(SPACE, SPACE_ESCAPE))

    @staticmethod
    def decode(x: str) -> str:
        chars = x.replace(SPACE, "").replace(SPACE_ESCAPE, SPACE)
        return best_utf8_decode(bytes(CHAR_TO_BYTE[c] for c in chars if c in CHAR_TO_BYTE))
