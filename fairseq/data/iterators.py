"""Epoch-aware, shardable, resumable iteration over batches (fairseq's iterator API)."""
from __future__ import annotations

import itertools
import logging
import math
import queue
import random
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from fairseq.data import data_utils
from fairseq.errors import DataError

__all__ = [
    "BufferedIterator",
    "CountingIterator",
    "EpochBatchIterating",
    "EpochBatchIterator",
    "FrozenBatchSampler",
    "GroupedIterator",
    "ShardedIterator",
]

logger = logging.getLogger(__name__)

Batches = Sequence[Union[np.ndarray, Sequence[int]]]
BatchSampler = Union[Batches, Callable[[Any, int], Batches]]


class CountingIterator:
    """Wraps an iterable and counts the items consumed.

    Args:
        iterable: the items; iterated once.
        start: value of ``n`` before the first item (e.g. batches already consumed when
            resuming; nothing is skipped). Defaults to the iterable's own ``n``, or 0.
        total: the length reported by ``len()``; iteration stops there, so it may
            truncate the iterable. Defaults to ``start + len(iterable)``.

    Attributes:
        n: number of items consumed so far (counting from ``start``).

    Raises:
        IndexError: (while iterating) if the iterable ends before ``total``.
    """

    def __init__(self, iterable: Iterable[Any], start: Optional[int] = None, total: Optional[int] = None) -> None:
        self._itr = iter(iterable)
        self.n = start or getattr(iterable, "n", 0)
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
            raise IndexError(
                f"iterator expected to have length {self.total} but was exhausted at position {self.n} "
                f"(the underlying data changed size during the epoch?)"
            ) from None
        self.n += 1
        return item

    def has_next(self) -> bool:
        """Whether items remain (``n < len(self)``)."""
        return self.n < self.total

    def skip(self, n: int) -> "CountingIterator":
        """Consume and drop the next ``n`` items (fewer if the iterator ends first)."""
        for _ in range(n):
            if not self.has_next():
                break
            next(self)
        return self

    def take(self, n: int) -> "CountingIterator":
        """Truncate the iterator to ``n`` items in all (``n`` counts from the start)."""
        self.total = min(self.total, n)
        if hasattr(self._itr, "take"):
            self._itr.take(max(n - self.n, 0))
        return self


class GroupedIterator(CountingIterator):
    """Yields lists of ``chunk_size`` consecutive items (the last may be shorter).

    Used for gradient accumulation (``--update-freq``): ``n`` and ``len()`` count
    chunks, so ``has_next()`` and resume positions stay correct.

    Args:
        iterable: the items, typically a :class:`CountingIterator` of batches.
        chunk_size: items per chunk (>= 1).
        skip_remainder_batch: drop a last, incomplete chunk (the iterable must then
            have ``take``, like :class:`CountingIterator`).

    Raises:
        ValueError: if ``chunk_size < 1``.
    """

    def __init__(self, iterable: Iterable[Any], chunk_size: int, skip_remainder_batch: bool = False) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}; check --update-freq")
        items = len(iterable)  # type: ignore[arg-type]
        total = items // chunk_size if skip_remainder_batch else math.ceil(items / chunk_size)
        super().__init__(
            _chunk_iterator(iterable, chunk_size, skip_remainder_batch),
            start=math.ceil(getattr(iterable, "n", 0) / chunk_size),
            total=total,
        )
        self.chunk_size = chunk_size
        if skip_remainder_batch:
            self.take(total)
            iterable.take(total * chunk_size)  # type: ignore[attr-defined]


def _chunk_iterator(iterable: Iterable[Any], chunk_size: int, skip_remainder_batch: bool = False) -> Iterator[List[Any]]:
    chunk: List[Any] = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk and not skip_remainder_batch:
        yield chunk


class ShardedIterator(CountingIterator):
    """Items ``shard_id, shard_id + num_shards, ...`` of an iterable, padded to equal length.

    Every shard has ``ceil(len(iterable) / num_shards)`` items; shards that run short
    end with ``fill_value``.

    Args:
        iterable: the items; must have a length.
        num_shards: number of shards.
        shard_id: this shard, in ``[0, num_shards)``.
        fill_value: padding item.
        skip_remainder_batch: accepted for fairseq compatibility; ignored.

    Raises:
        ValueError: if ``shard_id`` is out of range.
    """

    def __init__(
        self,
        iterable: Iterable[Any],
        num_shards: int,
        shard_id: int,
        fill_value: Any = None,
        skip_remainder_batch: Optional[bool] = None,
    ) -> None:
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id must be in [0, num_shards); got shard_id={shard_id}, num_shards={num_shards}")
        length = len(iterable)  # type: ignore[arg-type]
        sharded_len = math.ceil(length / num_shards)
        mine = itertools.islice(iterable, shard_id, length, num_shards)
        padded = (item for _, item in itertools.zip_longest(range(sharded_len), mine, fillvalue=fill_value))
        super().__init__(
            padded,
            start=math.ceil(getattr(iterable, "n", 0) / num_shards),
            total=sharded_len,
        )


class BufferedIterator:
    """Fills a queue of up to ``size`` items from ``iterable`` in a background thread.

    Lets batch loading overlap with the training step. The thread starts on the first
    ``next()``, and stops after ``len(self)`` items (see :meth:`take`). Exceptions raised
    while loading are re-raised in the consuming thread. When the iterator is dropped
    before the end, the thread notices and stops (releasing e.g. DataLoader workers).

    Args:
        size: capacity of the queue.
        iterable: the items; must have a length.
    """

    _END = object()

    def __init__(self, size: int, iterable: Iterable[Any]) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue(max(int(size), 1))
        self._iterable = iterable
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.total = len(iterable)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> "BufferedIterator":
        return self

    def take(self, n: int) -> "BufferedIterator":
        """Stop after ``n`` items (the wrapped iterable is truncated too if it can be)."""
        self.total = min(self.total, n)
        if hasattr(self._iterable, "take"):
            self._iterable.take(n)
        return self

    def __next__(self) -> Any:
        if self._thread is None:
            # The thread must not reference self, or an abandoned iterator would never be freed.
            self._thread = threading.Thread(
                target=_fill_queue,
                args=(self._iterable, self.total, self._queue, self._stop, self._END),
                daemon=True,
            )
            self._thread.start()
        item = self._queue.get()
        if item is self._END:
            self._queue.put(self._END)  # later calls keep ending
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def __del__(self) -> None:
        self._stop.set()


def _fill_queue(
    iterable: Iterable[Any], limit: int, out: "queue.Queue[Any]", stop: threading.Event, end_marker: object
) -> None:
    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in itertools.islice(iterable, limit):
            if not put(item):
                return
        put(end_marker)
    except BaseException as err:  # handed to the consumer
        put(err)


class _SizedBatchLoader:
    """Loads and collates batches in the main process; has a length for counting."""

    def __init__(self, dataset: Any, collate_fn: Callable[[List[Any]], Any], batches: Sequence[Sequence[int]]) -> None:
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


class EpochBatchIterating:
    """Interface of the multi-epoch iterators the trainer consumes."""

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def next_epoch_idx(self) -> int:
        raise NotImplementedError

    def next_epoch_itr(
        self, shuffle: bool = True, fix_batches_to_gpus: bool = False, set_dataset_epoch: bool = True
    ) -> CountingIterator:
        raise NotImplementedError

    def end_of_epoch(self) -> bool:
        raise NotImplementedError

    @property
    def iterations_in_epoch(self) -> int:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def first_batch(self) -> Any:
        return "DUMMY"


class FrozenBatchSampler:
    """The batches of one epoch, in iteration order, from a given offset on."""

    def __init__(
        self,
        ordered_batches: Callable[[int, bool, bool], List[Any]],
        epoch: int,
        fix_batches_to_gpus: bool,
        shuffle: bool,
        initial_offset: int,
    ) -> None:
        self.ordered_batches = ordered_batches
        self.fix_batches_to_gpus = fix_batches_to_gpus
        self.shuffle = shuffle
        self.make_batches_for_epoch(epoch, initial_offset)

    def make_batches_for_epoch(self, epoch: int, offset: int = 0) -> None:
        """Compute the batches of ``epoch`` and drop the first ``offset``."""
        self.batches = self.ordered_batches(epoch, self.fix_batches_to_gpus, self.shuffle)
        if offset > 0:
            self.batches = self.batches[offset:]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class EpochBatchIterator(EpochBatchIterating):
    """Iterates over a dataset's batches epoch after epoch, deterministically and resumably.

    Each epoch the batch list is shuffled under ``numpy_seed(seed + epoch)`` (fairseq's
    order for the same seed), padded with empty batches to a multiple of ``num_shards``,
    and shard ``k`` takes batches ``k, k + num_shards, ...``: all shards get the same
    number of batches. An empty batch collates to the dataset's empty batch (``{}``),
    which the trainer treats as a dummy batch.

    Args:
        dataset: indexable samples.
        collate_fn: merges a list of samples into a batch.
        batch_sampler: the batches (sequences of sample ids), or a function
            ``batch_sampler(dataset, epoch)`` returning them (called once per epoch).
        seed: base seed of the per-epoch shuffle.
        num_shards: number of data-parallel shards.
        shard_id: this shard, in ``[0, num_shards)``.
        num_workers: DataLoader worker processes; 0 loads in the main process.
        epoch: the epoch the first :meth:`next_epoch_itr` call returns (1-based; lower
            values count as 1).
        buffer_size: batches prefetched by a background thread (at most 20); 0 disables it.
        timeout: DataLoader timeout for collecting a batch from workers (0: none).
        disable_shuffling: never shuffle, whatever :meth:`next_epoch_itr` is told.
        skip_remainder_batch: drop the last batch of every epoch.
        grouped_shuffling: shuffle groups of ``num_shards`` consecutive batches, so every
            shard gets batches of similar length when batches are sorted by length.
        reuse_dataloader: accepted for fairseq compatibility (a loader is built per epoch).
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
        timeout: int = 0,
        disable_shuffling: bool = False,
        skip_remainder_batch: bool = False,
        grouped_shuffling: bool = False,
        reuse_dataloader: bool = False,
    ) -> None:
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id must be in [0, num_shards); got shard_id={shard_id}, num_shards={num_shards}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.batch_sampler = batch_sampler
        self._frozen_batches: Optional[Tuple[Any, ...]] = None if callable(batch_sampler) else tuple(batch_sampler)
        self.seed = seed
        self.num_shards = num_shards
        self.shard_id = shard_id
        self.num_workers = num_workers
        self.buffer_size = min(buffer_size, 20)
        self.timeout = timeout
        self.disable_shuffling = disable_shuffling
        self.skip_remainder_batch = skip_remainder_batch
        self.grouped_shuffling = grouped_shuffling
        self.reuse_dataloader = reuse_dataloader

        self.epoch = max(epoch, 1)
        self.shuffle = not disable_shuffling
        self._cur_epoch_itr: Optional[CountingIterator] = None
        self._next_epoch_itr: Optional[CountingIterator] = None
        self._supports_prefetch = bool(getattr(dataset, "supports_prefetch", False))

    # ---------------------------------------------------------------- batches

    @property
    def frozen_batches(self) -> Tuple[Any, ...]:
        """The unshuffled, unsharded batches of the current epoch."""
        if self._frozen_batches is None:
            self._frozen_batches = tuple(self.batch_sampler(self.dataset, self.epoch))  # type: ignore[operator]
        return self._frozen_batches

    @property
    def first_batch(self) -> Any:
        """The collated first batch of the current epoch.

        Raises:
            DataError: if there is no batch at all.
        """
        if len(self.frozen_batches) == 0:
            raise DataError(
                "the dataset is empty: every sample was skipped or none was loaded; raise --max-tokens or "
                "--max-positions/--tokens-per-sample, or use a larger dataset"
            )
        if getattr(self.dataset, "supports_fetch_outside_dataloader", True):
            return self.collate_fn([self.dataset[index] for index in self.frozen_batches[0]])
        return "DUMMY"

    def __len__(self) -> int:
        """Number of batches per epoch for this shard."""
        return math.ceil(len(self.frozen_batches) / self.num_shards)

    @property
    def n(self) -> int:
        """Batches consumed in the current epoch (same as :attr:`iterations_in_epoch`)."""
        return self.iterations_in_epoch

    def _shuffled(self, batches: List[Any], seed: int) -> List[Any]:
        with data_utils.numpy_seed(seed):
            if self.grouped_shuffling:
                whole = len(batches) // self.num_shards * self.num_shards
                groups = [batches[i : i + self.num_shards] for i in range(0, whole, self.num_shards)]
                np.random.shuffle(groups)
                # the incomplete last group stays last instead of being dropped
                batches = list(itertools.chain(*groups)) + batches[whole:]
            else:
                np.random.shuffle(batches)
        return batches

    def ordered_batches(self, epoch: int, fix_batches_to_gpus: bool, shuffle: bool) -> List[Any]:
        """This shard's batches of ``epoch``, in iteration order (empty-list padded)."""
        if self._supports_prefetch:
            batches = list(self.frozen_batches)
            if shuffle and not fix_batches_to_gpus:
                batches = self._shuffled(batches, self.seed + epoch)
            batches = list(ShardedIterator(batches, self.num_shards, self.shard_id, fill_value=[]))
            self.dataset.prefetch([index for batch in batches for index in batch])
            if shuffle and fix_batches_to_gpus:
                batches = self._shuffled(batches, self.seed + epoch + self.shard_id)
            return batches
        batches = self._shuffled(list(self.frozen_batches), self.seed + epoch) if shuffle else list(self.frozen_batches)
        return list(ShardedIterator(batches, self.num_shards, self.shard_id, fill_value=[]))

    # -------------------------------------------------------------- iterators

    @property
    def next_epoch_idx(self) -> int:
        """The epoch the next :meth:`next_epoch_itr` call will return."""
        if self._next_epoch_itr is not None:
            return self.epoch
        if self._cur_epoch_itr is not None and self.end_of_epoch():
            return self.epoch + 1
        return self.epoch

    def next_epoch_itr(
        self, shuffle: bool = True, fix_batches_to_gpus: bool = False, set_dataset_epoch: bool = True
    ) -> CountingIterator:
        """Return an iterator over the batches of the next epoch.

        The next epoch is the current one again when it was not finished, the following
        one when it was, or the resumed one after :meth:`load_state_dict`.

        Args:
            shuffle: shuffle the batch order (ignored with ``disable_shuffling``).
            fix_batches_to_gpus: with a dataset that supports prefetching, keep each
                shard's set of batches fixed across epochs and shuffle only their order.
            set_dataset_epoch: call ``dataset.set_epoch(epoch)`` if it exists.

        Returns:
            A :class:`CountingIterator` of collated batches whose ``n`` is the number of
            batches consumed in this epoch.
        """
        if self.disable_shuffling:
            shuffle = False
        previous_epoch = self.epoch
        self.epoch = self.next_epoch_idx
        if set_dataset_epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        if self._next_epoch_itr is not None:
            self._cur_epoch_itr, self._next_epoch_itr = self._next_epoch_itr, None
        else:
            if callable(self.batch_sampler) and previous_epoch != self.epoch:
                self._frozen_batches = None
            self._cur_epoch_itr = self._get_iterator_for_epoch(self.epoch, shuffle, fix_batches_to_gpus)
        self.shuffle = shuffle
        return self._cur_epoch_itr  # type: ignore[return-value]

    def end_of_epoch(self) -> bool:
        """Whether the current epoch's iterator is exhausted (False before the first one)."""
        return self._cur_epoch_itr is not None and not self._cur_epoch_itr.has_next()

    @property
    def iterations_in_epoch(self) -> int:
        """Number of batches consumed so far in the current epoch."""
        if self._cur_epoch_itr is not None:
            return self._cur_epoch_itr.n
        if self._next_epoch_itr is not None:
            return self._next_epoch_itr.n
        return 0

    def state_dict(self) -> Dict[str, Any]:
        """Position to resume from: ``{"version": 2, "epoch", "iterations_in_epoch", "shuffle"}``.

        At the end of an epoch the state points at the start of the following one.
        """
        if self.end_of_epoch():
            epoch, iterations = self.epoch + 1, 0
        else:
            epoch, iterations = self.epoch, self.iterations_in_epoch
        return {"version": 2, "epoch": epoch, "iterations_in_epoch": iterations, "shuffle": self.shuffle}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`.

        The next :meth:`next_epoch_itr` call then continues the saved epoch at the first
        batch not yet consumed, in the same order.

        Raises:
            KeyError: if ``state_dict`` has no ``"epoch"``.
            DataError: if the saved position lies beyond this epoch's batches (the data
                or batching options changed since the checkpoint was written).
        """
        self.epoch = int(state_dict["epoch"])
        position = int(state_dict.get("iterations_in_epoch", 0))
        version = int(state_dict.get("version", 1))
        self._cur_epoch_itr = None
        if position > 0:
            self._next_epoch_itr = self._get_iterator_for_epoch(
                self.epoch, shuffle=bool(state_dict.get("shuffle", True)), offset=position
            )
            if self._next_epoch_itr is None:
                if version == 1:  # states without a version: the epoch was complete
                    self.epoch += 1
                else:
                    raise DataError(
                        f"cannot resume epoch {self.epoch} at batch {position}: it has only {len(self)} batches "
                        f"now (the data or --max-tokens/--batch-size changed since the checkpoint); "
                        f"restore them or restart the epoch with --reset-dataloader"
                    )
        else:
            self._next_epoch_itr = None

    def _get_iterator_for_epoch(
        self, epoch: int, shuffle: bool, fix_batches_to_gpus: bool = False, offset: int = 0
    ) -> Optional[CountingIterator]:
        sampler = FrozenBatchSampler(self.ordered_batches, epoch, fix_batches_to_gpus, shuffle, initial_offset=offset)
        if offset > 0 and len(sampler) == 0:
            return None
        remaining = [list(map(int, batch)) for batch in sampler]
        loader: Iterable[Any]
        if self.num_workers > 0:
            loader = torch.utils.data.DataLoader(
                self.dataset,
                collate_fn=self.collate_fn,
                batch_sampler=remaining,
                num_workers=self.num_workers,
                timeout=self.timeout,
                worker_init_fn=_reseed_worker,
                generator=torch.Generator().manual_seed(self.seed + epoch),
            )
        else:
            loader = _SizedBatchLoader(self.dataset, self.collate_fn, remaining)
        if self.buffer_size > 0:
            loader = BufferedIterator(self.buffer_size, loader)
        itr = CountingIterator(loader, start=offset)
        if self.skip_remainder_batch:
            # the epoch's last batch is dropped, also when resuming inside the epoch
            itr.take(max(offset + len(remaining) - 1, 0))
        return itr
