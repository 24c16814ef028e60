"""A dataset over an in-memory list (or any indexable), with optional sizes."""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Sequence

from fairseq.data.base_wrapper_dataset import BaseWrapperDataset

__all__ = ["ListDataset"]


class ListDataset(BaseWrapperDataset):
    """Items of ``dataset`` as they are; the collater returns the list of samples.

    Args:
        dataset: the items.
        sizes: the size of every item, when batching by size is wanted.
    """

    def __init__(self, dataset: Sequence[Any], sizes: Optional[Sequence[int]] = None) -> None:
        super().__init__(dataset)
        self._sizes = sizes

    def __iter__(self) -> Iterator[Any]:
        yield from self.dataset

    def collater(self, samples: List[Any]) -> List[Any]:
        return samples

    @property
    def sizes(self) -> Optional[Sequence[int]]:
        return self._sizes

    def num_tokens(self, index: int) -> int:
        return self.sizes[index]  # type: ignore[index]

    def size(self, index: int) -> int:
        return self.sizes[index]  # type: ignore[index]

    def set_epoch(self, epoch: int) -> None:
        """Items do not depend on the epoch."""
