"""Helpers to pad, filter and batch token sequences."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["batch_by_size", "collate_tokens", "filter_by_size", "numpy_seed"]


def collate_tokens(
    values: Sequence[torch.Tensor],
    pad_idx: int,
    left_pad: bool = False,
    pad_to_length: Optional[int] = None,
    pad_to_multiple: int = 1,
) -> torch.Tensor:
    """Stack 1-D tensors of different lengths into one padded 2-D tensor.

    Args:
        values: the sequences, each of shape (T_i,).
        pad_idx: value written in the padding positions.
        left_pad: pad on the left (sequences end-aligned) instead of the right.
        pad_to_length: make the width at least this.
        pad_to_multiple: round the width up to a multiple of this.

    Returns:
        A tensor of shape (B, T) with the dtype of the first value, where
        T >= max(T_i).

    Raises:
        ValueError: if ``values`` is empty or a value is not 1-D.
    """
    if len(values) == 0:
        raise ValueError("collate_tokens needs at least one sequence; got an empty list")
    for position, value in enumerate(values):
        if value.dim() != 1:
            raise ValueError(
                f"collate_tokens expects 1-D sequences; sequence {position} has shape {tuple(value.shape)}"
            )
    width = max(value.size(0) for value in values)
    if pad_to_length is not None:
        width = max(width, pad_to_length)
    if pad_to_multiple > 1 and width % pad_to_multiple != 0:
        width += pad_to_multiple - width % pad_to_multiple

    batch = values[0].new_full((len(values), width), pad_idx)  # (B, T)
    for row, value in enumerate(values):
        length = value.size(0)
        if left_pad:
            batch[row, width - length :] = value
        else:
            batch[row, :length] = value
    return batch


def filter_by_size(
    indices: np.ndarray,
    sizes: np.ndarray,
    max_size: Union[int, Sequence[int]],
    raise_exception: bool = False,
) -> Tuple[np.ndarray, List[int]]:
    """Drop the samples longer than ``max_size``.

    Args:
        indices: sample ids to filter, in the order to keep.
        sizes: size of every sample, shape (N,), or (N, K) for samples with K parts
            (e.g. source and target) with ``max_size`` a K-tuple.
        max_size: the largest size kept (per part when ``sizes`` is 2-D).
        raise_exception: raise instead of returning the dropped ids.

    Returns:
        ``(kept_indices, ignored)``: the kept ids as an int64 array, in input order,
        and the dropped ids as a list.

    Raises:
        ValueError: with ``raise_exception``, if any sample is too long (the message
            names the first offenders, their size and the limit).
    """
    indices = np.asarray(indices, dtype=np.int64)
    sample_sizes = np.asarray(sizes)[indices]
    limits = np.asarray(max_size)
    too_long = sample_sizes > limits
    if too_long.ndim > 1:
        too_long = too_long.any(axis=tuple(range(1, too_long.ndim)))
    ignored = indices[too_long].tolist()
    if ignored and raise_exception:
        examples = ", ".join(f"sample {i} (size {np.asarray(sizes)[i].tolist()})" for i in ignored[:5])
        raise ValueError(
            f"{len(ignored)} samples are longer than the maximum size {limits.tolist()}: {examples}; "
            f"raise --max-positions/--tokens-per-sample or allow skipping with --skip-invalid-size-inputs-valid-test"
        )
    return indices[~too_long], ignored


def batch_by_size(
    indices: np.ndarray,
    num_tokens_fn: Optional[Callable[[int], int]] = None,
    num_tokens_vec: Optional[np.ndarray] = None,
    max_tokens: Optional[int] = None,
    max_sentences: Optional[int] = None,
    required_batch_size_multiple: int = 1,
) -> List[np.ndarray]:
    """Group samples, in the given order, into batches bounded in tokens and sentences.

    Batching is greedy: samples are added to the current batch while the padded cost
    ``max_length_in_batch * num_sentences`` stays within ``max_tokens`` and the count
    within ``max_sentences``. When a batch is closed, only the largest multiple of
    ``required_batch_size_multiple`` is emitted and the rest carried into the next
    batch (a batch smaller than the multiple is emitted whole).

    Args:
        indices: sample ids, in the order to batch them (usually sorted by size).
        num_tokens_fn: returns the number of tokens of a sample id.
        num_tokens_vec: the number of tokens of each id in ``indices``, shape
            (len(indices),); faster than ``num_tokens_fn`` and used when given.
        max_tokens: bound on ``max_length * num_sentences`` per batch.
        max_sentences: bound on the number of samples per batch.
        required_batch_size_multiple: preferred multiple of batch sizes.

    Returns:
        The batches, each an int64 array of sample ids. With neither ``max_tokens`` nor
        ``max_sentences`` every sample is its own batch.

    Raises:
        ValueError: if a single sample has more than ``max_tokens`` tokens, if neither
            ``num_tokens_fn`` nor ``num_tokens_vec`` is given while ``max_tokens`` is, or
            if a bound is not positive.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}; set --max-tokens to a positive number")
    if max_sentences is not None and max_sentences <= 0:
        raise ValueError(f"max_sentences must be positive, got {max_sentences}; set --batch-size to a positive number")
    if required_batch_size_multiple < 1:
        raise ValueError(f"required_batch_size_multiple must be >= 1, got {required_batch_size_multiple}")
    if max_tokens is None and max_sentences is None:
        max_sentences = 1

    if num_tokens_vec is not None:
        lengths = np.asarray(num_tokens_vec, dtype=np.int64).reshape(-1)
        if len(lengths) != len(indices):
            raise ValueError(f"num_tokens_vec has {len(lengths)} entries but there are {len(indices)} indices")
    elif num_tokens_fn is not None:
        lengths = np.fromiter((num_tokens_fn(int(i)) for i in indices), dtype=np.int64, count=len(indices))
    elif max_tokens is None:
        lengths = np.zeros(len(indices), dtype=np.int64)
    else:
        raise ValueError("batch_by_size with max_tokens needs num_tokens_fn or num_tokens_vec")

    if max_tokens is not None and len(lengths) and lengths.max() > max_tokens:
        position = int(np.argmax(lengths > max_tokens))
        raise ValueError(
            f"sample {int(indices[position])} has {int(lengths[position])} tokens, more than max_tokens={max_tokens}; "
            f"raise --max-tokens or lower --tokens-per-sample"
        )
    if max_tokens is None and max_sentences is not None:
        # Only the sentence bound applies: fixed-size chunks, no per-sample loop needed.
        return [indices[start : start + max_sentences] for start in range(0, len(indices), max_sentences)]
    return _greedy_batches(indices, lengths, max_tokens, max_sentences, required_batch_size_multiple)


def _greedy_batches(
    indices: np.ndarray,
    lengths: np.ndarray,
    max_tokens: Optional[int],
    max_sentences: Optional[int],
    multiple: int,
) -> List[np.ndarray]:
    """The greedy loop of :func:`batch_by_size`: one pass over samples, plain ints."""
    token_limit = max_tokens if max_tokens is not None else float("inf")
    sentence_limit = max_sentences if max_sentences is not None else float("inf")
    batches: List[np.ndarray] = []
    batch_start = 0  # the current batch is indices[batch_start:position]
    batch_max_len = 0
    length_list = lengths.tolist()
    for position, length in enumerate(length_list):
        while True:
            batch_size = position - batch_start
            grown_max = max(batch_max_len, length)
            if batch_size == 0 or (
                batch_size + 1 <= sentence_limit and (batch_size + 1) * grown_max <= token_limit
            ):
                batch_max_len = grown_max
                break
            # Close the batch: keep its largest multiple, carry the remainder forward.
            emitted = batch_size - batch_size % multiple if batch_size >= multiple else batch_size
            batches.append(indices[batch_start : batch_start + emitted])
            batch_start += emitted
            batch_max_len = max(length_list[batch_start:position], default=0)
    if batch_start < len(indices):
        batches.append(indices[batch_start:])
    return batches


@contextlib.contextmanager
def numpy_seed(seed: Optional[int], *addl_seeds: int) -> Iterator[None]:
    """Seed numpy's global RNG for the duration of a ``with`` block, then restore it.

    Args:
        seed: base seed; None leaves the RNG untouched.
        addl_seeds: further non-negative integers mixed into the seed (e.g. the epoch).

    Raises:
        ValueError: if a seed is negative.
    """
    if seed is None:
        yield
        return
    seeds = [int(seed), *(int(s) for s in addl_seeds)]
    if any(s < 0 for s in seeds):
        raise ValueError(f"numpy_seed needs non-negative seeds, got {seeds}")
    saved_state = np.random.get_state()
    # SeedSequence mixes any number of arbitrarily large integers into a 32-bit key.
    np.random.seed(np.random.SeedSequence(seeds).generate_state(4))
    try:
        yield
    finally:
        np.random.set_state(saved_state)
