"""Helpers to pad, filter and batch token sequences."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from fairseq.errors import ConfigError, DataError

__all__ = ["SampleTooLargeError", "batch_by_size", "collate_tokens", "collect_filtered", "filter_by_size",
           "name_batch_limits", "numpy_seed", "positions_within_batch", "post_process"]


def collate_tokens(
    values: Sequence[torch.Tensor],
    pad_idx: int,
    eos_idx: Optional[int] = None,
    left_pad: bool = False,
    move_eos_to_beginning: bool = False,
    pad_to_length: Optional[int] = None,
    pad_to_multiple: int = 1,
    pad_to_bsz: Optional[int] = None,
) -> torch.Tensor:
    """Stack 1-D tensors of different lengths into one padded 2-D tensor.

    Args:
        values: the sequences, each of shape (T_i,).
        pad_idx: value written in the padding positions.
        eos_idx: with ``move_eos_to_beginning``, the id put first (default: each
            sequence's own last token).
        left_pad: pad on the left (sequences end-aligned) instead of the right.
        move_eos_to_beginning: rotate every sequence right by one, putting eos first
            (the shifted decoder input of translation).
        pad_to_length: make the width at least this.
        pad_to_multiple: round the width up to a multiple of this.
        pad_to_bsz: add all-pad rows until there are at least this many.

    Returns:
        A tensor of shape (B, T) with the dtype of the first value, where
        T >= max(T_i) and B >= len(values).

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
    rows = len(values) if pad_to_bsz is None else max(len(values), pad_to_bsz)

    batch = values[0].new_full((rows, width), pad_idx)  # (B, T)
    for row, value in enumerate(values):
        length = value.size(0)
        target = batch[row, width - length :] if left_pad else batch[row, :length]
        if move_eos_to_beginning and length > 0:
            target[0] = value[-1] if eos_idx is None else eos_idx
            target[1:] = value[:-1]
        else:
            target.copy_(value)
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
        DataError: with ``raise_exception``, if any sample is too long (the message
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
        raise DataError(
            f"{len(ignored)} samples are longer than the maximum size {limits.tolist()}: {examples}; "
            f"raise --max-positions/--tokens-per-sample or allow skipping with --skip-invalid-size-inputs-valid-test"
        )
    return indices[~too_long], ignored


class SampleTooLargeError(ConfigError):
    """One sample alone has more tokens than a batch may hold: no batch can be formed for it.

    Attributes:
        index: the sample's id.
        size: its number of tokens.
        max_tokens: the bound on the tokens of a batch.
        largest: the largest number of tokens of a sample being batched (the bound that fits all).
    """

    def __init__(self, index: int, size: int, max_tokens: int, largest: int, message: Optional[str] = None):
        self.index, self.size, self.max_tokens, self.largest = index, size, max_tokens, largest
        super().__init__(message or (
            f"sample {index} has {size} tokens, more than max_tokens={max_tokens} lets a batch hold; "
            f"give --max-tokens {largest} or more, or a --tokens-per-sample of {max_tokens} or less"))


def _flag(key: str) -> str:
    return "--" + key.rsplit(".", 1)[-1].replace("_", "-")


@contextlib.contextmanager
def name_batch_limits(split: str, data: Any, max_tokens_key: str = "dataset.max_tokens",
                      tokens_per_sample: Optional[int] = None, skip: Optional[bool] = None) -> Iterator[None]:
    """Turn a :class:`SampleTooLargeError` raised while batching ``split`` into one line that
    names the split, the sample and its size, and every way out: a larger ``max_tokens_key``,
    a smaller ``task.tokens_per_sample`` (when the samples are blocks of it), and, where the
    command has it (``skip`` is False: not given), ``--skip-invalid-size-inputs-valid-test``.

    Args:
        split: the split being batched (``train``, ``valid``).
        data: its data directory, for the message.
        max_tokens_key: the key bounding the batch (``dataset.max_tokens_valid`` in validation).
        tokens_per_sample: the task's block size, when lowering it shortens the samples.
        skip: None where skipping is not offered; else whether the skip flag is given.
    """
    try:
        yield
    except SampleTooLargeError as e:
        flag = _flag(max_tokens_key)
        fixes = [f"{flag} {e.largest} or more ({max_tokens_key})"]
        if tokens_per_sample:
            fixes.append(f"--tokens-per-sample {e.max_tokens} or less (task.tokens_per_sample, now "
                         f"{tokens_per_sample}) to cut the samples to fit")
        if skip is False:
            fixes.append("--skip-invalid-size-inputs-valid-test (dataset.skip_invalid_size_inputs_valid_test"
                         "=true) to skip such samples")
        raise SampleTooLargeError(
            e.index, e.size, e.max_tokens, e.largest,
            f"split {split!r} of {data}: sample {e.index} has {e.size} tokens, more than a batch may "
            f"hold ({max_tokens_key}={e.max_tokens}, {flag}); give {', or '.join(fixes)}") from None


def positions_within_batch(max_positions: Any, max_tokens: Optional[int]) -> Any:
    """The size limit of samples to keep when too large samples are skipped
    (``--skip-invalid-size-inputs-valid-test``): ``max_positions``, lowered to ``max_tokens``
    where a batch holds fewer tokens, so that a sample no batch can hold is skipped like one the
    model cannot take. A tuple limit (several parts per sample) is left as it is."""
    if not max_tokens or int(max_tokens) <= 0 or isinstance(max_positions, (tuple, list)):
        return max_positions
    return int(max_tokens) if max_positions is None else min(int(max_positions), int(max_tokens))


def _refuse_samples_over(indices: np.ndarray, lengths: np.ndarray, max_tokens: int) -> None:
    """Raise :class:`SampleTooLargeError` naming the largest of ``indices`` when its length
    (``lengths``, aligned with ``indices``) exceeds ``max_tokens``; one pass over the array."""
    if max_tokens <= 0 or len(lengths) == 0:
        return
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if len(lengths) != len(indices):
        return  # the batching below names this mismatch
    position = int(np.argmax(lengths))
    largest = int(lengths[position])
    if largest > max_tokens:
        raise SampleTooLargeError(int(indices[position]), largest, int(max_tokens), largest)


def batch_by_size(
    indices: Union[np.ndarray, Iterable[int]],
    num_tokens_fn: Optional[Callable[[int], int]] = None,
    num_tokens_vec: Optional[Union[np.ndarray, Iterable[int]]] = None,
    max_tokens: Optional[int] = None,
    max_sentences: Optional[int] = None,
    required_batch_size_multiple: int = 1,
    fixed_shapes: Optional[Sequence[Sequence[int]]] = None,
) -> List[np.ndarray]:
    """Group samples, in the given order, into batches bounded in tokens and sentences.

    From the first sample not yet batched, the longest run whose padded cost
    ``count * max_length`` stays within ``max_tokens`` and whose count stays within
    ``max_sentences`` forms a batch; a run longer than ``required_batch_size_multiple``
    is cut to a multiple of it and the rest starts the next batch (fairseq's rule; see
    :mod:`fairseq.data.data_utils_fast`).

    Args:
        indices: sample ids, in the order to batch them (usually sorted by size).
        num_tokens_fn: returns the number of tokens of a sample id.
        num_tokens_vec: the number of tokens of each id in ``indices``, shape
            (len(indices),); faster than ``num_tokens_fn`` and used when given.
        max_tokens: bound on ``max_length * num_sentences`` per batch; None (or
            ``<= 0``) for no bound.
        max_sentences: bound on the number of samples per batch; None (or ``<= 0``)
            for no bound.
        required_batch_size_multiple: preferred multiple of batch sizes.
        fixed_shapes: if given, ``(batch_size, max_length)`` shapes every batch must fit;
            ``max_sentences`` and ``required_batch_size_multiple`` are then ignored.

    Returns:
        The batches, each an int64 array of sample ids.

    Raises:
        SampleTooLargeError: if a single sample has more than ``max_tokens`` tokens (a
            ``ConfigError``, so a ``ValueError``; :func:`name_batch_limits` words it for a command).
        ValueError: if the token counts are needed but neither ``num_tokens_fn`` nor
            ``num_tokens_vec`` is given.
    """
    from fairseq.data.data_utils_fast import batch_by_size_fn, batch_by_size_vec, batch_fixed_shapes_fast

    max_tokens = int(max_tokens) if max_tokens is not None else -1
    max_sentences = int(max_sentences) if max_sentences is not None else -1
    bsz_mult = int(required_batch_size_multiple)
    if bsz_mult < 1:
        raise ValueError(f"required_batch_size_multiple must be >= 1, got {bsz_mult}")
    if not isinstance(indices, np.ndarray):
        indices = np.fromiter(indices, dtype=np.int64, count=-1)
    indices = indices.astype(np.int64, copy=False).reshape(-1)
    if num_tokens_vec is not None and not isinstance(num_tokens_vec, np.ndarray):
        num_tokens_vec = np.fromiter(num_tokens_vec, dtype=np.int64, count=-1)

    if fixed_shapes is not None:
        if num_tokens_fn is None:
            raise ValueError("batch_by_size with fixed_shapes needs num_tokens_fn")
        shapes = np.asarray(fixed_shapes, dtype=np.int64)
        # by batch size, then by length (fairseq's order)
        order = np.lexsort([shapes[:, 1].argsort(), shapes[:, 0].argsort()])
        batches = batch_fixed_shapes_fast(indices, num_tokens_fn, shapes[order])
        return [np.asarray(batch, dtype=np.int64) for batch in batches]
    if num_tokens_vec is None and num_tokens_fn is not None and max_tokens > 0:
        # counted once here, so that a sample too large is found before any batch is formed
        num_tokens_vec = np.fromiter((num_tokens_fn(i) for i in indices), dtype=np.int64, count=len(indices))
    if num_tokens_vec is not None:
        _refuse_samples_over(indices, num_tokens_vec, max_tokens)
        return batch_by_size_vec(indices, num_tokens_vec, max_tokens, max_sentences, bsz_mult)
    if num_tokens_fn is None:
        if max_tokens > 0:
            raise ValueError("batch_by_size with max_tokens needs num_tokens_fn or num_tokens_vec")
        return batch_by_size_vec(indices, np.zeros(len(indices), dtype=np.int64), max_tokens, max_sentences, bsz_mult)
    return batch_by_size_fn(indices, num_tokens_fn, max_tokens, max_sentences, bsz_mult)


@contextlib.contextmanager
def numpy_seed(seed: Optional[int], *addl_seeds: int) -> Iterator[None]:
    """Seed numpy's global RNG for the duration of a ``with`` block, then restore it.

    The seed is fairseq's: ``seed`` alone, or with additional seeds (e.g. the epoch)
    ``hash((seed, *addl_seeds)) % 1e6`` (Python's hash of a tuple of ints is the same in
    every process and run), so shuffles match fairseq's for the same seeds.

    Args:
        seed: base seed; None leaves the RNG untouched.
        addl_seeds: further integers mixed into the seed.
    """
    if seed is None:
        yield
        return
    if len(addl_seeds) > 0:
        seed = int(hash((seed, *addl_seeds)) % 1e6)
    saved_state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved_state)


def collect_filtered(function: Callable[[Any], bool], iterable: Iterable[Any], filtered: List[Any]) -> Iterator[Any]:
    """Yield the items for which ``function`` is true; append the others to ``filtered``."""
    for item in iterable:
        if function(item):
            yield item
        else:
            filtered.append(item)


def _filter_by_size_dynamic(
    indices: Iterable[int], size_fn: Callable[[int], Any], max_positions: Any, raise_exception: bool = False
) -> Tuple[np.ndarray, List[int]]:
    """Split ``indices`` into those whose ``size_fn(index)`` fits ``max_positions`` and the rest.

    ``max_positions`` is a number, a tuple compared component-wise (None matches
    anything), or a dict of such tuples compared on their common keys.
    """

    def fits(size: Any, limit: Any) -> bool:
        if isinstance(limit, (int, float)):
            return (max(size) if isinstance(size, tuple) else size) <= limit
        if isinstance(limit, dict):
            return all(fits(tuple(size[key]), tuple(limit[key])) for key in set(limit) & set(size))
        if not isinstance(size, (tuple, list, np.ndarray)):
            return all(size <= bound for bound in limit)
        return all(a is None or b is None or a <= b for a, b in zip(size, limit))

    ignored: List[int] = []
    kept = collect_filtered(lambda index: fits(size_fn(index), max_positions), indices, ignored)
    return np.fromiter(kept, dtype=np.int64, count=-1), ignored


_POST_PROCESS_MARKERS = {"sentencepiece": "\u2581", "wordpiece": "_", "letter": "|", "_EOW": "_EOW"}


def post_process(sentence: str, symbol: Optional[str]) -> str:
    """Undo a sub-word segmentation of decoded text (fairseq's ``--post-process``).

    Args:
        sentence: space-separated tokens.
        symbol: ``"sentencepiece"``, ``"wordpiece"``, ``"letter"``, ``"_EOW"`` (word
            boundaries marked by a symbol), ``"silence"`` (drop ``<SIL>``),
            ``"subword_nmt"``/``"@@ "``/``"@@"`` (continuation marker), ``"none"`` or None.

    Raises:
        NotImplementedError: on an unknown ``symbol``.
    """
    if symbol is None or symbol == "none":
        return sentence
    if symbol in _POST_PROCESS_MARKERS:
        return sentence.replace(" ", "").replace(_POST_PROCESS_MARKERS[symbol], " ").strip()
    if symbol == "silence":
        return _squeeze_spaces(sentence.replace("<SIL>", ""))
    if symbol in ("subword_nmt", "@@ ", "@@"):
        marker = "@@ " if symbol == "subword_nmt" else symbol
        return (sentence + " ").replace(marker, "").rstrip()
    raise NotImplementedError(
        f"unknown post_process option {symbol!r}; choose sentencepiece, wordpiece, letter, silence, _EOW, "
        f"subword_nmt, @@ , @@ or none"
    )


def _squeeze_spaces(text: str) -> str:
    """Collapse runs of spaces (only spaces) into one and strip the ends."""
    while "  " in text:
        text = text.replace("  ", " ")
    return text.strip()


def _extra_valid_splits(data: str) -> set:
    """Splits like ``valid1``, ``valid2`` (fairseq's ``valid*[0-9].*`` file names) in the data dirs."""
    import os
    import re

    found = set()
    for directory in (p for p in str(data).split(":") if p):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if re.match(r"valid*[0-9].*", name):
                found.add(os.path.splitext(name)[0])
    return found


def raise_if_valid_subsets_unintentionally_ignored(train_cfg: Any) -> None:
    """Stop when the data directory has validation splits (``valid1``, ...) the run would skip.

    Nothing is checked with ``dataset.ignore_unused_valid_subsets``,
    ``dataset.combine_valid_subsets`` or ``dataset.disable_validation`` set, or without
    ``task.data``; otherwise every split named like ``valid1`` must be in ``dataset.valid_subset``.

    Raises:
        ConfigError: (a ValueError) naming the ignored splits and the three ways out.
    """
    from fairseq.errors import ConfigError

    dataset = train_cfg.dataset
    task = train_cfg.task
    data = getattr(task, "data", None) if task is not None else None
    if dataset.ignore_unused_valid_subsets or dataset.combine_valid_subsets or dataset.disable_validation \
            or not data:
        return
    named = {s.strip() for s in str(dataset.valid_subset).split(",")}
    ignored = sorted(_extra_valid_splits(data) - named)
    if ignored:
        raise ConfigError(
            f"dataset.valid_subset={dataset.valid_subset!r} leaves the validation splits {ignored} of "
            f"{data} unused; validate on them with --valid-subset {','.join([dataset.valid_subset, *ignored])}, "
            "merge them into one with --combine-valid-subsets, or skip them with "
            "--ignore-unused-valid-subsets")
