"""The CPU dropout: F.dropout's semantics from a cheaper mask (fairseq/modules/fairseq_dropout.py)."""
import math

import pytest
import torch
from torch import nn

from fairseq.modules.fairseq_dropout import FairseqDropout, dropout


def _dropped_fraction_bounds(p: float, n: int):
    exact = round(p * 65536) / 65536
    sigma = math.sqrt(exact * (1 - exact) / n)
    return exact - 6 * sigma, exact + 6 * sigma


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.9])
def test_each_element_is_dropped_with_probability_p_and_the_kept_are_scaled_to_keep_the_mean(p):
    torch.manual_seed(0)
    n = 1 << 20
    y = dropout(torch.ones(n), p)
    dropped = y == 0
    low, high = _dropped_fraction_bounds(p, n)
    assert low < dropped.float().mean().item() < high
    # every 16-bit quarter of a random word is used: each lane of four drops at the same rate
    for lane in range(4):
        low, high = _dropped_fraction_bounds(p, n // 4)
        assert low < dropped[lane::4].float().mean().item() < high, lane
    kept = y[~dropped]
    assert torch.all(kept == kept[0])  # one scale for all
    keep_probability = 1 - round(p * 65536) / 65536
    assert kept[0].item() == pytest.approx(1 / keep_probability, rel=1e-6)
    assert y.double().mean().item() == pytest.approx(1.0, abs=6 * math.sqrt(p / (1 - p) / n))


def test_the_gradient_goes_through_the_kept_elements_scaled_as_in_forward():
    torch.manual_seed(1)
    x = torch.randn(4, 32, 24, requires_grad=True)
    y = dropout(x, 0.2)
    multiplier = y.detach() / x.detach()
    upstream = torch.randn_like(y)
    y.backward(upstream)
    assert torch.allclose(x.grad, upstream * multiplier, rtol=1e-6, atol=0)
    kept = multiplier != 0
    assert 0 < kept.float().mean().item() < 1
    assert torch.allclose(multiplier[kept], torch.full_like(multiplier[kept], 1.25), rtol=1e-5)


def test_the_same_seed_gives_the_same_mask_and_the_next_call_another():
    x = torch.ones(3, 50, 64)
    torch.manual_seed(7)
    first, second = dropout(x, 0.1), dropout(x, 0.1)
    torch.manual_seed(7)
    assert torch.equal(dropout(x, 0.1), first)
    assert not torch.equal(first, second)


def test_off_in_evaluation_and_at_zero_all_dropped_at_one_and_a_bad_probability_refused():
    x = torch.randn(5, 7)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        dropout(x, 1.5)


def test_it_keeps_the_dtype_and_shape_of_a_bfloat16_or_strided_input():
    torch.manual_seed(3)
    x = torch.randn(6, 10, 12).transpose(0, 2)  # not contiguous
    y = dropout(x, 0.25)
    assert y.shape == x.shape and y.dtype == torch.float32
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75, rtol=1e-5)
    assert dropout(x.bfloat16(), 0.25).dtype == torch.bfloat16


def test_the_module_is_an_nn_dropout_that_follows_train_and_eval():
    module = FairseqDropout(0.3, module_name="decoder")
    assert isinstance(module, nn.Dropout) and module.p == 0.3 and module.module_name == "decoder"
    assert module.state_dict() == {}
    x = torch.ones(1000)
    torch.manual_seed(2)
    assert (module(x) == 0).any()
    module.eval()
    assert module(x) is x


def test_the_decoder_layers_draw_their_masks_with_it():
    from fairseq.modules.transformer_layer import TransformerDecoderLayer

    layer = TransformerDecoderLayer(16, 32, 2, dropout=0.1, activation_dropout=0.1)
    assert isinstance(layer.dropout, FairseqDropout) and layer.dropout.p == 0.1
    assert isinstance(layer.activation_dropout, FairseqDropout)
