"""Give each evaluated block of a language-model dataset the tokens before it as context.

Scoring a corpus block by block makes the first tokens of every block nearly context-free.
:class:`LMContextWindowDataset` wraps the blocks (a :class:`~fairseq.data.MonolingualDataset`)
and, as it collates them *in order*, prepends to each block up to ``context_window`` of the
tokens that came before it. The target of the prepended context is padding, so only the
block's own tokens are scored; ``sample["start_indices"][i]`` says where they start in row
``i``.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

__all__ = ["LMContextWindowDataset"]


class LMContextWindowDataset(torch.utils.data.Dataset):
    """Wraps language-model blocks and adds up to ``context_window`` tokens of context to each.

    The context of a block is taken from the blocks collated before it (by this object,
    across batches), so the batches must be collated in dataset order, by one process:
    :meth:`ordered_indices` never shuffles, and the caller must not spread collation over
    several data-loading workers.

    A row holds at most ``tokens_per_sample + context_window`` tokens: the context is
    shortened from the left when the block is full.

    Args:
        dataset: the blocks; its collater must return ``net_input.src_tokens``,
            ``net_input.src_lengths`` and ``target`` (right-padded with ``pad_idx``).
        tokens_per_sample: the most tokens of a block.
        context_window: the most context tokens added to a block (> 0).
        pad_idx: the padding index of the source and target dictionaries.

    Raises:
        ValueError: if ``context_window`` is not positive.
    """

    def __init__(self, dataset: Any, tokens_per_sample: int, context_window: int, pad_idx: int) -> None:
        super().__init__()
        if context_window <= 0:
            raise ValueError(f"context_window={context_window}: it must be > 0 (0 means no context: "
                             "use the dataset itself)")
        self.dataset = dataset
        self.tokens_per_sample = int(tokens_per_sample)
        self.context_window = int(context_window)
        self.pad_idx = int(pad_idx)
        self.prev_tokens = np.empty(0, dtype=np.int64)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)

    def collater(self, samples: List[Any]) -> Dict[str, Any]:
        """Collate ``samples`` with the wrapped dataset, then prepend each row's context.

        Returns:
            The wrapped batch with ``src_tokens`` and ``target`` widened to
            ``T + context_window`` columns (the context's target is padding), ``src_lengths``
            counting the context, and ``start_indices`` (list of B ints): the column of each
            row's first own token. An empty list of samples collates as the wrapped dataset does.
        """
        sample = self.dataset.collater(samples)
        if not sample or "net_input" not in sample:
            return sample
        pad = self.pad_idx
        longest = self.tokens_per_sample + self.context_window
        src_tokens = sample["net_input"]["src_tokens"]  # (B, T)
        src_lengths = sample["net_input"]["src_lengths"].clone()
        target = sample["target"]  # (B, T)
        bsz, tsz = src_tokens.shape
        width = tsz + self.context_window
        new_tokens = np.full((bsz, width), pad, dtype=np.int64)
        new_target = np.full((bsz, width), pad, dtype=np.int64)
        start_indices = [0] * bsz
        tokens_np = src_tokens.cpu().numpy().astype(np.int64)
        target_np = target.cpu().numpy().astype(np.int64)
        for i in range(bsz):
            own = int((tokens_np[i] != pad).sum())
            excess = len(self.prev_tokens) + own - longest
            if excess > 0:
                self.prev_tokens = self.prev_tokens[excess:]
            n_ctx = len(self.prev_tokens)
            new_tokens[i, :n_ctx] = self.prev_tokens
            new_tokens[i, n_ctx:n_ctx + tsz] = tokens_np[i]
            new_target[i, n_ctx:n_ctx + tsz] = target_np[i]
            start_indices[i] = n_ctx
            src_lengths[i] += n_ctx
            row = new_tokens[i]
            self.prev_tokens = row[row != pad][-self.context_window:]
        sample["net_input"]["src_tokens"] = torch.from_numpy(new_tokens)
        sample["net_input"]["src_lengths"] = src_lengths
        sample["target"] = torch.from_numpy(new_target)
        sample["start_indices"] = start_indices
        return sample

    @property
    def sizes(self) -> np.ndarray:
        """The sizes of the wrapped blocks (without context), shape (N,)."""
        return np.asarray(self.dataset.sizes)

    def num_tokens(self, index: int) -> int:
        return int(self.dataset.num_tokens(index))

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return self.sizes[np.asarray(indices, dtype=np.int64)]

    def size(self, index: int) -> int:
        return int(self.dataset.size(index))

    def ordered_indices(self) -> np.ndarray:
        """``0 .. N-1``: the blocks in corpus order, so each one follows its context."""
        return np.arange(len(self.dataset))

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def supports_prefetch(self) -> bool:
        return bool(getattr(self.dataset, "supports_prefetch", False))

    def prefetch(self, indices: np.ndarray) -> None:
        self.dataset.prefetch(indices)
