"""LanguagePairDataset: fairseq's pair batching, used by scripts that build batches by hand."""
import torch

from fairseq.data import Dictionary, EpochBatchIterator, LanguagePairDataset
from fairseq.data.language_pair_dataset import collate


def _dictionary() -> Dictionary:
    d = Dictionary()
    for word in "a b c d".split():
        d.add_symbol(word)
    return d


def test_collate_sorts_by_source_length_and_shifts_eos_into_decoder_input():
    d = _dictionary()
    eos, pad = d.eos(), d.pad()
    samples = [
        {"id": 0, "source": torch.tensor([4, eos]), "target": torch.tensor([5, eos])},
        {"id": 1, "source": torch.tensor([4, 5, 6, eos]), "target": torch.tensor([6, 7, eos])},
    ]
    batch = collate(samples, pad_idx=pad, eos_idx=eos)
    assert batch["id"].tolist() == [1, 0]
    assert batch["net_input"]["src_lengths"].tolist() == [4, 2]
    # sources are left-padded, targets right-padded
    assert batch["net_input"]["src_tokens"].tolist() == [[4, 5, 6, eos], [pad, pad, 4, eos]]
    assert batch["target"].tolist() == [[6, 7, eos], [5, eos, pad]]
    assert batch["net_input"]["prev_output_tokens"].tolist() == [[eos, 6, 7], [eos, 5, pad]]
    assert batch["ntokens"] == 5 and batch["nsentences"] == 2


def test_source_only_dataset_batches_through_an_epoch_iterator():
    d = _dictionary()
    src = [torch.tensor([4 + i % 3, d.eos()]) for i in range(6)]
    ds = LanguagePairDataset(src, [2] * 6, d, shuffle=False)
    itr = EpochBatchIterator(dataset=ds, collate_fn=ds.collater,
                             batch_sampler=[[i] for i in range(6)]).next_epoch_itr(shuffle=False)
    firsts = [batch["net_input"]["src_tokens"][0, 0].item() for batch in itr]
    assert firsts == [4, 5, 6, 4, 5, 6]
    assert ds.collater([]) == {}
