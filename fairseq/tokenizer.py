"""Whitespace tokenization used to build dictionaries and binarize text."""
import re
from typing import List

__all__ = ["SPACE_NORMALIZER", "tokenize_line"]

# Any run of whitespace (fairseq's name; tokenize_line gives the same tokens as
# collapsing such runs to one space and splitting).
SPACE_NORMALIZER = re.compile(r"\s+")


def tokenize_line(line: str) -> List[str]:
    """Split a line of text into tokens on any run of whitespace.

    Leading and trailing whitespace (including the newline) is ignored, and runs of
    spaces, tabs or other whitespace count as one separator.

    Args:
        line: one line of text, with or without its trailing newline.

    Returns:
        The tokens of the line, in order; an empty list for a blank line.
    """
    # str.split() with no argument already collapses whitespace runs and strips the ends.
    return line.split()
