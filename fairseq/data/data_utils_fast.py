"""Group ordered samples into batches bounded in tokens and sentences.

Pure Python/numpy counterparts of fairseq's compiled ``data_utils_fast`` helpers, with the
same names, arguments and results, so nothing has to be compiled at install time.

The batching rule (fairseq's): starting at the first sample not yet batched, take the
longest run of samples whose padded cost ``count * max_length`` stays within
``max_tokens`` and whose ``count`` stays within ``max_sentences`` (a bound ``<= 0`` is
disabled). If that run has more than ``bsz_mult`` samples it is cut down to a multiple of
``bsz_mult``; the samples cut off start the next batch.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import numpy as np

__all__ = ["batch_by_size_fn", "batch_by_size_vec", "batch_fixed_shapes_fast"]


def _batch_ends(lengths: List[int], max_tokens: int, max_sentences: int, bsz_mult: int) -> List[int]:
    """End position (exclusive) of every batch over samples of ``lengths`` tokens."""
    total = len(lengths)
    token_bound = max_tokens if max_tokens > 0 else None
    sentence_bound = max_sentences if max_sentences > 0 else total
    ends: List[int] = []
    start = 0
    while start < total:
        stop = min(total, start + sentence_bound)
        if token_bound is None:
            position = stop
        else:
            longest = 0
            position = start
            while position < stop:  # the hot loop: plain ints only
                length = lengths[position]
                if length > longest:
                    longest = length
                if longest * (position - start + 1) > token_bound:
                    break
                position += 1
        count = position - start
        if count > bsz_mult:
            count -= count % bsz_mult
        start += count
        ends.append(start)
    return ends


def batch_by_size_vec(
    indices: np.ndarray,
    num_tokens_vec: np.ndarray,
    max_tokens: int,
    max_sentences: int,
    bsz_mult: int,
) -> List[np.ndarray]:
    """Batch ``indices`` (in order) given the number of tokens of each.

    Args:
        indices: sample ids in batching order, shape (N,).
        num_tokens_vec: tokens of ``indices[i]`` at position ``i``, shape (N,).
        max_tokens: bound on ``count * max_length`` per batch; ``<= 0`` disables it.
        max_sentences: bound on samples per batch; ``<= 0`` disables it.
        bsz_mult: batches larger than this are cut to a multiple of it.

    Returns:
        The batches, consecutive slices of ``indices`` (numpy arrays).

    Raises:
        ValueError: if one sample alone has more than ``max_tokens`` tokens, or the
            two arrays differ in length.
    """
    indices = np.asarray(indices)
    if len(indices) == 0:
        return []
    lengths = np.asarray(num_tokens_vec, dtype=np.int64).reshape(-1)
    if len(lengths) != len(indices):
        raise ValueError(f"num_tokens_vec has {len(lengths)} entries but there are {len(indices)} indices")
    if max_tokens > 0 and int(lengths.max()) > max_tokens:
        position = int(np.argmax(lengths > max_tokens))
        raise ValueError(
            f"sample {int(indices[position])} has {int(lengths[position])} tokens, more than "
            f"max_tokens={max_tokens}; raise --max-tokens or lower --tokens-per-sample"
        )
    ends = _batch_ends(lengths.tolist(), int(max_tokens), int(max_sentences), max(int(bsz_mult), 1))
    return np.split(indices, ends[:-1])


def batch_by_size_fn(
    indices: np.ndarray,
    num_tokens_fn: Callable[[int], int],
    max_tokens: int,
    max_sentences: int,
    bsz_mult: int,
) -> List[np.ndarray]:
    """Like :func:`batch_by_size_vec`, with tokens given by ``num_tokens_fn(index)``."""
    indices = np.asarray(indices)
    num_tokens_vec = np.fromiter((num_tokens_fn(index) for index in indices), dtype=np.int64, count=len(indices))
    return batch_by_size_vec(indices, num_tokens_vec, max_tokens, max_sentences, bsz_mult)


def batch_fixed_shapes_fast(
    indices: np.ndarray,
    num_tokens_fn: Callable[[int], int],
    fixed_shapes_sorted: Sequence[Sequence[int]],
) -> List[List[int]]:
    """Batch ``indices`` so that every batch fits one of the allowed shapes.

    Args:
        indices: sample ids in batching order.
        num_tokens_fn: tokens of a sample id.
        fixed_shapes_sorted: ``(max_sentences, max_length)`` rows, sorted by batch size
            then length; a batch closes when adding a sample fits no shape.

    Returns:
        The batches, as lists of sample ids.
    """
    shapes = [(int(bsz), int(length)) for bsz, length in np.asarray(fixed_shapes_sorted).tolist()]
    batches: List[List[int]] = []
    batch: List[int] = []
    longest = 0
    first_shape = 0  # shapes before this one are known not to fit the growing batch
    for index in np.asarray(indices).tolist():
        length = int(num_tokens_fn(index))
        longest = max(longest, length)
        fitting = next(
            (k for k in range(first_shape, len(shapes)) if len(batch) + 1 <= shapes[k][0] and longest <= shapes[k][1]),
            -1,
        )
        if fitting == -1:
            batches.append(batch)
            # the sample opens the next batch, and counts in its length
            batch, longest, first_shape = [], length, 0
        else:
            first_shape = fitting
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches
