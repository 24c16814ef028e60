"""Cut a dataset of sentences into blocks of tokens for language modelling."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["TokenBlockDataset", "BREAK_MODES"]

BREAK_MODES = ("none", "complete", "complete_doc", "eos")

BlockItem = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class TokenBlockDataset(torch.utils.data.Dataset):
    """View a dataset of sentences as one token stream cut into blocks.

    The sentences are concatenated, in order, into a stream; a block is a contiguous
    span ``[start, end)`` of that stream. How spans are chosen depends on ``break_mode``:

    * ``None`` / ``"none"``: consecutive blocks of exactly ``block_size`` tokens,
      ignoring sentence boundaries; the last block may be shorter.
    * ``"complete"``: whole sentences packed greedily into blocks of at most
      ``block_size`` tokens. A sentence longer than ``block_size`` is *split* into
      ``block_size`` pieces, each its own block, so no block ever exceeds
      ``block_size`` (a model's position limit).
    * ``"complete_doc"``: like ``"complete"`` but a block never spans two documents.
      Documents are separated by empty lines, i.e. sentences that are a single eos;
      those separators belong to no block.
    * ``"eos"``: one sentence per block; a sentence longer than ``block_size`` is
      split into ``block_size`` pieces.

    Block boundaries are computed once with numpy (only ``"complete"`` modes loop, once
    over sentences) and kept as int64 arrays; a block is materialised by reading only the
    sentences it overlaps.

    With ``include_targets`` an item is ``(source, target, past_target)``:

    * ``target``: the block's tokens ``x[start:end]``;
    * ``source``: the span shifted right by one, ``x[start-1:end-1]``;
    * ``past_target``: the span shifted right by two, ``x[start-2:end-2]``.

    Positions before the block's *origin* are filled: the one right before it with eos,
    any earlier one with pad. The origin is the start of the stream in ``"none"`` mode
    (so ``source`` continues from the previous block) and the start of the sentence
    containing the block start in the other modes (so a sentence is never conditioned on
    another sentence's tokens; for blocks of whole sentences that ends with eos anyway).

    Args:
        dataset: indexable sentences, each a 1-D tensor of ids (usually ending in eos).
        sizes: length of every sentence, shape (N,).
        block_size: maximum number of tokens per block.
        pad: padding id.
        eos: end-of-sentence id.
        break_mode: one of None, ``"none"``, ``"complete"``, ``"complete_doc"``, ``"eos"``.
        include_targets: return ``(source, target, past_target)`` instead of the block.

    Raises:
        ValueError: on an unknown ``break_mode``, a non-positive ``block_size`` or
            ``sizes`` whose length differs from the dataset's.
    """

    def __init__(
        self,
        dataset: Sequence[torch.Tensor],
        sizes: Union[np.ndarray, Sequence[int]],
        block_size: int,
        pad: int,
        eos: int,
        break_mode: Optional[str] = None,
        include_targets: bool = False,
    ) -> None:
        super().__init__()
        mode = "none" if break_mode is None else break_mode
        if mode not in BREAK_MODES:
            choices = ", ".join(map(repr, BREAK_MODES))
            raise ValueError(f"unknown break_mode {break_mode!r}; choose one of None, {choices}")
        if block_size is None or block_size <= 0:
            raise ValueError(
                f"block_size must be a positive number of tokens, got {block_size}; check --tokens-per-sample"
            )
        sentence_sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
        if len(sentence_sizes) != len(dataset):
            raise ValueError(f"sizes has {len(sentence_sizes)} entries but the dataset has {len(dataset)} sentences")

        self.dataset = dataset
        self.block_size = int(block_size)
        self.pad, self.eos = pad, eos
        self.break_mode = mode
        self.include_targets = include_targets

        # Stream offset of each sentence start, plus the total length: shape (N + 1,).
        self._sentence_offsets = np.zeros(len(sentence_sizes) + 1, dtype=np.int64)
        np.cumsum(sentence_sizes, out=self._sentence_offsets[1:])

        if mode == "none":
            starts, ends = self._fixed_blocks(int(self._sentence_offsets[-1]))
        elif mode == "eos":
            starts, ends = self._split_sentences(sentence_sizes)
        else:
            is_separator = self._find_document_separators(sentence_sizes) if mode == "complete_doc" else None
            starts, ends = self._pack_sentences(sentence_sizes, is_separator)
        self._block_starts, self._block_ends = starts, ends
        self._sizes = ends - starts

        if mode == "none":
            self._block_origins = np.zeros_like(starts)
        else:
            containing_sentence = np.searchsorted(self._sentence_offsets, starts, side="right") - 1
            self._block_origins = self._sentence_offsets[containing_sentence]

    # ------------------------------------------------------ block boundaries

    def _fixed_blocks(self, total_tokens: int) -> Tuple[np.ndarray, np.ndarray]:
        starts = np.arange(0, total_tokens, self.block_size, dtype=np.int64)
        return starts, np.minimum(starts + self.block_size, total_tokens)

    def _split_sentences(self, sentence_sizes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """One block per ``block_size`` piece of every sentence; empty sentences give none."""
        pieces_per_sentence = -(-sentence_sizes // self.block_size)  # ceil division
        sentence_of_piece = np.repeat(np.arange(len(sentence_sizes)), pieces_per_sentence)
        first_piece = np.cumsum(pieces_per_sentence) - pieces_per_sentence
        piece_in_sentence = np.arange(len(sentence_of_piece)) - first_piece[sentence_of_piece]
        starts = self._sentence_offsets[sentence_of_piece] + piece_in_sentence * self.block_size
        ends = np.minimum(starts + self.block_size, self._sentence_offsets[sentence_of_piece + 1])
        return starts.astype(np.int64), ends.astype(np.int64)

    def _find_document_separators(self, sentence_sizes: np.ndarray) -> np.ndarray:
        """Mark the sentences made of a single eos (empty lines between documents)."""
        is_separator = np.zeros(len(sentence_sizes), dtype=bool)
        for sentence in np.flatnonzero(sentence_sizes == 1).tolist():
            is_separator[sentence] = int(self.dataset[sentence][0]) == self.eos
        return is_separator

    def _pack_sentences(
        self, sentence_sizes: np.ndarray, is_separator: Optional[np.ndarray]
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Greedily pack whole sentences into blocks; one pass over sentences."""
        block_size = self.block_size
        starts: List[int] = []
        ends: List[int] = []
        block_start = position = 0  # the open block is [block_start, position)
        separators = is_separator.tolist() if is_separator is not None else [False] * len(sentence_sizes)
        for length, separator in zip(sentence_sizes.tolist(), separators):
            opens_new_block = separator or length > block_size or position - block_start + length > block_size
            if opens_new_block and position > block_start:
                starts.append(block_start)
                ends.append(position)
                block_start = position
            if separator:
                position += length
                block_start = position
            elif length > block_size:
                piece_starts = range(position, position + length, block_size)
                starts.extend(piece_starts)
                ends.extend(min(start + block_size, position + length) for start in piece_starts)
                position += length
                block_start = position
            else:
                position += length
        if position > block_start:
            starts.append(block_start)
            ends.append(position)
        return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)

    # ---------------------------------------------------------------- access

    @property
    def sizes(self) -> np.ndarray:
        """Number of tokens of every block, int64 array of shape (num_blocks,)."""
        return self._sizes

    @property
    def slice_indices(self) -> np.ndarray:
        """Stream span ``[start, end)`` of every block, int64 array of shape (num_blocks, 2)."""
        return np.stack([self._block_starts, self._block_ends], axis=1)

    @property
    def supports_prefetch(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(self._sizes)

    def num_tokens(self, index: int) -> int:
        """Number of tokens of block ``index``."""
        return int(self._sizes[index])

    def size(self, index: int) -> int:
        """Number of tokens of block ``index``."""
        return int(self._sizes[index])

    def _read_stream(self, start: int, end: int) -> torch.Tensor:
        """Tokens ``[start, end)`` of the stream, reading only the sentences they overlap."""
        if end <= start:
            return torch.zeros(0, dtype=torch.long)
        first = int(np.searchsorted(self._sentence_offsets, start, side="right")) - 1
        stop = int(np.searchsorted(self._sentence_offsets, end, side="left"))
        pieces = [torch.as_tensor(self.dataset[sentence]).long() for sentence in range(first, stop)]
        tokens = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        skip = start - int(self._sentence_offsets[first])
        return tokens[skip : skip + end - start]

    def __getitem__(self, index: int) -> BlockItem:
        """Return block ``index``: a 1-D LongTensor, or ``(source, target, past_target)``.

        Raises:
            IndexError: if ``index`` is out of range.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"block {index} out of range for a TokenBlockDataset of {len(self)} blocks")
        start, end = int(self._block_starts[index]), int(self._block_ends[index])
        if not self.include_targets:
            return self._read_stream(start, end)

        origin = int(self._block_origins[index])
        context_start = max(start - 2, origin)
        tokens = self._read_stream(context_start, end)  # x[context_start:end]
        missing = 2 - (start - context_start)  # context positions before the origin
        fill = [self.pad, self.eos][2 - missing :]
        padded = torch.cat([torch.tensor(fill, dtype=torch.long), tokens])  # x[start-2:end]
        length = end - start
        target = padded[2 : 2 + length]
        source = padded[1 : 1 + length]
        past_target = padded[0:length]
        return source, target, past_target

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped sentences (e.g. random crops redrawn each epoch).

        Block boundaries never depend on the epoch: they are computed from ``sizes`` once,
        so a wrapped dataset may change its tokens per epoch but not its sizes.
        """
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
