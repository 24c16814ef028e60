"""Cut a dataset of sentences into blocks of tokens for language modelling."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from fairseq.data.fairseq_dataset import FairseqDataset

__all__ = ["TokenBlockDataset", "BREAK_MODES"]

BREAK_MODES = ("none", "complete", "complete_doc", "eos")

BlockItem = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class TokenBlockDataset(FairseqDataset):
    """View a dataset of sentences as one token stream cut into blocks (fairseq's semantics).

    The sentences are concatenated, in order, into a stream; a block is a contiguous
    span ``[start, end)`` of that stream. How spans are chosen depends on ``break_mode``:

    * ``None`` / ``"none"``: consecutive blocks of exactly ``block_size`` tokens,
      ignoring sentence boundaries; the last block may be shorter.
    * ``"complete"``: whole sentences packed greedily into blocks of at most
      ``block_size`` tokens. A sentence longer than ``block_size`` is kept whole, as a
      block of its own (longer than ``block_size``).
    * ``"complete_doc"``: like ``"complete"`` but a block never spans two documents.
      Documents are separated by sentences of exactly ``document_sep_len`` tokens (an
      empty line that became a lone eos); separators belong to no block.
    * ``"eos"``: one sentence per block; ``block_size`` is ignored (may be None).

    Only per-block arrays are kept (three int64 arrays, 48 bytes per block), computed
    with numpy from ``sizes`` alone: building the blocks of billions of tokens takes
    memory in proportion to the number of sentences and blocks, never to tokens. A block
    is materialised by reading only the sentences it overlaps.

    With ``include_targets`` an item is ``(source, target, past_target)``:

    * ``target``: the block's tokens ``x[start:end]``;
    * ``source``: the span shifted right by one, ``x[start-1:end-1]``;
    * ``past_target``: the span shifted right by two, ``x[start-2:end-2]``.

    Positions before the start of the sentence holding the block's first token are
    filled: the one right before it with eos, any earlier one with pad.

    Args:
        dataset: indexable sentences, each a 1-D tensor of ids (usually ending in eos).
        sizes: length of every sentence, shape (N,) (list, array or tensor).
        block_size: maximum number of tokens per block (None only in ``"eos"`` mode).
        pad: padding id.
        eos: end-of-sentence id.
        break_mode: one of None, ``"none"``, ``"complete"``, ``"complete_doc"``, ``"eos"``.
        include_targets: return ``(source, target, past_target)`` instead of the block.
        document_sep_len: length of a document separator sentence in ``"complete_doc"``
            mode: 1 when sentences end with eos, 0 otherwise.
        use_plasma_view, split_path, plasma_path: fairseq's shared-memory option; not
            supported (the arrays are small and shared copy-on-write by DataLoader workers).

    Raises:
        ValueError: on an empty dataset, an unknown ``break_mode``, a missing or negative
            ``block_size``, ``sizes`` whose length differs from the dataset's, or
            ``use_plasma_view``.
    """

    def __init__(
        self,
        dataset: Sequence[torch.Tensor],
        sizes: Union[np.ndarray, Sequence[int], torch.Tensor],
        block_size: Optional[int],
        pad: int,
        eos: int,
        break_mode: Optional[str] = None,
        include_targets: bool = False,
        document_sep_len: int = 1,
        use_plasma_view: bool = False,
        split_path: Optional[str] = None,
        plasma_path: Optional[str] = None,
    ) -> None:
        super().__init__()
        if use_plasma_view:
            raise ValueError("use_plasma_view is not supported by this package; drop --use-plasma-view")
        if len(dataset) == 0:
            raise ValueError("TokenBlockDataset needs at least one sentence; the dataset is empty")
        if len(sizes) != len(dataset):
            raise ValueError(f"sizes has {len(sizes)} entries but the dataset has {len(dataset)} sentences")
        self.dataset = dataset
        self.pad = pad
        self.eos = eos
        self.include_targets = include_targets
        self.break_mode = "none" if break_mode is None else str(break_mode)
        self.block_size = block_size
        self.document_sep_len = document_sep_len
        self._sizes, self._block_to_dataset_index, self._slice_indices = self._build_slice_indices(
            sizes, break_mode, document_sep_len, block_size
        )

    # ------------------------------------------------------ block boundaries

    @staticmethod
    def _build_slice_indices(
        sizes: Union[np.ndarray, Sequence[int], torch.Tensor],
        break_mode: Optional[str],
        document_sep_len: int,
        block_size: Optional[int],
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Compute ``(block sizes (B,), block_to_dataset_index (B, 3), slice_indices (B, 2))``.

        All three are int64. ``slice_indices[b]`` is the stream span of block ``b``;
        ``block_to_dataset_index[b]`` is (first sentence, offset of the block start in it,
        last sentence).
        """
        if torch.is_tensor(sizes):
            sizes = sizes.numpy()
        sentence_sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
        if len(sentence_sizes) and sentence_sizes.min() < 0:
            raise ValueError("sentence sizes must be >= 0")
        mode = "none" if break_mode is None else str(break_mode)
        if mode not in BREAK_MODES:
            choices = ", ".join(map(repr, BREAK_MODES))
            raise ValueError(f"unknown break_mode {break_mode!r}; choose one of None, {choices}")
        if block_size is None:
            if mode != "eos":
                raise ValueError(
                    f"block_size is required with break_mode {mode!r} (only 'eos' ignores it); "
                    f"set --tokens-per-sample"
                )
            block_size = 0
        block_size = int(block_size)
        if block_size < 0 or (mode == "none" and block_size == 0):
            raise ValueError(
                f"block_size must be a positive number of tokens, got {block_size}; check --tokens-per-sample"
            )

        # Stream offset of every sentence start, plus the total: shape (N + 1,).
        offsets = np.zeros(len(sentence_sizes) + 1, dtype=np.int64)
        np.cumsum(sentence_sizes, out=offsets[1:])
        total = int(offsets[-1])

        if mode == "none":
            starts = np.arange(0, total, block_size, dtype=np.int64)
            ends = np.minimum(starts + block_size, total)
        elif mode == "eos":
            starts, ends = offsets[:-1].copy(), offsets[1:].copy()
        else:
            is_separator = sentence_sizes == document_sep_len if mode == "complete_doc" else None
            starts, ends = _pack_sentences(offsets, block_size, is_separator)
        slice_indices = np.stack([starts, ends], axis=1)

        if mode == "eos":
            ids = np.arange(len(sentence_sizes), dtype=np.int64)
            block_to_dataset_index = np.stack([ids, np.zeros_like(ids), ids], axis=1)
        else:
            block_to_dataset_index = _locate_blocks(offsets, starts, ends)
        return ends - starts, block_to_dataset_index, slice_indices

    # ---------------------------------------------------------------- access

    @property
    def slice_indices(self) -> np.ndarray:
        """Stream span ``[start, end)`` of every block, int64 array of shape (B, 2)."""
        return self._slice_indices

    @property
    def sizes(self) -> np.ndarray:
        """Number of tokens of every block, int64 array of shape (B,)."""
        return self._sizes

    @property
    def block_to_dataset_index(self) -> np.ndarray:
        """(first sentence, start offset in it, last sentence) of every block, shape (B, 3)."""
        return self._block_to_dataset_index

    def attr(self, attr: str, index: int) -> Any:
        first_sentence = int(self._block_to_dataset_index[index][0])
        return self.dataset.attr(attr, first_sentence)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self._slice_indices)

    def num_tokens(self, index: int) -> int:
        """Number of tokens of block ``index``."""
        return int(self._sizes[index])

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        """Number of tokens of each block in ``indices``."""
        return self._sizes[np.asarray(indices, dtype=np.int64)]

    def size(self, index: int) -> int:
        """Number of tokens of block ``index``."""
        return int(self._sizes[index])

    def __getitem__(self, index: int) -> BlockItem:
        """Return block ``index``: a 1-D tensor, or ``(source, target, past_target)``.

        Raises:
            IndexError: if ``index`` is out of range.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"block {index} out of range for a TokenBlockDataset of {len(self)} blocks")
        first, offset, last = (int(v) for v in self._block_to_dataset_index[index])
        start, end = (int(v) for v in self._slice_indices[index])
        pieces = [self.dataset[sentence] for sentence in range(first, last + 1)]
        buffer = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        length = end - start
        item = buffer[offset : offset + length]
        if not self.include_targets:
            return item
        # x[start-2:end] where positions before the first sentence become pad, eos.
        missing = max(0, 2 - offset)
        fill = item.new([self.pad, self.eos][2 - missing :])
        context = torch.cat([fill, buffer[offset - 2 + missing : offset + length]])
        source = context[1 : 1 + length]
        past_target = context[:length]
        return source, item, past_target

    @property
    def supports_prefetch(self) -> bool:
        return getattr(self.dataset, "supports_prefetch", False)

    def prefetch(self, indices: Iterable[int]) -> None:
        """Prefetch the sentences the blocks of ``indices`` overlap."""
        needed = set()
        for index in indices:
            first, _, last = (int(v) for v in self._block_to_dataset_index[index])
            needed.update(range(first, last + 1))
        self.dataset.prefetch(sorted(needed))  # type: ignore[attr-defined]

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped sentences (e.g. random crops redrawn each epoch).

        Block boundaries never depend on the epoch: they are computed from ``sizes`` once,
        so a wrapped dataset may change its tokens per epoch but not its sizes.
        """
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def _pack_sentences(
    offsets: np.ndarray, block_size: int, is_separator: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy packing of whole sentences into blocks, vectorised.

    A block opened at sentence ``i`` takes sentences while the block stays within
    ``block_size`` tokens, and at least up to its first non-empty sentence; it stops
    before a document separator. Where the block ending there leads next does not depend
    on anything before ``i``, so the blocks are the chain ``i -> next(i)`` from sentence 0,
    followed with pointer doubling (``O(N log N)`` numpy work, no Python loop over
    sentences or blocks).

    Returns:
        ``(starts, ends)``: stream spans of the non-empty blocks, int64.
    """
    num_sentences = len(offsets) - 1
    index_dtype = np.int32 if num_sentences < np.iinfo(np.int32).max else np.int64
    sentence_starts = offsets[:-1]
    # Last sentence boundary within block_size tokens of each start.
    greedy_end = np.searchsorted(offsets, sentence_starts + block_size, side="right") - 1
    # A block holds at least one token: up to the first boundary after a non-empty sentence.
    first_token_end = np.minimum(np.searchsorted(offsets, sentence_starts, side="right"), num_sentences)
    block_end = np.maximum(greedy_end, first_token_end).astype(index_dtype)
    del greedy_end, first_token_end
    following = block_end.copy()
    if is_separator is not None:
        separators = np.flatnonzero(is_separator).astype(index_dtype)
        bounds = np.append(separators, index_dtype(num_sentences))
        next_separator = bounds[np.searchsorted(separators, np.arange(num_sentences, dtype=index_dtype))]
        np.minimum(block_end, next_separator, out=block_end)
        del next_separator
        following = block_end.copy()
        following[separators] = separators + 1  # a separator is skipped, opening no block

    chain = _reachable_from_zero(following, num_sentences)
    if is_separator is not None:
        chain = chain[~is_separator[chain]]
    starts = offsets[chain]
    ends = offsets[block_end[chain]]
    non_empty = ends > starts
    return starts[non_empty], ends[non_empty]


def _reachable_from_zero(following: np.ndarray, end: int) -> np.ndarray:
    """Sorted nodes ``0, f(0), f(f(0)), ...`` below ``end``, where ``f(i) = following[i] > i``."""
    jump = np.append(following, following.dtype.type(end))  # jump[end] = end
    nodes = np.zeros(1, dtype=following.dtype)
    while True:
        # nodes holds f^m(0) for m < 2^k and jump is f^(2^k): add m in [2^k, 2^(k+1)).
        nodes = np.union1d(nodes, jump[nodes])
        if jump[0] >= end:
            break
        jump = jump[jump]
    return nodes[nodes < end].astype(np.int64)


def _locate_blocks(offsets: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(first sentence, offset in it, last sentence) of each block span, shape (B, 3).

    The first sentence is the one the block's first token belongs to (fairseq's choice
    when empty sentences precede it: the first of them); the last is the sentence of
    the block's last token.
    """
    num_sentences = len(offsets) - 1
    first = np.searchsorted(offsets, starts, side="left")
    on_boundary = offsets[np.minimum(first, num_sentences)] == starts
    first = np.minimum(np.where(on_boundary, first, first - 1), num_sentences - 1)
    last = np.where(ends > starts, np.searchsorted(offsets, ends - 1, side="right") - 1, first)
    last = np.minimum(last, num_sentences - 1)
    return np.stack([first, starts - offsets[first], last], axis=1).astype(np.int64)
