"""A dataset that wraps another and forwards everything to it by default."""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
from torch.utils.data.dataloader import default_collate

from fairseq.data.fairseq_dataset import FairseqDataset

__all__ = ["BaseWrapperDataset"]


class BaseWrapperDataset(FairseqDataset):
    """Forwards items, sizes, batching and epoch hooks to ``dataset``.

    Subclasses override only what they change.

    Args:
        dataset: the wrapped dataset.
    """

    def __init__(self, dataset: Any) -> None:
        super().__init__()
        self.dataset = dataset

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)

    def collater(self, samples: List[Any]) -> Any:
        """The wrapped dataset's collater, or torch's ``default_collate``."""
        if hasattr(self.dataset, "collater"):
            return self.dataset.collater(samples)
        return default_collate(samples)

    @property
    def sizes(self) -> Any:
        return self.dataset.sizes

    def num_tokens(self, index: int) -> int:
        return self.dataset.num_tokens(index)

    def size(self, index: int) -> Any:
        return self.dataset.size(index)

    def ordered_indices(self) -> np.ndarray:
        return self.dataset.ordered_indices()

    @property
    def supports_prefetch(self) -> bool:
        return getattr(self.dataset, "supports_prefetch", False)

    def attr(self, attr: str, index: int) -> Any:
        return self.dataset.attr(attr, index)

    def prefetch(self, indices: Any) -> None:
        self.dataset.prefetch(indices)

    def get_batch_shapes(self) -> Any:
        return self.dataset.get_batch_shapes()

    def batch_by_size(
        self,
        indices: np.ndarray,
        max_tokens: Optional[int] = None,
        max_sentences: Optional[int] = None,
        required_batch_size_multiple: int = 1,
    ) -> List[np.ndarray]:
        return self.dataset.batch_by_size(
            indices,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
        )

    def filter_indices_by_size(self, indices: np.ndarray, max_sizes: Any) -> Any:
        return self.dataset.filter_indices_by_size(indices, max_sizes)

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return self.dataset.can_reuse_epoch_itr_across_epochs

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
