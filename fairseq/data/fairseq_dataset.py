"""Base classes of the datasets the tasks build: batching helpers and epoch hooks."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["EpochListening", "FairseqDataset", "FairseqIterableDataset"]


class EpochListening:
    """Mixin for datasets told about each new epoch."""

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        """Whether batches may be reused across epochs (False if sizes change per epoch)."""
        return True

    def set_epoch(self, epoch: int) -> None:
        """Called with the 1-based epoch at the start of every epoch."""


class FairseqDataset(torch.utils.data.Dataset, EpochListening):
    """A dataset that knows its sample sizes and how to collate and batch its samples.

    Subclasses implement ``__getitem__``, ``__len__``, :meth:`collater`,
    :meth:`num_tokens` and :meth:`size` (and preferably :meth:`num_tokens_vec`).
    """

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def collater(self, samples: List[Any]) -> Any:
        """Merge a list of samples into a mini-batch."""
        raise NotImplementedError

    def num_tokens(self, index: int) -> int:
        """Number of tokens of a sample: what ``--max-tokens`` bounds."""
        raise NotImplementedError

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        """Number of tokens of each sample in ``indices``."""
        raise NotImplementedError

    def size(self, index: int) -> Any:
        """Size of a sample (a number or a tuple): what ``--max-positions`` bounds."""
        raise NotImplementedError

    def ordered_indices(self) -> np.ndarray:
        """Sample ids in the order batches are built from."""
        return np.arange(len(self), dtype=np.int64)

    @property
    def supports_prefetch(self) -> bool:
        """Whether :meth:`prefetch` must be called with each epoch's sample ids."""
        return False

    def attr(self, attr: str, index: int) -> Any:
        return getattr(self, attr, None)

    def prefetch(self, indices: Sequence[int]) -> None:
        """Load the samples of ``indices`` ahead of the epoch."""
        raise NotImplementedError

    def get_batch_shapes(self) -> Optional[List[Tuple[Optional[int], int]]]:
        """Allowed ``(batch_size, max_length)`` batch shapes (batch size None: from
        ``--max-tokens``), or None for any shape."""
        return None

    def batch_by_size(
        self,
        indices: np.ndarray,
        max_tokens: Optional[int] = None,
        max_sentences: Optional[int] = None,
        required_batch_size_multiple: int = 1,
    ) -> List[np.ndarray]:
        """Batch ``indices`` (in order) by :meth:`num_tokens` within the given bounds."""
        from fairseq.data import data_utils

        fixed_shapes = self.get_batch_shapes()
        shapes: Optional[np.ndarray] = None
        if fixed_shapes is not None:

            def adjust_bsz(bsz: Optional[int], num_tokens: int) -> int:
                if bsz is None:
                    if max_tokens is None:
                        raise ValueError("batch shapes without a batch size need --max-tokens")
                    bsz = max_tokens // num_tokens
                if max_sentences is not None:
                    bsz = min(bsz, max_sentences)
                elif bsz >= required_batch_size_multiple and bsz % required_batch_size_multiple != 0:
                    bsz -= bsz % required_batch_size_multiple
                return bsz

            shapes = np.array([[adjust_bsz(bsz, num_tokens), num_tokens] for bsz, num_tokens in fixed_shapes])
        try:
            num_tokens_vec: Optional[np.ndarray] = np.asarray(self.num_tokens_vec(indices)).astype("int64")
        except NotImplementedError:
            num_tokens_vec = None
        return data_utils.batch_by_size(
            indices,
            num_tokens_fn=self.num_tokens,
            num_tokens_vec=num_tokens_vec,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
            fixed_shapes=shapes,
        )

    def filter_indices_by_size(
        self, indices: np.ndarray, max_sizes: Union[int, float, Sequence[Any]]
    ) -> Tuple[np.ndarray, List[int]]:
        """Split ``indices`` into the samples whose size fits ``max_sizes`` and the others.

        Returns:
            ``(kept_indices, ignored)``: kept ids in input order, dropped ids as a list.
        """
        from fairseq.data import data_utils

        indices = np.asarray(indices, dtype=np.int64)
        if isinstance(max_sizes, (int, float)):
            sizes = getattr(self, "sizes", None)
            if isinstance(sizes, list) and len(sizes) == 1:
                sizes = sizes[0]
            if isinstance(sizes, np.ndarray) and sizes.ndim == 1:
                too_long = sizes[indices] > max_sizes
                return indices[~too_long], indices[too_long].tolist()
        return data_utils._filter_by_size_dynamic(indices, self.size, max_sizes)

    @property
    def supports_fetch_outside_dataloader(self) -> bool:
        """Whether samples may be read outside DataLoader workers (e.g. for a first batch)."""
        return True


class FairseqIterableDataset(torch.utils.data.IterableDataset, EpochListening):
    """A dataset read sequentially (e.g. streamed)."""

    def __iter__(self):  # type: ignore[override]
        raise NotImplementedError
