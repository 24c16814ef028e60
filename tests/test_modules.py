"""Tests of the building blocks in fairseq.modules, each used the way the decoder uses it."""
import math

import pytest
import torch
import torch.nn.functional as F

from fairseq.modules import (
    AdaptiveInput,
    AdaptiveSoftmax,
    LearnedPositionalEmbedding,
    MultiheadAttention,
    PositionalEmbedding,
    SinusoidalPositionalEmbedding,
    TransformerDecoderLayer,
    get_activation_fn,
)
from fairseq.modules.activations import ACTIVATION_NAMES
from fairseq.modules.adaptive_input import normalize_cutoff
from fairseq.modules.positional_embedding import make_positions

PAD = 1


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- activations -------------------------------------------------------------------------------
def test_every_activation_name_resolves():
    x = torch.linspace(-3, 3, 7)
    for name in ACTIVATION_NAMES:
        assert get_activation_fn(name)(x).shape == x.shape
    assert torch.equal(get_activation_fn("linear")(x), x)
    assert torch.allclose(get_activation_fn("gelu_fast")(x), get_activation_fn("gelu_accurate")(x))
    assert torch.allclose(get_activation_fn("gelu_fast")(x), get_activation_fn("gelu")(x), atol=1e-3)


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="swish.*relu"):
        get_activation_fn("swish")


# -- positions ---------------------------------------------------------------------------------
def test_positions_start_after_pad_and_skip_right_padding():
    tokens = torch.tensor([[5, 6, 7], [8, 9, PAD]])
    assert make_positions(tokens, PAD).tolist() == [[2, 3, 4], [2, 3, PAD]]


def test_positions_continue_from_past_counts():
    tokens = torch.tensor([[5], [PAD]])
    assert make_positions(tokens, PAD, past_counts=torch.tensor([3, 2])).tolist() == [[5], [PAD]]


def test_sinusoidal_table_is_a_non_persistent_buffer_that_grows_on_demand():
    emb = SinusoidalPositionalEmbedding(8, PAD, init_size=4)
    assert "weights" not in emb.state_dict() and not list(emb.parameters())
    out = emb(torch.full((2, 10), 5))  # longer than the initial table
    assert out.shape == (2, 10, 8)
    assert emb.weights.size(0) >= 10 + PAD + 1
    p = PAD + 1  # the first real token; row p holds sines then cosines of p * frequencies
    assert torch.allclose(emb.weights[p, [0, 4]], torch.tensor([math.sin(p), math.cos(p)]))
    assert torch.allclose(emb.weights[p, [3, 7]], torch.tensor([math.sin(p / 1e4), math.cos(p / 1e4)]))
    assert torch.all(emb(torch.tensor([[PAD]])) == 0)


def test_sinusoidal_odd_dimension():
    assert SinusoidalPositionalEmbedding(7, PAD)(torch.tensor([[4, 5]])).shape == (1, 2, 7)


def test_learned_positions_are_trainable_and_bounded():
    emb = PositionalEmbedding(6, 8, PAD, learned=True)
    assert isinstance(emb, LearnedPositionalEmbedding) and emb.max_positions == 6
    assert emb(torch.full((1, 6), 4)).shape == (1, 6, 8)
    assert torch.all(emb(torch.tensor([[PAD]])) == 0)
    with pytest.raises(ValueError, match="longer than"):
        emb(torch.full((1, 7), 4))


# -- attention ---------------------------------------------------------------------------------
def reference_causal_attention(attn: MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Plain softmax(QK^T / sqrt(d)) V with a triangular mask, for comparison."""
    B, T, C = x.shape
    q, k, v = attn.in_proj(x).split(C, dim=2)
    heads = lambda t: t.view(B, T, attn.num_heads, attn.head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)
    scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return attn.out_proj(y)


def test_attention_matches_reference_causal_attention():
    attn = MultiheadAttention(16, 4).eval()
    x = torch.randn(2, 5, 16)
    assert torch.allclose(attn(x), reference_causal_attention(attn, x), atol=1e-5)


def test_attention_cache_one_step_at_a_time_matches_full():
    attn = MultiheadAttention(16, 4).eval()
    x = torch.randn(2, 5, 16)
    cache = {}
    steps = [attn(x[:, t : t + 1], cache=cache) for t in range(5)]
    assert cache["key"].shape == (2, 4, 5, 4)
    assert torch.allclose(torch.cat(steps, dim=1), attn(x), atol=1e-5)


def test_attention_several_new_tokens_after_a_cache_need_a_mask():
    attn = MultiheadAttention(16, 4)
    cache = {}
    attn(torch.randn(1, 2, 16), cache=cache)
    with pytest.raises(ValueError, match="explicit attn_mask"):
        attn(torch.randn(1, 2, 16), cache=cache)


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 3)


# -- decoder layer -----------------------------------------------------------------------------
@pytest.mark.parametrize("normalize_before", [False, True])
def test_decoder_layer_is_causal(normalize_before):
    layer = TransformerDecoderLayer(16, 32, 4, normalize_before=normalize_before).eval()
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16)
    assert torch.allclose(layer(x)[:, :4], layer(y)[:, :4], atol=1e-6)


def test_post_norm_output_is_normalized():
    layer = TransformerDecoderLayer(16, 32, 4, normalize_before=False).eval()
    out = layer(torch.randn(2, 3, 16) * 5)
    assert torch.allclose(out.mean(-1), torch.zeros(2, 3), atol=1e-5)


# -- adaptive input / softmax ------------------------------------------------------------------
def test_normalize_cutoff():
    assert normalize_cutoff("10,30", 50) == [10, 30, 50]
    assert normalize_cutoff([10, 50], 50) == [10, 50]
    for bad in ("30,10", "10,60", "0,10"):
        with pytest.raises(ValueError, match="increasing"):
            normalize_cutoff(bad, 50)


def test_adaptive_input_embeds_each_band_with_its_own_size():
    emb = AdaptiveInput(50, PAD, initial_dim=16, factor=2, output_dim=12, cutoff="10,30")
    assert [e.embedding_dim for e in emb.embeddings] == [16, 8, 4]
    tokens = torch.tensor([[PAD, 3, 15, 45]])
    out = emb(tokens)
    assert out.shape == (1, 4, 12) and emb.embedding_dim == 12
    assert torch.all(out[0, 0] == 0)  # pad
    expected_tail = emb.projections[2](emb.embeddings[2](torch.tensor([45 - 30])))
    assert torch.allclose(out[0, 3], expected_tail[0])


def test_adaptive_softmax_log_probs_sum_to_one():
    softmax = AdaptiveSoftmax(50, 16, "10,30", factor=2).eval()
    log_probs = softmax.get_log_prob(torch.randn(2, 3, 16))
    assert log_probs.shape == (2, 3, 50) and log_probs.dtype == torch.float32
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 3), atol=1e-5)


def test_adaptive_softmax_training_output_gives_the_same_nll():
    softmax = AdaptiveSoftmax(50, 16, "10,30", factor=2).eval()
    x, target = torch.randn(2, 4, 16), torch.tensor([[1, 12, 40, 9], [31, 5, 29, 11]])
    logits, targets = softmax(x, target)
    assert len(logits) == len(targets) == 3
    assert targets[0].tolist() == [1, 10, 11, 9, 11, 5, 10, 10]  # tail words -> cluster tokens
    nll = sum(F.cross_entropy(lg, tg, reduction="sum") for lg, tg in zip(logits, targets))
    expected = -softmax.get_log_prob(x).view(-1, 50).gather(1, target.view(-1, 1)).sum()
    assert torch.allclose(nll, expected, atol=1e-4)


def test_adaptive_softmax_empty_tail_is_none():
    softmax = AdaptiveSoftmax(50, 16, "10,30")
    logits, targets = softmax(torch.randn(1, 2, 16), torch.tensor([[2, 3]]))
    assert logits[1] is None and targets[2] is None


def test_adaptive_softmax_ties_tables_and_projections_to_the_input():
    emb = AdaptiveInput(50, PAD, initial_dim=16, factor=2, output_dim=16, cutoff="10,30")
    softmax = AdaptiveSoftmax(50, 16, "10,30", factor=2, adaptive_input=emb, tie_proj=True)
    assert softmax.head_word_weight is emb.embeddings[0].weight
    for i in (1, 2):
        assert softmax.tail_out[i - 1] is emb.embeddings[i].weight
        assert softmax.tail_proj[i - 1] is emb.projections[i].weight
    log_probs = softmax.get_log_prob(torch.randn(1, 2, 16))
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(1, 2), atol=1e-5)


def test_adaptive_softmax_tie_needs_matching_bands():
    emb = AdaptiveInput(50, PAD, initial_dim=16, factor=2, output_dim=16, cutoff="10,30")
    with pytest.raises(ValueError, match="cutoff"):
        AdaptiveSoftmax(50, 16, "20,30", adaptive_input=emb)
