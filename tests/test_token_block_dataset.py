"""TokenBlockDataset break modes and shifted targets; MonolingualDataset on top of it."""
import numpy as np
import pytest
import torch

from fairseq.data import Dictionary, MonolingualDataset, TokenBlockDataset

PAD, EOS = 1, 2
# Two documents separated by an empty line (a sentence that is only eos).
SENTENCES = [
    [10, 11, EOS],
    [12, EOS],
    [EOS],  # document separator
    [13, 14, 15, 16, EOS],
    [17, EOS],
]
# Stream: 10 11 2 12 2 | 2 | 13 14 15 16 2 17 2   (13 tokens)


def make_blocks(block_size, break_mode, include_targets=False, sentences=SENTENCES, **kwargs):
    dataset = [torch.tensor(sentence, dtype=torch.int64) for sentence in sentences]
    sizes = np.array([len(sentence) for sentence in sentences])
    return TokenBlockDataset(dataset, sizes, block_size, pad=PAD, eos=EOS, break_mode=break_mode,
                             include_targets=include_targets, **kwargs)


def blocks_of(dataset):
    return [dataset[i].tolist() for i in range(len(dataset))]


@pytest.mark.parametrize("break_mode", [None, "none"])
def test_none_mode_cuts_fixed_size_blocks(break_mode):
    dataset = make_blocks(4, break_mode)
    assert blocks_of(dataset) == [[10, 11, 2, 12], [2, 2, 13, 14], [15, 16, 2, 17], [2]]
    assert dataset.sizes.tolist() == [4, 4, 4, 1]
    assert len(dataset) == 4


def test_complete_mode_packs_whole_sentences_and_keeps_long_ones_whole():
    dataset = make_blocks(4, "complete")
    # The 5-token sentence is longer than the block: it stays whole, a block of its own.
    assert blocks_of(dataset) == [[10, 11, 2], [12, 2, 2], [13, 14, 15, 16, 2], [17, 2]]
    assert dataset.sizes.tolist() == [3, 3, 5, 2]
    assert blocks_of(make_blocks(6, "complete")) == [[10, 11, 2, 12, 2, 2], [13, 14, 15, 16, 2], [17, 2]]


def test_complete_doc_mode_never_crosses_documents_and_drops_separators():
    assert blocks_of(make_blocks(4, "complete_doc")) == [[10, 11, 2], [12, 2], [13, 14, 15, 16, 2], [17, 2]]
    assert blocks_of(make_blocks(6, "complete_doc")) == [[10, 11, 2, 12, 2], [13, 14, 15, 16, 2], [17, 2]]
    # the separator is any sentence of document_sep_len tokens (here: no eos, empty sentences)
    no_eos = [[10, 11], [], [12], [13, 14]]
    dataset = make_blocks(8, "complete_doc", sentences=no_eos, document_sep_len=0)
    assert blocks_of(dataset) == [[10, 11], [12, 13, 14]]
    # a one-token document is kept (fairseq 0.12 drops blocks of fewer than 2 tokens)
    assert blocks_of(make_blocks(8, "complete_doc", sentences=[[10, 11], [], [12], []], document_sep_len=0)) == [
        [10, 11], [12]]


def test_eos_mode_is_one_sentence_per_block_and_needs_no_block_size():
    assert blocks_of(make_blocks(None, "eos")) == SENTENCES
    assert blocks_of(make_blocks(3, "eos")) == SENTENCES  # block_size is ignored
    assert make_blocks(None, "eos").block_to_dataset_index.tolist()[:2] == [[0, 0, 0], [1, 0, 1]]


def test_slice_indices_and_block_to_dataset_index():
    dataset = make_blocks(4, "none")
    assert dataset.slice_indices.tolist() == [[0, 4], [4, 8], [8, 12], [12, 13]]
    # (first sentence, offset of the block start in it, last sentence)
    assert dataset.block_to_dataset_index.tolist() == [[0, 0, 1], [1, 1, 3], [3, 2, 4], [4, 1, 4]]
    assert dataset.slice_indices.dtype == np.int64 and dataset.sizes.dtype == np.int64


def test_none_mode_targets_restart_at_the_sentence_of_the_block_start():
    dataset = make_blocks(4, "none", include_targets=True)
    source, target, past_target = dataset[0]
    assert target.tolist() == [10, 11, 2, 12]
    assert source.tolist() == [EOS, 10, 11, 2]  # eos before the start of the stream
    assert past_target.tolist() == [PAD, EOS, 10, 11]
    source, target, past_target = dataset[1]  # starts at offset 1 of sentence 1 ([12, 2])
    assert target.tolist() == [2, 2, 13, 14]
    assert source.tolist() == [12, 2, 2, 13]
    assert past_target.tolist() == [EOS, 12, 2, 2]  # fairseq: eos before the sentence, not the stream
    source, target, past_target = dataset[3]  # one token at offset 1 of the last sentence
    assert (source.tolist(), target.tolist(), past_target.tolist()) == ([17], [2], [EOS])


def test_targets_of_a_one_token_block_have_its_length():
    dataset = make_blocks(1, "none", include_targets=True)
    source, target, past_target = dataset[0]
    assert (source.tolist(), target.tolist(), past_target.tolist()) == ([EOS], [10], [PAD])


def test_complete_mode_targets_restart_at_sentence_starts():
    dataset = make_blocks(4, "complete", include_targets=True)
    source, target, past_target = dataset[3]
    assert target.tolist() == [17, 2]
    assert source.tolist() == [EOS, 17]
    assert past_target.tolist() == [PAD, EOS]


def test_block_reads_only_overlapping_sentences():
    reads = []

    class Recording(list):
        def __getitem__(self, index):
            reads.append(index)
            return list.__getitem__(self, index)

    sentences = Recording(torch.tensor(s) for s in SENTENCES)
    dataset = TokenBlockDataset(sentences, [len(s) for s in SENTENCES], 4, PAD, EOS, break_mode="none")
    reads.clear()
    dataset[2]  # tokens 8..11: inside sentences 3 and 4
    assert sorted(set(reads)) == [3, 4]


def test_invalid_arguments_are_reported():
    with pytest.raises(ValueError, match="unknown break_mode 'sentences'"):
        make_blocks(4, "sentences")
    with pytest.raises(ValueError, match="block_size must be a positive"):
        make_blocks(0, "none")
    with pytest.raises(ValueError, match="block_size is required with break_mode 'complete'"):
        make_blocks(None, "complete")
    with pytest.raises(ValueError, match="empty"):
        TokenBlockDataset([], [], 4, PAD, EOS)


def reference_complete_blocks(sizes, block_size):
    """The greedy packing spelled out one sentence at a time."""
    blocks, start, current = [], 0, 0
    for size in sizes:
        if current and current + size > block_size:
            blocks.append((start, start + current))
            start, current = start + current, 0
        current += size
    if current:
        blocks.append((start, start + current))
    return blocks


def test_vectorised_packing_matches_the_sentence_by_sentence_rule():
    rng = np.random.RandomState(0)
    for _ in range(200):
        sizes = rng.randint(1, 12, size=rng.randint(1, 30))
        block_size = int(rng.randint(1, 15))
        fake = [torch.tensor([EOS])] * len(sizes)
        dataset = TokenBlockDataset(fake, sizes, block_size, PAD, EOS, break_mode="complete")
        assert [tuple(x) for x in dataset.slice_indices.tolist()] == reference_complete_blocks(sizes, block_size)


class ArangeSentences:
    """A dataset of ``count`` identical sentences ``0..length-1`` made on demand."""

    def __init__(self, count, length):
        self.count, self.length = count, length

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return torch.arange(self.length)


def test_4_billion_tokens_in_bounded_memory():
    """fairseq's test_4billion_tokens: 430000 sentences of 10000 tokens, blocks of 6."""
    import tracemalloc

    sentences = ArangeSentences(430_000, 10_000)
    tracemalloc.start()
    dataset = TokenBlockDataset(sentences, np.full(430_000, 10_000), 6, PAD, EOS, break_mode="complete")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 200 * 2**20  # numpy arrays per sentence and block, never per token
    start, end = dataset.slice_indices[-1]
    assert end == 4_300_000_000 > 2**32 and start == end - 10_000
    assert isinstance(end + 1, np.integer)  # no uint64 + int -> float promotion
    assert len(dataset) == 430_000 and dataset[-1].tolist()[-3:] == [9997, 9998, 9999]
    none_mode = TokenBlockDataset(sentences, np.full(430_000, 10_000), 10_000_000, PAD, EOS)
    assert none_mode.slice_indices[-1].tolist() == [4_290_000_000, 4_300_000_000]


def test_large_corpus_boundaries_are_fast():
    rng = np.random.RandomState(0)
    sizes = rng.randint(1, 50, size=200_000)
    fake = [torch.tensor([EOS])] * len(sizes)  # contents are never read for boundaries here
    for break_mode in ["none", "eos", "complete"]:
        dataset = TokenBlockDataset(fake, sizes, 512, PAD, EOS, break_mode=break_mode)
        assert dataset.sizes.sum() == sizes.sum()


def make_lm_dataset(**kwargs):
    dictionary = Dictionary()
    for word in "a b c d e f g h".split():
        dictionary.add_symbol(word)  # ids 4..11
    sentences = [[4, 5, EOS], [6, 7, 8, 9, EOS], [10, EOS], [11, 4, EOS]]
    tensors = [torch.tensor(s) for s in sentences]
    blocks = TokenBlockDataset(tensors, [len(s) for s in sentences], 4, PAD, EOS, break_mode="none",
                               include_targets=True)
    kwargs.setdefault("targets", ["future"])
    return dictionary, MonolingualDataset(blocks, blocks.sizes, dictionary, **kwargs)


def test_monolingual_dataset_item_and_collater():
    dictionary, dataset = make_lm_dataset()
    item = dataset[0]
    assert item["id"] == 0
    assert item["source"].tolist() == [EOS, 4, 5, EOS]
    assert item["target"].tolist() == [4, 5, EOS, 6]

    batch = dataset.collater([dataset[i] for i in range(len(dataset))])
    assert batch["id"].tolist() == [0, 1, 2, 3]
    assert batch["nsentences"] == 4
    assert batch["net_input"]["src_lengths"].tolist() == [4, 4, 4, 1]
    assert batch["net_input"]["src_tokens"].tolist()[3] == [4, PAD, PAD, PAD]
    assert batch["target"].tolist()[3] == [EOS, PAD, PAD, PAD]
    assert batch["ntokens"] == 4 + 4 + 4 + 1  # fairseq counts source tokens
    assert dataset.collater([]) == {}
    padded = MonolingualDataset(dataset.dataset, dataset.sizes, dictionary, targets=["future"],
                                fixed_pad_length=6, pad_to_bsz=3).collater([dataset[3]])
    assert padded["net_input"]["src_tokens"].shape == (3, 6)


def test_monolingual_dataset_without_targets_uses_the_input():
    dictionary = Dictionary()
    tensors = [torch.tensor([5, 6, EOS]), torch.tensor([7, EOS])]
    dataset = MonolingualDataset(tensors, [3, 2], dictionary)
    batch = dataset.collater([dataset[0], dataset[1]])
    assert dataset[0]["target"] is None
    assert batch["target"] is batch["net_input"]["src_tokens"]


def test_monolingual_dataset_ordering_and_sizes():
    _, dataset = make_lm_dataset()
    assert dataset.sizes.tolist() == [4, 4, 4, 1]
    assert dataset.num_tokens(1) == 4 and dataset.size(3) == 1
    assert dataset.num_tokens_vec(np.array([3, 0])).tolist() == [1, 4]
    assert dataset.ordered_indices().tolist() == [3, 0, 1, 2]
    _, shuffled = make_lm_dataset(shuffle=True, seed=3)
    order = shuffled.ordered_indices().tolist()
    assert order[0] == 3 and sorted(order[1:]) == [0, 1, 2]
    assert shuffled.ordered_indices().tolist() == order  # the seed fixes the tie order
    from fairseq.data import data_utils

    with data_utils.numpy_seed(3):  # fairseq's get_batch_iterator seeds the global RNG this way
        tie = np.random.permutation(4)
    assert order == np.lexsort([tie, shuffled.sizes]).tolist()


def test_monolingual_dataset_bos_and_other_targets():
    dictionary, dataset = make_lm_dataset(add_bos_token=True)
    item = dataset[0]
    assert item["source"].tolist() == [dictionary.bos(), EOS, 4, 5, EOS]
    assert item["target"].tolist() == [dictionary.bos(), 4, 5, EOS, 6]  # fairseq prepends bos to both
    assert dataset.sizes.tolist() == [4, 4, 4, 1]  # sizes are the blocks' (fairseq)
    _, dataset = make_lm_dataset(targets=["self"])
    assert dataset[0]["target"].tolist() == dataset[0]["source"].tolist()
    _, dataset = make_lm_dataset(targets=["future", "past"], add_eos_for_other_targets=True)
    item = dataset[2]  # block [10, 2, 11, 4]: its source [2, 10, 2, 11] gets an eos appended
    assert item["source"].tolist() == [EOS, 10, EOS, 11, EOS]
    future, past = item["target"]
    assert future.tolist() == [10, EOS, 11, 4, PAD]
    assert past.tolist() == [PAD, EOS, 10, EOS, 11]
    with pytest.raises(ValueError, match="unknown target"):
        make_lm_dataset(targets=["sideways"])
