"""Several datasets read as one, e.g. ``valid``, ``valid1``, ... with ``--combine-valid-subsets``."""
import bisect
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from fairseq.data.fairseq_dataset import FairseqDataset


class ConcatDataset(FairseqDataset):
    """The samples of ``datasets`` one after the other (fairseq's ``ConcatDataset``).

    ``sample_ratios`` (whole numbers, default 1 each) repeats a dataset's samples that many
    times. Batches are collated by the first dataset, so the parts must produce the same kind
    of samples (the same task and dictionary).

    Raises:
        ValueError: for no datasets, a ratio per dataset missing, or a ratio below 1.
    """

    def __init__(self, datasets: Sequence[Any], sample_ratios: Union[int, Sequence[int]] = 1):
        if len(datasets) == 0:
            raise ValueError("ConcatDataset needs at least one dataset")
        self.datasets = list(datasets)
        ratios = [sample_ratios] * len(self.datasets) if isinstance(sample_ratios, int) else list(sample_ratios)
        if len(ratios) != len(self.datasets) or any(int(r) != r or r < 1 for r in ratios):
            raise ValueError(f"sample_ratios={sample_ratios!r}: need one whole number >= 1 per dataset "
                             f"({len(self.datasets)} datasets)")
        self.sample_ratios = [int(r) for r in ratios]
        self.real_sizes = [len(d) for d in self.datasets]
        self.cumulative_sizes = np.cumsum([n * r for n, r in zip(self.real_sizes, self.sample_ratios)]).tolist()

    def __len__(self) -> int:
        return int(self.cumulative_sizes[-1])

    def _locate(self, index: int):
        """``(dataset index, index inside that dataset)`` of sample ``index``."""
        k = bisect.bisect_right(self.cumulative_sizes, index)
        offset = index - (self.cumulative_sizes[k - 1] if k > 0 else 0)
        return k, offset % self.real_sizes[k]

    def __getitem__(self, index: int) -> Any:
        k, inner = self._locate(int(index))
        return self.datasets[k][inner]

    def collater(self, samples: List[Any], **extra: Any) -> Any:
        return self.datasets[0].collater(samples, **extra)

    @property
    def sizes(self) -> np.ndarray:
        parts = []
        for dataset, ratio in zip(self.datasets, self.sample_ratios):
            sizes = np.asarray(dataset.sizes)
            parts.append(np.tile(sizes, ratio) if ratio > 1 else sizes)
        return np.concatenate(parts)

    def num_tokens(self, index: int) -> int:
        k, inner = self._locate(int(index))
        return self.datasets[k].num_tokens(inner)

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray([self.num_tokens(int(i)) for i in indices], dtype=np.int64)

    def size(self, index: int) -> Any:
        k, inner = self._locate(int(index))
        return self.datasets[k].size(inner)

    def ordered_indices(self) -> np.ndarray:
        """By size, as fairseq orders a concatenation."""
        return np.argsort(self.sizes, kind="mergesort")

    @property
    def supports_prefetch(self) -> bool:
        return all(getattr(d, "supports_prefetch", False) for d in self.datasets)

    def prefetch(self, indices: Sequence[int]) -> None:
        start = 0
        for end, dataset, real in zip(self.cumulative_sizes, self.datasets, self.real_sizes):
            mine = [(i - start) % real for i in indices if start <= i < end]
            if mine:
                dataset.prefetch(mine)
            start = end

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return all(getattr(d, "can_reuse_epoch_itr_across_epochs", True) for d in self.datasets)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def attr(self, attr: str, index: int) -> Optional[Any]:
        k, _ = self._locate(int(index))
        return getattr(self.datasets[k], attr, None)
