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


def make_blocks(block_size, break_mode, include_targets=False, sentences=SENTENCES):
    dataset = [torch.tensor(sentence, dtype=torch.int32) for sentence in sentences]
    sizes = np.array([len(sentence) for sentence in sentences])
    return TokenBlockDataset(dataset, sizes, block_size, pad=PAD, eos=EOS, break_mode=break_mode,
                             include_targets=include_targets)


def blocks_of(dataset):
    return [dataset[i].tolist() for i in range(len(dataset))]


@pytest.mark.parametrize("break_mode", [None, "none"])
def test_none_mode_cuts_fixed_size_blocks(break_mode):
    dataset = make_blocks(4, break_mode)
    assert blocks_of(dataset) == [[10, 11, 2, 12], [2, 2, 13, 14], [15, 16, 2, 17], [2]]
    assert dataset.sizes.tolist() == [4, 4, 4, 1]
    assert len(dataset) == 4


def test_complete_mode_packs_whole_sentences_and_splits_long_ones():
    dataset = make_blocks(4, "complete")
    # The 5-token sentence is longer than the block: split into 4 + 1.
    assert blocks_of(dataset) == [[10, 11, 2], [12, 2, 2], [13, 14, 15, 16], [2], [17, 2]]
    assert blocks_of(make_blocks(6, "complete")) == [[10, 11, 2, 12, 2, 2], [13, 14, 15, 16, 2], [17, 2]]


def test_complete_doc_mode_never_crosses_documents_and_drops_separators():
    assert blocks_of(make_blocks(4, "complete_doc")) == [[10, 11, 2], [12, 2], [13, 14, 15, 16], [2], [17, 2]]
    assert blocks_of(make_blocks(6, "complete_doc")) == [[10, 11, 2, 12, 2], [13, 14, 15, 16, 2], [17, 2]]


def test_eos_mode_is_one_sentence_per_block():
    assert blocks_of(make_blocks(8, "eos")) == SENTENCES
    assert blocks_of(make_blocks(3, "eos")) == [[10, 11, 2], [12, 2], [2], [13, 14, 15], [16, 2], [17, 2]]


def test_every_mode_keeps_blocks_within_block_size():
    for break_mode in ["none", "complete", "complete_doc", "eos"]:
        assert make_blocks(3, break_mode).sizes.max() <= 3


def test_none_mode_targets_continue_the_stream():
    dataset = make_blocks(4, "none", include_targets=True)
    source, target, past_target = dataset[0]
    assert target.tolist() == [10, 11, 2, 12]
    assert source.tolist() == [EOS, 10, 11, 2]  # eos before the start of the stream
    assert past_target.tolist() == [PAD, EOS, 10, 11]
    source, target, past_target = dataset[1]
    assert target.tolist() == [2, 2, 13, 14]
    assert source.tolist() == [12, 2, 2, 13]  # previous block's last token first
    assert past_target.tolist() == [2, 12, 2, 2]


def test_complete_mode_targets_restart_at_sentence_starts():
    dataset = make_blocks(4, "complete", include_targets=True)
    source, target, past_target = dataset[4]
    assert target.tolist() == [17, 2]
    assert source.tolist() == [EOS, 17]
    assert past_target.tolist() == [PAD, EOS]
    # The tail piece of the split sentence is conditioned on the sentence's own tokens.
    source, target, past_target = dataset[3]
    assert (source.tolist(), target.tolist(), past_target.tolist()) == ([16], [2], [15])


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
    sentences = [[4, 5, EOS], [6, 7, 8, 9, EOS], [10, EOS]]
    tensors = [torch.tensor(s) for s in sentences]
    blocks = TokenBlockDataset(tensors, [len(s) for s in sentences], 4, PAD, EOS, break_mode="eos",
                               include_targets=True)
    return dictionary, MonolingualDataset(blocks, blocks.sizes, dictionary, **kwargs)


def test_monolingual_dataset_item_and_collater():
    dictionary, dataset = make_lm_dataset()
    item = dataset[0]
    assert item["id"] == 0
    assert item["source"].tolist() == [EOS, 4, 5]
    assert item["target"].tolist() == [4, 5, EOS]

    batch = dataset.collater([dataset[i] for i in range(len(dataset))])
    assert batch["id"].tolist() == [0, 1, 2, 3]
    assert batch["nsentences"] == 4
    assert batch["net_input"]["src_lengths"].tolist() == [3, 4, 1, 2]
    assert batch["net_input"]["src_tokens"].tolist()[2] == [9, PAD, PAD, PAD]  # tail piece of sentence 2
    assert batch["target"].tolist()[3] == [10, EOS, PAD, PAD]
    assert batch["ntokens"] == 3 + 4 + 1 + 2
    assert dataset.collater([]) == {}


def test_monolingual_dataset_ordering_and_sizes():
    _, dataset = make_lm_dataset()
    assert dataset.sizes.tolist() == [3, 4, 1, 2]
    assert dataset.num_tokens(1) == 4 and dataset.size(2) == 1
    assert dataset.ordered_indices().tolist() == [2, 3, 0, 1]
    _, shuffled = make_lm_dataset(shuffle=True, seed=3)
    assert shuffled.ordered_indices().tolist() == [2, 3, 0, 1]  # all sizes differ: same order


def test_monolingual_dataset_bos_and_other_targets():
    dictionary, dataset = make_lm_dataset(add_bos_token=True)
    item = dataset[0]
    assert item["source"].tolist() == [dictionary.bos(), EOS, 4, 5]
    assert item["target"].tolist() == [PAD, 4, 5, EOS]
    _, dataset = make_lm_dataset(targets=["self"])
    assert dataset[0]["target"].tolist() == dataset[0]["source"].tolist()
    with pytest.raises(NotImplementedError):
        make_lm_dataset(targets=["future", "past"])
