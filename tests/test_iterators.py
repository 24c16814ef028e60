"""Batching helpers and the epoch/shard/resume behaviour of EpochBatchIterator."""
import numpy as np
import pytest
import torch

from fairseq.data import CountingIterator, EpochBatchIterator, GroupedIterator
from fairseq.data.data_utils import batch_by_size, collate_tokens, filter_by_size, numpy_seed

# ------------------------------------------------------------------ data_utils


def test_collate_tokens_pads_right_or_left():
    values = [torch.tensor([5, 6, 7]), torch.tensor([8])]
    assert collate_tokens(values, pad_idx=1).tolist() == [[5, 6, 7], [8, 1, 1]]
    assert collate_tokens(values, pad_idx=1, left_pad=True).tolist() == [[5, 6, 7], [1, 1, 8]]
    assert collate_tokens(values, pad_idx=0, pad_to_length=5).shape == (2, 5)
    assert collate_tokens(values, pad_idx=0, pad_to_multiple=4).shape == (2, 4)


def test_batch_by_size_respects_max_tokens():
    lengths = np.array([2, 2, 3, 3, 4, 5, 5, 8])
    batches = batch_by_size(np.arange(8), num_tokens_vec=lengths, max_tokens=10)
    assert [b.tolist() for b in batches] == [[0, 1, 2], [3, 4], [5, 6], [7]]
    for batch in batches:
        assert lengths[batch].max() * len(batch) <= 10
    same = batch_by_size(np.arange(8), num_tokens_fn=lambda i: int(lengths[i]), max_tokens=10)
    assert [b.tolist() for b in same] == [b.tolist() for b in batches]


def test_batch_by_size_prefers_the_required_multiple():
    batches = batch_by_size(np.arange(10), num_tokens_vec=np.ones(10, dtype=np.int64), max_tokens=7,
                            required_batch_size_multiple=2)
    # 7 samples fit; the multiple keeps 6 and carries the 7th into the next batch.
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]


def test_batch_by_size_max_sentences_and_default():
    batches = batch_by_size(np.arange(5), max_sentences=2)
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    # no bound at all: one batch (fairseq); the multiple then applies to it too
    assert [b.tolist() for b in batch_by_size(np.arange(3))] == [[0, 1, 2]]
    batches = batch_by_size(np.arange(7), max_sentences=5, required_batch_size_multiple=2)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5], [6]]  # 3 > 2 is cut to 2


def reference_batches(lengths, max_tokens, max_sentences, multiple):
    """fairseq's rule spelled out: the longest fitting run, cut to a multiple when longer."""
    batches, start = [], 0
    while start < len(lengths):
        count = 0
        while start + count < len(lengths):
            grown = count + 1
            cost = max(lengths[start : start + grown]) * grown
            if (max_tokens > 0 and cost > max_tokens) or (max_sentences > 0 and grown > max_sentences):
                break
            count = grown
        if count > multiple:
            count -= count % multiple
        batches.append(list(range(start, start + count)))
        start += count
    return batches


def test_batch_by_size_fn_and_vec_follow_fairseqs_rule():
    from fairseq.data.data_utils_fast import batch_by_size_fn, batch_by_size_vec

    rng = np.random.RandomState(0)
    for _ in range(300):
        size = rng.randint(1, 14)
        max_tokens, max_sentences, multiple = rng.randint(0, 12), rng.randint(0, 6), rng.randint(1, 5)
        lengths = rng.randint(0, max(max_tokens, 1) + 1, size=size)
        if max_tokens == 0:
            lengths = rng.randint(0, 9, size=size)
        expected = reference_batches(lengths.tolist(), max_tokens, max_sentences, multiple)
        vec = batch_by_size_vec(np.arange(size), lengths, max_tokens, max_sentences, multiple)
        fn = batch_by_size_fn(np.arange(size), lambda i, lengths=lengths: lengths[i], max_tokens, max_sentences, multiple)
        assert [b.tolist() for b in vec] == expected == [b.tolist() for b in fn]


def test_batch_by_size_with_fixed_shapes():
    lengths = [2, 2, 2, 6, 6, 2]
    batches = batch_by_size(np.arange(6), num_tokens_fn=lambda i: lengths[i], fixed_shapes=[(1, 8), (4, 2)])
    assert [b.tolist() for b in batches] == [[0, 1, 2], [3], [4], [5]]


def test_batch_by_size_rejects_sample_larger_than_max_tokens():
    with pytest.raises(ValueError, match=r"sample 1 has 12 tokens, more than max_tokens=10.*--max-tokens"):
        batch_by_size(np.arange(2), num_tokens_vec=np.array([3, 12]), max_tokens=10)


def test_filter_by_size():
    kept, ignored = filter_by_size(np.array([3, 0, 1, 2]), np.array([5, 9, 2, 7]), max_size=6)
    assert kept.tolist() == [0, 2]  # input order kept
    assert ignored == [3, 1]
    with pytest.raises(ValueError, match="longer than the maximum size"):
        filter_by_size(np.arange(4), np.array([5, 9, 2, 7]), max_size=6, raise_exception=True)


def test_numpy_seed_sets_and_restores_state():
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    with numpy_seed(7, 2):
        first = np.random.rand()
    assert np.random.rand() == expected_next  # outer state untouched
    with numpy_seed(7, 2):
        assert np.random.rand() == first
    with numpy_seed(7, 3):
        assert np.random.rand() != first


# ------------------------------------------------------------------- iterators


def test_counting_iterator_counts_skips_and_takes():
    itr = CountingIterator(range(10))
    assert itr.n == 0 and len(itr) == 10
    assert next(itr) == 0 and itr.n == 1
    itr.skip(3)
    assert next(itr) == 4
    itr.take(7)
    assert list(itr) == [5, 6]
    assert not itr.has_next()
    resumed = CountingIterator(range(4), start=6)
    assert resumed.n == 6 and resumed.total == 10


def test_grouped_iterator_chunks_and_counts():
    grouped = GroupedIterator(CountingIterator(range(7)), 3)
    assert len(grouped) == 3
    assert next(grouped) == [0, 1, 2] and grouped.n == 1
    assert list(grouped) == [[3, 4, 5], [6]]
    assert not grouped.has_next()


class Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, index):
        return index * index


def collate(samples):
    return {} if not samples else torch.tensor(samples)


BATCHES = [np.arange(start, min(start + 3, 20)) for start in range(0, 20, 3)]  # 7 batches


def make_iterator(**kwargs):
    return EpochBatchIterator(Squares(), collate, BATCHES, **kwargs)


def as_lists(iterator):
    return [batch.tolist() if torch.is_tensor(batch) else batch for batch in iterator]


def test_epoch_order_is_deterministic_per_seed_and_varies_by_epoch():
    epoch1 = as_lists(make_iterator(seed=5).next_epoch_itr())
    assert epoch1 == as_lists(make_iterator(seed=5).next_epoch_itr())
    assert sorted(map(tuple, epoch1)) == sorted(tuple(np.square(b).tolist()) for b in BATCHES)

    iterator = make_iterator(seed=5)
    first = as_lists(iterator.next_epoch_itr())
    assert iterator.end_of_epoch() and iterator.epoch == 1
    second = as_lists(iterator.next_epoch_itr())
    assert iterator.epoch == 2
    assert first == epoch1 and second != first
    assert as_lists(make_iterator(seed=5, disable_shuffling=True).next_epoch_itr()) == [
        np.square(b).tolist() for b in BATCHES
    ]


def test_unfinished_epoch_is_restarted():
    iterator = make_iterator()
    itr = iterator.next_epoch_itr()
    next(itr)
    assert iterator.next_epoch_idx == 1
    assert len(as_lists(iterator.next_epoch_itr())) == 7 and iterator.epoch == 1


def test_shards_partition_the_batches_and_have_equal_length():
    shards = [make_iterator(num_shards=3, shard_id=k, seed=2) for k in range(3)]
    outputs = [as_lists(shard.next_epoch_itr()) for shard in shards]
    assert all(len(shard) == 3 for shard in shards)
    assert [len(output) for output in outputs] == [3, 3, 3]
    real = [tuple(batch) for output in outputs for batch in output if batch != {}]
    assert sorted(real) == sorted(tuple(np.square(b).tolist()) for b in BATCHES)
    assert sum(batch == {} for output in outputs for batch in output) == 2  # 7 padded to 9


def test_mid_epoch_resume_continues_with_the_exact_next_batch():
    uninterrupted = make_iterator(seed=9)
    as_lists(uninterrupted.next_epoch_itr())  # epoch 1
    expected = as_lists(uninterrupted.next_epoch_itr())  # epoch 2

    interrupted = make_iterator(seed=9)
    as_lists(interrupted.next_epoch_itr())
    itr = interrupted.next_epoch_itr()
    consumed = [next(itr).tolist() for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"version": 2, "epoch": 2, "iterations_in_epoch": 3, "shuffle": True}

    resumed = make_iterator(seed=9)
    resumed.load_state_dict(state)
    assert resumed.iterations_in_epoch == 3 and resumed.next_epoch_idx == 2
    rest_itr = resumed.next_epoch_itr()
    assert rest_itr.n == 3 and len(rest_itr) == 7
    assert consumed + as_lists(rest_itr) == expected
    assert resumed.epoch == 2 and resumed.end_of_epoch()


def test_state_at_end_of_epoch_resumes_with_the_next_epoch():
    iterator = make_iterator(seed=4)
    as_lists(iterator.next_epoch_itr())
    state = iterator.state_dict()
    assert state["epoch"] == 2 and state["iterations_in_epoch"] == 0

    reference = make_iterator(seed=4)
    as_lists(reference.next_epoch_itr())
    second_epoch = as_lists(reference.next_epoch_itr())

    resumed = make_iterator(seed=4)
    resumed.load_state_dict(state)
    assert as_lists(resumed.next_epoch_itr()) == second_epoch and resumed.epoch == 2

    # An old (unversioned) state saved as "all batches consumed" moves on to the next epoch;
    # a version-2 state beyond the epoch means the data changed: a clear error.
    finished = make_iterator(seed=4)
    finished.load_state_dict({"epoch": 1, "iterations_in_epoch": 7, "shuffle": True})
    assert finished.next_epoch_idx == 2
    from fairseq.data.errors import DataError

    with pytest.raises(DataError, match="cannot resume epoch 1 at batch 9.*--reset-dataloader"):
        make_iterator(seed=4).load_state_dict({"version": 2, "epoch": 1, "iterations_in_epoch": 9})


def test_batch_sampler_may_be_a_function_of_the_epoch():
    calls = []

    def sampler(dataset, epoch):  # fairseq's signature
        calls.append(epoch)
        return [np.array([epoch])]

    iterator = EpochBatchIterator(Squares(), collate, sampler)
    assert as_lists(iterator.next_epoch_itr()) == [[1]]
    assert as_lists(iterator.next_epoch_itr()) == [[4]]
    assert calls == [1, 2]


def test_workers_and_buffer_give_the_same_batches():
    expected = as_lists(make_iterator(seed=3).next_epoch_itr())
    assert as_lists(make_iterator(seed=3, num_workers=2).next_epoch_itr()) == expected
    assert as_lists(make_iterator(seed=3, buffer_size=2).next_epoch_itr()) == expected


def test_skip_remainder_batch_sharding_and_buffering():
    from fairseq.data import BufferedIterator, ListDataset, ShardedIterator

    dataset = ListDataset(list(range(7)))
    batches = [[0, 1], [2, 3], [4, 5], [6]]
    itr = EpochBatchIterator(dataset, dataset.collater, batches, skip_remainder_batch=True)
    epoch = itr.next_epoch_itr(shuffle=False)
    assert len(epoch) == 3 and list(epoch) == [[0, 1], [2, 3], [4, 5]]
    # resuming inside the epoch still drops only the last batch
    resumed = EpochBatchIterator(dataset, dataset.collater, batches, skip_remainder_batch=True)
    resumed.load_state_dict({"version": 2, "epoch": 1, "iterations_in_epoch": 1, "shuffle": False})
    assert list(resumed.next_epoch_itr()) == [[2, 3], [4, 5]]

    assert list(ShardedIterator(range(5), num_shards=2, shard_id=1, fill_value=-1)) == [1, 3, -1]
    with pytest.raises(ValueError, match="shard_id"):
        ShardedIterator(range(5), num_shards=2, shard_id=2)
    buffered = BufferedIterator(2, list(range(10)))
    counting = CountingIterator(buffered).take(4)
    assert list(counting) == [0, 1, 2, 3] and len(buffered) == 4


def test_shuffle_matches_fairseqs_seeded_order():
    batches = [[i] for i in range(10)]
    itr = EpochBatchIterator(Squares(), collate, batches, seed=5)
    order = [int(b[0]) for b in itr.next_epoch_itr()]
    with numpy_seed(5 + 1):  # fairseq: np.random.shuffle under numpy_seed(seed + epoch)
        expected = list(range(10))
        np.random.shuffle(expected)
    assert order == [v * v for v in expected]


def test_grouped_shuffling_keeps_groups_of_num_shards_together():
    batches = [[i] for i in range(9)]
    itr = EpochBatchIterator(Squares(), collate, batches, num_shards=2, shard_id=0, grouped_shuffling=True)
    other = EpochBatchIterator(Squares(), collate, batches, num_shards=2, shard_id=1, grouped_shuffling=True)
    mine = [int(b[0]) if len(b) else None for b in itr.next_epoch_itr()]
    theirs = [int(b[0]) if len(b) else None for b in other.next_epoch_itr()]
    assert sorted(v for v in mine + theirs if v is not None) == [i * i for i in range(9)]  # nothing dropped
    pairs = [(a, b) for a, b in zip(mine, theirs) if a is not None and b is not None]
    assert all({int(a ** 0.5), int(b ** 0.5)} in ({2 * k, 2 * k + 1} for k in range(4)) for a, b in pairs)
