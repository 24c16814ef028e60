"""Shorten every sentence of a dataset to a maximum length, by truncation or random cropping.

Language modelling applies this before cutting the token stream into blocks
(``task.shorten_method``): a sentence longer than a block then costs at most one block
instead of being split over several.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

__all__ = ["RandomCropDataset", "SHORTEN_METHODS", "TruncateDataset", "maybe_shorten_dataset"]

SHORTEN_METHODS = ("none", "truncate", "random_crop")


class TruncateDataset(torch.utils.data.Dataset):
    """Keep the first ``max_length`` tokens of every item.

    Args:
        dataset: items are 1-D token sequences (tensors or arrays); must have ``sizes``.
        max_length: longest item kept, in tokens.

    Raises:
        ValueError: if ``max_length`` is not positive.
    """

    def __init__(self, dataset: Sequence[Any], max_length: int) -> None:
        super().__init__()
        if max_length is None or max_length <= 0:
            raise ValueError(
                f"max_length must be a positive number of tokens, got {max_length}; check --tokens-per-sample"
            )
        self.dataset = dataset
        self.max_length = int(max_length)
        self._sizes = np.minimum(np.asarray(dataset.sizes, dtype=np.int64), self.max_length)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        """Item ``index``, cut to at most ``max_length`` tokens."""
        return self.dataset[index][: self.max_length]

    @property
    def sizes(self) -> np.ndarray:
        """Length of every shortened item, int64 array of shape (N,)."""
        return self._sizes

    def num_tokens(self, index: int) -> int:
        """Number of tokens of item ``index`` after shortening."""
        return int(self._sizes[index])

    def size(self, index: int) -> int:
        """Length of item ``index`` after shortening."""
        return int(self._sizes[index])

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped dataset if it uses it."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class RandomCropDataset(TruncateDataset):
    """Keep a random window of ``max_length`` consecutive tokens of every longer item.

    The window of item ``index`` depends only on ``(seed, epoch, index)``: reading an item
    twice, in any order or from any worker process, gives the same tokens, and a new epoch
    (:meth:`set_epoch`) draws new windows. Sizes do not depend on the epoch.

    Args:
        dataset: items are 1-D token sequences; must have ``sizes``.
        max_length: window length, in tokens.
        seed: base of the per-item random draws (``task.seed``).
        epoch: the epoch whose windows are drawn until :meth:`set_epoch` changes it.

    Raises:
        ValueError: if ``max_length`` is not positive or ``seed``/``epoch`` is negative.
    """

    def __init__(self, dataset: Sequence[Any], max_length: int, seed: int = 1, epoch: int = 1) -> None:
        super().__init__(dataset, max_length)
        if seed < 0 or epoch < 0:
            raise ValueError(f"RandomCropDataset needs a non-negative seed and epoch, got seed={seed}, epoch={epoch}")
        self.seed = int(seed)
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> Any:
        """Item ``index``, or a window of ``max_length`` of its tokens when it is longer."""
        item = self.dataset[index]
        excess = len(item) - self.max_length
        if excess <= 0:
            return item
        # A private generator keyed by (seed, epoch, index): no global RNG state is touched.
        start = int(np.random.default_rng([self.seed, self.epoch, int(index)]).integers(0, excess + 1))
        return item[start : start + self.max_length]

    def set_epoch(self, epoch: int) -> None:
        """Draw the windows of ``epoch`` from now on (and tell the wrapped dataset)."""
        self.epoch = int(epoch)
        super().set_epoch(epoch)


def parse_split_list(split_list: Optional[str]) -> Optional[set]:
    """``"train,valid"`` -> ``{"train", "valid"}``; an empty list means every split (None)."""
    splits = {part.strip() for part in str(split_list or "").split(",") if part.strip()}
    return splits or None


def maybe_shorten_dataset(
    dataset: Sequence[Any],
    split: str,
    shorten_data_split_list: Optional[str],
    shorten_method: str,
    max_length: int,
    seed: int,
    epoch: int = 1,
) -> Sequence[Any]:
    """Wrap ``dataset`` so its items are at most ``max_length`` tokens, if asked for ``split``.

    Args:
        dataset: the sentences of ``split``; must have ``sizes``.
        split: the split being loaded, e.g. ``"train"``.
        shorten_data_split_list: comma-separated splits to shorten, e.g. ``"train,valid"``;
            empty shortens every split.
        shorten_method: ``"none"``, ``"truncate"`` (keep the first tokens) or
            ``"random_crop"`` (keep a random window, redrawn every epoch).
        max_length: longest item kept, in tokens.
        seed: seed of the random windows.
        epoch: the epoch the windows are first drawn for.

    Returns:
        ``dataset`` itself when the method is ``"none"`` or ``split`` is not listed, else a
        :class:`TruncateDataset` or :class:`RandomCropDataset` over it.

    Raises:
        ValueError: on an unknown ``shorten_method``.
    """
    method = str(shorten_method or "none")
    if method not in SHORTEN_METHODS:
        raise ValueError(
            f"task.shorten_method={method!r} is not a shorten method; choose one of {', '.join(SHORTEN_METHODS)}"
        )
    splits = parse_split_list(shorten_data_split_list)
    if method == "none" or (splits is not None and split not in splits):
        return dataset
    if method == "truncate":
        return TruncateDataset(dataset, max_length)
    return RandomCropDataset(dataset, max_length, seed=seed, epoch=epoch)
