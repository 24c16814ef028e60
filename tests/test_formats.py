"""Weight layouts as data (fairseq/formats): every layout's table converts both ways, bit for bit,
and a key no row maps is an error rather than a weight silently dropped."""
import pytest
import torch

from fairseq.formats import FAIRSEQ_LM, HF_GPT2, HF_XGLM, LayoutError, from_ours, to_ours
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig

from conftest import tiny_task

VOCAB, PAD = 40, 1


def build(**overrides) -> TransformerLanguageModel:
    values = dict(decoder_layers=2, decoder_embed_dim=8, decoder_input_dim=8, decoder_output_dim=8,
                  decoder_ffn_embed_dim=12, decoder_attention_heads=2, dropout=0.0, max_target_positions=16)
    torch.manual_seed(0)
    return TransformerLanguageModel.build_model(TransformerLanguageModelConfig(**{**values, **overrides}),
                                                tiny_task(VOCAB, PAD)).eval()


FAIRSEQ_VARIANTS = {
    "plain": {},
    "normformer": dict(scale_attn=True, scale_fc=True, scale_heads=True, scale_resids=True,
                       layernorm_embedding=True, decoder_learned_pos=True),
    "adaptive_softmax": dict(adaptive_softmax_cutoff="10,20", adaptive_softmax_factor=2.0,
                             decoder_output_dim=6),
    "adaptive_tied": dict(adaptive_input=True, adaptive_input_cutoff="10,20", adaptive_input_factor=2.0,
                          adaptive_softmax_cutoff="10,20", adaptive_softmax_factor=2.0,
                          tie_adaptive_weights=True, tie_adaptive_proj=True),
}


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("variant", sorted(FAIRSEQ_VARIANTS))
def test_fairseq_layout_round_trips_bit_for_bit(variant):
    model = build(**FAIRSEQ_VARIANTS[variant])
    ctx = model.fairseq_layout_context()
    ours = model.state_dict()
    theirs = from_ours(ours, FAIRSEQ_LM, ctx)
    assert not any(".in_proj." in k for k in theirs) and "decoder.version" in theirs
    assert_same(to_ours(theirs, FAIRSEQ_LM, ctx), dict(ours))
    assert_same(from_ours(to_ours(theirs, FAIRSEQ_LM, ctx), FAIRSEQ_LM, ctx), theirs)


def test_fairseq_older_spellings_are_read():
    model = build()
    theirs = model.fairseq_state_dict()
    theirs["decoder.embed_out"] = theirs.pop("decoder.output_projection.weight")
    for kind in ("weight", "bias"):
        theirs[f"decoder.layers.0.layer_norms.0.{kind}"] = theirs.pop(f"decoder.layers.0.self_attn_layer_norm.{kind}")
        theirs[f"decoder.layers.1.layer_norms.2.{kind}"] = theirs.pop(f"decoder.layers.1.final_layer_norm.{kind}")
    theirs["decoder.embed_positions._float_tensor"] = torch.zeros(1)
    assert_same(to_ours(theirs, FAIRSEQ_LM, model.fairseq_layout_context()), dict(model.state_dict()))


def test_separate_q_k_v_projections_load_into_the_fused_one():
    model = build()
    other = build(decoder_layers=2)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_state_dict(model.fairseq_state_dict())
    assert torch.equal(other.decoder.layers[1].self_attn.in_proj.weight,
                       model.decoder.layers[1].self_attn.in_proj.weight)


def test_a_key_no_row_maps_is_an_error_not_dropped():
    model = build()
    theirs = model.fairseq_state_dict()
    theirs["decoder.layers.0.self_attn.rotary.inv_freq"] = torch.ones(2)
    with pytest.raises(LayoutError, match="rotary.inv_freq"):
        to_ours(theirs, FAIRSEQ_LM, model.fairseq_layout_context())
    ours = dict(model.state_dict(), **{"decoder.mystery.weight": torch.ones(1)})
    with pytest.raises(LayoutError, match="decoder.mystery.weight"):
        from_ours(ours, FAIRSEQ_LM, model.fairseq_layout_context())
    # a strict load reports it in torch's own words
    with pytest.raises(RuntimeError, match="rotary.inv_freq"):
        model.load_state_dict(theirs)


def test_a_row_whose_keys_are_partly_there_is_an_error():
    theirs = build().fairseq_state_dict()
    del theirs["decoder.layers.1.self_attn.k_proj.weight"]
    with pytest.raises(LayoutError, match="k_proj.weight"):
        to_ours(theirs, FAIRSEQ_LM, {})


def hf_blocks(model):
    state = model.state_dict()
    return {k: v for k, v in state.items()
            if not k.startswith(("decoder.embed_tokens.", "decoder.embed_positions.", "decoder.output_projection."))}


@pytest.mark.parametrize("layout", [HF_GPT2, HF_XGLM], ids=lambda layout: layout.name)
def test_hugging_face_layouts_round_trip_bit_for_bit(layout):
    ours = hf_blocks(build(decoder_learned_pos=layout is HF_GPT2, activation_fn="gelu"))
    theirs = from_ours(ours, layout)
    prefix = "transformer." if layout is HF_GPT2 else "model."
    assert all(k.startswith(prefix) for k in theirs)
    if layout is HF_GPT2:
        assert theirs["transformer.h.0.attn.c_attn.weight"].shape == (8, 24)  # Conv1D: (in, out)
    else:
        assert theirs["model.layers.0.self_attn.q_proj.weight"].shape == (8, 8)
    assert_same(to_ours(theirs, layout, {"C": 8, "F": 12, "layers": 2}), ours)


@pytest.mark.parametrize("layout", [HF_GPT2, HF_XGLM], ids=lambda layout: layout.name)
def test_hugging_face_reading_checks_shapes_and_presence(layout):
    theirs = from_ours(hf_blocks(build()), layout)
    with pytest.raises(LayoutError, match="config implies"):
        to_ours(theirs, layout, {"C": 8, "F": 16, "layers": 2})
    with pytest.raises(LayoutError, match="no '.*layers?[.]2[.]|no '.*h[.]2[.]"):
        to_ours(theirs, layout, {"C": 8, "F": 12, "layers": 3})
