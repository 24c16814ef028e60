"""A dictionary cut down to its first (most frequent) symbols, for a smaller output layer."""
from __future__ import annotations

import copy

from fairseq.data.dictionary import Dictionary

__all__ = ["truncate_dictionary"]


def truncate_dictionary(dictionary: Dictionary, size: int) -> Dictionary:
    """The first ``size`` symbols of ``dictionary``, as a new :class:`Dictionary`.

    ``fairseq-preprocess`` orders symbols by decreasing frequency after the special ones, so
    this keeps the ``size`` most frequent types. Ids are unchanged; a symbol cut off looks up
    as :meth:`~Dictionary.unk` and an id at or beyond ``size`` prints as the unk word.

    Args:
        dictionary: the full vocabulary (left untouched).
        size: number of symbols to keep; ``size <= 0`` or ``size >= len(dictionary)`` keeps
            them all and returns ``dictionary`` itself.

    Returns:
        A dictionary of ``min(size, len(dictionary))`` symbols.

    Raises:
        ValueError: if ``size`` would cut off special symbols (it is positive but smaller
            than ``dictionary.nspecial``).
    """
    if size <= 0 or size >= len(dictionary):
        return dictionary
    if size < dictionary.nspecial:
        raise ValueError(
            f"task.output_dictionary_size={size} would drop special symbols; it must be at least "
            f"{dictionary.nspecial} (or -1 for the whole dictionary of {len(dictionary)} symbols)"
        )
    truncated = copy.copy(dictionary)  # keeps the special words and their ids
    truncated.symbols = dictionary.symbols[:size]
    truncated.count = dictionary.count[:size]
    truncated.indices = {symbol: index for symbol, index in dictionary.indices.items() if index < size}
    return truncated
