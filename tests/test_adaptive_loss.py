"""adaptive_loss: the cross entropy of the adaptive softmax's full distribution, band by band."""
import math

import pytest
import torch

from conftest import train_losses

TINY_MODEL = [
    "model.decoder_layers=1", "model.decoder_embed_dim=16", "model.decoder_input_dim=16",
    "model.decoder_output_dim=16", "model.decoder_ffn_embed_dim=32", "model.decoder_attention_heads=2",
]
CUTOFF = (20, 200)  # head: the 20 most frequent ids; tails: 20-199 and 200-end


def setup(data_bin, *overrides):
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config

    cfg = compose_config([f"task.data={data_bin}", "task.sample_break_mode=eos", "task.tokens_per_sample=24",
                          "criterion=adaptive_loss", *TINY_MODEL, *overrides])
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    model = task.build_model(cfg.model).eval()
    return task, model, task.build_criterion(cfg.criterion)


def valid_batch(task, size=8):
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    return dataset.collater([dataset[i] for i in range(size)])


def reference_nll(model, sample, pad):
    """Per-position -log p(target) from the full (B, T, V) distribution; 0 at pads."""
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True, sample=sample)
    target = sample["target"]
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return nll.masked_fill(target.eq(pad), 0.0)


@pytest.fixture(scope="module")
def adaptive(data_bin):
    return setup(data_bin, f"model.adaptive_softmax_cutoff='{CUTOFF[0]},{CUTOFF[1]}'")


def test_loss_equals_the_full_cross_entropy_over_non_pad_tokens(adaptive):
    task, model, criterion = adaptive
    sample = valid_batch(task)
    target = sample["target"]
    pad = task.target_dictionary.pad()
    assert target.eq(pad).any()  # ragged batch: pads are ignored
    assert (target >= CUTOFF[1]).any() and ((target >= CUTOFF[0]) & (target < CUTOFF[1])).any()
    with torch.no_grad():
        loss, sample_size, log = criterion(model, sample)
    expected = reference_nll(model, sample, pad)
    assert torch.allclose(loss, expected.sum(), rtol=1e-5)
    assert sample_size == sample["ntokens"] == int(target.ne(pad).sum())
    assert log["ntokens"] == sample["ntokens"] and log["nsentences"] == 8 and log["sample_size"] == sample_size
    assert not log["loss"].requires_grad and torch.equal(log["loss"], loss)


def test_unreduced_loss_is_per_position(adaptive):
    task, model, criterion = adaptive
    sample = valid_batch(task)
    with torch.no_grad():
        per_position, _, _ = criterion(model, sample, reduce=False)
    expected = reference_nll(model, sample, task.target_dictionary.pad())
    assert per_position.shape == sample["target"].shape
    assert torch.allclose(per_position, expected, atol=1e-5)


def test_a_tail_word_whose_band_offset_equals_the_pad_id_still_counts(adaptive):
    task, model, criterion = adaptive
    pad = task.target_dictionary.pad()
    tail_word = CUTOFF[0] + pad  # its id within the first tail is the pad id
    src_tokens = torch.tensor([[2, 50, 60, 70], [2, 80, 90, pad]])
    target = torch.tensor([[50, tail_word, 5, CUTOFF[1] + pad], [tail_word, tail_word, 2, pad]])
    sample = {"net_input": {"src_tokens": src_tokens, "src_lengths": torch.tensor([4, 3])},
              "target": target, "ntokens": 7, "nsentences": 2}
    with torch.no_grad():
        loss, _, _ = criterion(model, sample)
    assert torch.allclose(loss, reference_nll(model, sample, pad).sum(), rtol=1e-5)


def test_the_model_distribution_sums_to_one_over_the_vocabulary(adaptive):
    task, model, _ = adaptive
    sample = valid_batch(task, size=4)
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
    assert lprobs.shape[-1] == len(task.target_dictionary)
    assert torch.allclose(lprobs.exp().sum(-1), torch.ones(lprobs.shape[:2]), atol=1e-5)


def test_gradients_reach_every_band(adaptive):
    task, model, criterion = adaptive
    model.zero_grad()
    loss, _, _ = criterion(model, valid_batch(task))
    loss.backward()
    softmax = model.decoder.adaptive_softmax
    for parameter in [softmax.head_word_weight, *softmax.tail_out]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    model.zero_grad()


def test_sentence_avg_makes_the_sample_size_the_number_of_sentences(data_bin):
    task, model, criterion = setup(data_bin, "model.adaptive_softmax_cutoff='20,200'",
                                   "optimization.sentence_avg=true")
    with torch.no_grad():
        _, sample_size, log = criterion(model, valid_batch(task, size=5))
    assert sample_size == 5 == log["sample_size"]


def test_a_model_without_adaptive_softmax_is_refused_with_the_fix(data_bin):
    task, model, criterion = setup(data_bin)
    with pytest.raises(ValueError, match=r"model\.adaptive_softmax_cutoff is unset.*"
                                         r"model\.adaptive_softmax_cutoff='10000,50000' "
                                         r"\(legacy: --adaptive-softmax-cutoff 10000,50000\)"):
        criterion(model, valid_batch(task, size=2))


def test_metrics_are_base_2_like_cross_entropy(adaptive):
    task, model, criterion = adaptive
    with torch.no_grad():
        loss, sample_size, log = criterion(model, valid_batch(task))
    stats = criterion.reduce_metrics([log, log])
    assert stats["loss"] == pytest.approx(loss.item() / sample_size / math.log(2), rel=1e-5)
    assert stats["ppl"] == pytest.approx(2 ** stats["nll_loss"], rel=1e-5)


def test_training_through_the_legacy_door(data_bin, tmp_path):
    from fairseq_cli import train as train_cli

    log = str(tmp_path / "log")
    train_cli.cli_main([
        data_bin, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "32",
        "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-attention-heads", "2", "--criterion", "adaptive_loss",
        "--adaptive-softmax-cutoff", "50,500", "--optimizer", "adam", "--lr", "0.003",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "2", "--tokens-per-sample", "32",
        "--max-tokens", "128", "--max-update", "3", "--log-format", "json", "--log-interval", "1",
        "--num-workers", "0", "--save-dir", str(tmp_path / "ck"), "--log-file", log, "--seed", "3",
    ])
    losses = train_losses(log)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
    assert state["cfg"]["criterion"]["_name"] == "adaptive_loss"
    assert state["cfg"]["model"]["adaptive_softmax_cutoff"] == "50,500"
    assert any(k.startswith("decoder.adaptive_softmax.") for k in state["model"])
