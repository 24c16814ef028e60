"""Epoch-aware, shardable, resumable iteration over batches."""
from __future__ import annotations

import math
import queue
import random
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["BufferedIterator", "CountingIterator", "EpochBatchIterator", "GroupedIterator"]

Batches = Sequence[Union[np.ndarray, Sequence[int]]]
BatchSampler = Union[Batches, Callable[[int], Batches]]


class CountingIterator:
    """Wraps an iterable and counts the items consumed.

    Args:
        iterable: the items; iterated once.
        start: value of ``n`` before the first item (e.g. batches already consumed
            when resuming); defaults to the iterable's own ``n`` attribute, or 0.
        total: number the count reaches at the end; defaults to
            ``start + len(iterable)``.

    Raises:
        RuntimeError: (while iterating) if the iterable ends before ``total``.
    """

    def __init__(self, iterable: Iterable[Any], start: Optional[int] = None, total: Optional[int] = None) -> None:
        self.iterable = iterable
        self._itr = iter(iterable)
        self.n = start if start is not None else getattr(iterable, "n", 0)
        self.total = total if total is not None else self.n + len(iterable)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> "CountingIterator":
        return self

    def __next__(self) -> Any:
        if not self.has_next():
            raise StopIteration
        try:
            item = next(self._itr)
        except StopIteration:
            raise RuntimeError(
                f"iterator expected to yield {self.total} items but ended after {self.n}; "
                f"the underlying data changed size during the epoch"
            ) from None
        self.n += 1
        return item

    def has_next(self) -> bool:
        """Whether more items remain (``n < total``)."""
        return self.n < self.total

    def skip(self, n: int) -> "CountingIterator":
        """Consume and drop the next ``n`` items (fewer if the iterator ends first)."""
        for _ in range(n):
            if not self.has_next():
                break
            next(self)
        return self

    def take(self, n: int) -> "CountingIterator":
        """Stop the iteration after ``n`` items in total (counting from the start of ``n``)."""
        self.total = min(self.total, n)
        return self


class GroupedIterator(CountingIterator):
    """Yields lists of ``chunk_size`` consecutive items (the last may be shorter).

    Used for gradient accumulation (``--update-freq``): ``n`` and ``total`` count
    chunks, so ``has_next()`` and resume positions stay correct.

    Args:
        iterable: the items, typically a :class:`CountingIterator` of batches.
        chunk_size: items per chunk (>= 1).

    Raises:
        ValueError: if ``chunk_size < 1``.
    """

    def __init__(self, iterable: Iterable[Any], chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}; check --update-freq")
        self.chunk_size = chunk_size
        items_done = getattr(iterable, "n", 0)
        items_total = len(iterable)  # type: ignore[arg-type]
        super().__init__(
            _chunked(iterable, chunk_size),
            start=math.ceil(items_done / chunk_size),
            total=math.ceil(items_total / chunk_size),
        )


def _chunked(iterable: Iterable[Any], chunk_size: int) -> Iterator[List[Any]]:
    chunk: List[Any] = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class BufferedIterator:
    """Fills a queue of up to ``buffer_size`` items from ``iterable`` in a background thread.

    Lets batch loading overlap with the training step. Exceptions raised while loading
    are re-raised in the consuming thread. When the iterator is dropped before the end,
    the thread notices and stops (releasing e.g. DataLoader workers).
    """

    _END = object()

    def __init__(self, iterable: Iterable[Any], buffer_size: int) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=buffer_size)
        self._stop = threading.Event()
        self._length = len(iterable)  # type: ignore[arg-type]
        # The thread must not reference self, or an abandoned iterator would never be freed.
        self._thread = threading.Thread(
            target=_fill_queue, args=(iterable, self._queue, self._stop, self._END), daemon=True
        )
        self._thread.start()

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> "BufferedIterator":
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(self._END)  # later calls keep ending
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def __del__(self) -> None:
        self._stop.set()


def _fill_queue(iterable: Iterable[Any], out: "queue.Queue[Any]", stop: threading.Event, end_marker: object) -> None:
    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in iterable:
            if not put(item):
                return
        put(end_marker)
    except BaseException as err:  # handed to the consumer
        put(err)


class _SizedBatchLoader:
    """Loads and collates batches in the main process; has a length for counting."""

    def __init__(self, dataset: Any, collate_fn: Callable[[List[Any]], Any], batches: List[List[int]]) -> None:
        self.dataset, self.collate_fn, self.batches = dataset, collate_fn, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            yield self.collate_fn([self.dataset[index] for index in batch])


def _reseed_worker(worker_id: int) -> None:
    """DataLoader worker init: derive Python and numpy seeds from the worker's torch seed."""
    worker_seed = torch.initial_seed() % (2**32)
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class EpochBatchIterator:
    """Iterates over a dataset's batches epoch after epoch, deterministically and resumably.

    Each epoch the batch list (fixed, or from ``batch_sampler(epoch)``) is shuffled with
    an RNG seeded by ``seed + epoch``, so every run and every resume sees the same order.
    The list is then padded with empty batches to a multiple of ``num_shards`` and shard
    ``k`` takes batches ``k, k + num_shards, ...``: all shards get the same number of
    batches. An empty batch collates to ``{}``, which the trainer treats as a dummy batch.

    Args:
        dataset: indexable samples.
        collate_fn: merges a list of samples into a batch.
        batch_sampler: the batches (arrays of sample ids), or a function returning them
            for an epoch (called once per epoch).
        seed: base seed of the per-epoch shuffle.
        num_shards: number of data-parallel shards.
        shard_id: this shard, in ``[0, num_shards)``.
        num_workers: DataLoader worker processes; 0 loads in the main process.
        epoch: the epoch the first :meth:`next_epoch_itr` call returns (1-based).
        buffer_size: batches prefetched by a background thread; 0 disables it.
        disable_shuffling: never shuffle, whatever :meth:`next_epoch_itr` is told.

    Raises:
        ValueError: on an invalid shard, epoch or worker count.
    """

    def __init__(
        self,
        dataset: Any,
        collate_fn: Callable[[List[Any]], Any],
        batch_sampler: BatchSampler,
        seed: int = 1,
        num_shards: int = 1,
        shard_id: int = 0,
        num_workers: int = 0,
        epoch: int = 1,
        buffer_size: int = 0,
        disable_shuffling: bool = False,
    ) -> None:
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id must be in [0, num_shards); got shard_id={shard_id}, num_shards={num_shards}")
        if epoch < 1:
            raise ValueError(f"epochs count from 1, got epoch={epoch}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.batch_sampler = batch_sampler
        self.seed = seed
        self.num_shards = num_shards
        self.shard_id = shard_id
        self.num_workers = num_workers
        self.buffer_size = buffer_size
        self.disable_shuffling = disable_shuffling

        self._epoch = epoch
        self.shuffle = not disable_shuffling
        self._frozen_batches: Optional[List[np.ndarray]] = None
        self._frozen_epoch: Optional[int] = None
        self._cur_epoch_itr: Optional[CountingIterator] = None
        # Batches of the current epoch already consumed, set by load_state_dict until the
        # next next_epoch_itr() call resumes there.
        self._resume_offset: Optional[int] = None

    # ---------------------------------------------------------------- batches

    def _batches_for_epoch(self, epoch: int) -> List[np.ndarray]:
        if callable(self.batch_sampler):
            if self._frozen_batches is None or self._frozen_epoch != epoch:
                self._frozen_batches = [np.asarray(b, dtype=np.int64) for b in self.batch_sampler(epoch)]
                self._frozen_epoch = epoch
        elif self._frozen_batches is None:
            self._frozen_batches = [np.asarray(b, dtype=np.int64) for b in self.batch_sampler]
        return self._frozen_batches

    @property
    def frozen_batches(self) -> List[np.ndarray]:
        """The unshuffled, unsharded batches of the current epoch."""
        return self._batches_for_epoch(self._epoch)

    @property
    def first_batch(self) -> Any:
        """The collated first batch of the current epoch (``{}`` when there is none)."""
        batches = self.frozen_batches
        first = batches[0].tolist() if batches else []
        return self.collate_fn([self.dataset[index] for index in first])

    def __len__(self) -> int:
        """Number of batches per epoch for this shard."""
        return math.ceil(len(self.frozen_batches) / self.num_shards)

    def _shard(self, batches: List[np.ndarray]) -> List[np.ndarray]:
        shard_count = math.ceil(len(batches) / self.num_shards)
        padding = shard_count * self.num_shards - len(batches)
        padded = list(batches) + [np.zeros(0, dtype=np.int64)] * padding
        return padded[self.shard_id :: self.num_shards]

    def _shard_batches_for_epoch(self, epoch: int, shuffle: bool, fix_batches_to_gpus: bool) -> List[np.ndarray]:
        batches = self._batches_for_epoch(epoch)
        if not shuffle:
            return self._shard(batches)
        if fix_batches_to_gpus:
            # Each shard keeps the same batches every epoch; only their order changes.
            mine = self._shard(batches)
            order = np.random.RandomState([self.seed, epoch, self.shard_id]).permutation(len(mine))
            return [mine[i] for i in order]
        order = np.random.RandomState([self.seed + epoch]).permutation(len(batches))
        return self._shard([batches[i] for i in order])

    # -------------------------------------------------------------- iterators

    @property
    def epoch(self) -> int:
        """The epoch of the iterator last returned by :meth:`next_epoch_itr`."""
        return self._epoch

    @property
    def next_epoch_idx(self) -> int:
        """The epoch the next :meth:`next_epoch_itr` call will return."""
        if self._resume_offset is not None:
            return self._epoch
        if self._cur_epoch_itr is not None and self.end_of_epoch():
            return self._epoch + 1
        return self._epoch

    def next_epoch_itr(self, shuffle: bool = True, fix_batches_to_gpus: bool = False) -> CountingIterator:
        """Return an iterator over the batches of the next epoch.

        The next epoch is the current one again when it was not finished, the following
        one when it was, or the resumed one after :meth:`load_state_dict`.

        Args:
            shuffle: shuffle the batch order (ignored with ``disable_shuffling``).
            fix_batches_to_gpus: keep each shard's set of batches fixed across epochs
                and shuffle only their order.

        Returns:
            A :class:`CountingIterator` of collated batches whose ``n`` is the number of
            batches consumed in this epoch.
        """
        if self.disable_shuffling:
            shuffle = False
        self._epoch = self.next_epoch_idx
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self._epoch)
        if self._resume_offset is not None:
            # The saved shuffle flag, not the argument, reproduces the interrupted order.
            offset, self._resume_offset = self._resume_offset, None
            self._cur_epoch_itr = self._iterator_for_epoch(self._epoch, self.shuffle, fix_batches_to_gpus, offset)
        else:
            self._cur_epoch_itr = self._iterator_for_epoch(self._epoch, shuffle, fix_batches_to_gpus)
            self.shuffle = shuffle
        return self._cur_epoch_itr

    def end_of_epoch(self) -> bool:
        """Whether the current epoch's iterator is exhausted (False before the first one)."""
        return self._cur_epoch_itr is not None and not self._cur_epoch_itr.has_next()

    @property
    def iterations_in_epoch(self) -> int:
        """Number of batches consumed so far in the current epoch."""
        if self._cur_epoch_itr is not None:
            return self._cur_epoch_itr.n
        return self._resume_offset or 0

    def state_dict(self) -> Dict[str, Any]:
        """Position to resume from: ``{"epoch", "iterations_in_epoch", "shuffle"}``.

        At the end of an epoch the state points at the start of the following one.
        """
        if self.end_of_epoch():
            return {"epoch": self._epoch + 1, "iterations_in_epoch": 0, "shuffle": self.shuffle}
        return {"epoch": self._epoch, "iterations_in_epoch": self.iterations_in_epoch, "shuffle": self.shuffle}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`.

        The next :meth:`next_epoch_itr` call then continues the saved epoch at the first
        batch not yet consumed, in the same order; if that epoch was finished, it starts
        the following epoch.

        Raises:
            KeyError: if ``state_dict`` has no ``"epoch"``.
        """
        self._epoch = int(state_dict["epoch"])
        consumed = int(state_dict.get("iterations_in_epoch", 0))
        self.shuffle = bool(state_dict.get("shuffle", True)) and not self.disable_shuffling
        self._cur_epoch_itr = None
        self._resume_offset = None
        if consumed > 0:
            if consumed >= len(self):
                self._epoch += 1  # the saved epoch was complete
            else:
                self._resume_offset = consumed

    def _iterator_for_epoch(
        self, epoch: int, shuffle: bool, fix_batches_to_gpus: bool, offset: int = 0
    ) -> CountingIterator:
        batches = [batch.tolist() for batch in self._shard_batches_for_epoch(epoch, shuffle, fix_batches_to_gpus)]
        total = len(batches)
        remaining = batches[offset:]
        if self.num_workers > 0 and remaining:
            loader: Iterable[Any] = torch.utils.data.DataLoader(
                self.dataset,
                collate_fn=self.collate_fn,
                batch_sampler=remaining,
                num_workers=self.num_workers,
                worker_init_fn=_reseed_worker,
                generator=torch.Generator().manual_seed(self.seed + epoch),
            )
        else:
            loader = _SizedBatchLoader(self.dataset, self.collate_fn, remaining)
        if self.buffer_size > 0:
            loader = BufferedIterator(loader, self.buffer_size)
        return CountingIterator(loader, start=offset, total=total)
