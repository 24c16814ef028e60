"""Tests of the transformer_lm model: build, forward, cached decoding, presets."""
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fairseq.models import MODEL_REGISTRY, build_model
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig
from fairseq.modules import AdaptiveInput, LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from fairseq.modules.transformer_decoder import DEFAULT_MAX_TARGET_POSITIONS

from conftest import tiny_task

VOCAB, PAD = 50, 1


def tiny_config(**overrides) -> TransformerLanguageModelConfig:
    values = dict(
        decoder_layers=2, decoder_embed_dim=16, decoder_input_dim=16, decoder_output_dim=16,
        decoder_ffn_embed_dim=32, decoder_attention_heads=4, dropout=0.0, max_target_positions=32,
    )
    return TransformerLanguageModelConfig(**{**values, **overrides})


def build(**overrides) -> TransformerLanguageModel:
    return TransformerLanguageModel.build_model(tiny_config(**overrides), tiny_task(VOCAB, PAD)).eval()


def random_tokens(B: int, T: int) -> torch.Tensor:
    return torch.randint(PAD + 3, VOCAB, (B, T))  # never pad


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- building ----------------------------------------------------------------------------------
def test_forward_shapes_from_a_dataclass_and_a_structured_config():
    tokens = random_tokens(3, 7)
    for cfg in (tiny_config(), OmegaConf.structured(tiny_config())):
        model = TransformerLanguageModel.build_model(cfg, tiny_task(VOCAB, PAD))
        logits, extra = model(tokens)
        assert logits.shape == (3, 7, VOCAB)
        assert len(extra["inner_states"]) == 1 + 2 and extra["inner_states"][0].shape == (3, 7, 16)
        features, _ = model(tokens, features_only=True)
        assert features.shape == (3, 7, 16)


def test_build_through_the_registry_with_an_architecture_name():
    cfg = OmegaConf.structured(tiny_config(_name="transformer_lm_gpt"))
    model = build_model(cfg, tiny_task(VOCAB, PAD))
    assert isinstance(model, TransformerLanguageModel)
    assert model(random_tokens(1, 4))[0].shape == (1, 4, VOCAB)


def test_max_positions_defaults_when_the_task_is_absent():
    assert build(max_target_positions=None).max_positions() == DEFAULT_MAX_TARGET_POSITIONS
    # a dataclass left with the "${task.tokens_per_sample}" interpolation, and no task to resolve it
    unresolved = TransformerLanguageModelConfig(decoder_layers=1)
    model = TransformerLanguageModel.build_model(unresolved, tiny_task(VOCAB, PAD))
    assert model.max_positions() == DEFAULT_MAX_TARGET_POSITIONS
    assert build(max_target_positions=20).max_positions() == 20


def test_output_is_float32_distribution():
    model = build()
    net_output = model(random_tokens(2, 5))
    probs = model.get_normalized_probs(net_output, log_probs=False)
    assert probs.dtype == torch.float32
    assert torch.allclose(probs.sum(-1), torch.ones(2, 5), atol=1e-5)
    sample = {"target": random_tokens(2, 5)}
    assert model.get_targets(sample, net_output) is sample["target"]


# -- what a language model must not see --------------------------------------------------------
@pytest.mark.parametrize("normalize_before", [False, True])
def test_changing_a_future_token_leaves_earlier_logits_unchanged(normalize_before):
    model = build(decoder_normalize_before=normalize_before)
    tokens = random_tokens(2, 8)
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % VOCAB
    logits, changed_logits = model(tokens)[0], model(changed)[0]
    assert torch.allclose(logits[:, :5], changed_logits[:, :5], atol=1e-6)
    assert not torch.allclose(logits[:, 5:], changed_logits[:, 5:])


@pytest.mark.parametrize("learned_pos", [False, True])
def test_right_padding_does_not_change_real_tokens(learned_pos):
    model = build(decoder_learned_pos=learned_pos)
    short, long = random_tokens(1, 4), random_tokens(1, 7)
    batch = torch.full((2, 7), PAD)
    batch[0, :4], batch[1] = short[0], long[0]
    logits = model(batch)[0]
    assert torch.allclose(logits[0, :4], model(short)[0][0], atol=1e-5)
    assert torch.allclose(logits[1], model(long)[0][0], atol=1e-5)


# -- cached decoding ---------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    dict(),
    dict(decoder_normalize_before=True, decoder_learned_pos=True),
    dict(layernorm_embedding=True, decoder_embed_dim=24, decoder_input_dim=16, decoder_output_dim=8),
])
def test_token_by_token_decoding_with_the_cache_equals_the_full_forward(options):
    model = build(**options)
    tokens = random_tokens(2, 9)
    full = model(tokens)[0]
    state = {}
    steps = [model(tokens[:, t : t + 1], incremental_state=state)[0] for t in range(9)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    head_dim = model.decoder.layers[0].self_attn.head_dim
    assert state["layers.0"]["key"].shape == (2, 4, 9, head_dim)  # (B, H, S, D)


def test_prompt_then_steps_with_the_cache_equals_the_full_forward():
    model = build()
    tokens = random_tokens(2, 8)
    state = {}
    prompt = model(tokens[:, :5], incremental_state=state)[0]
    rest = [model(tokens[:, t : t + 1], incremental_state=state)[0] for t in range(5, 8)]
    assert torch.allclose(torch.cat([prompt] + rest, dim=1), model(tokens)[0], atol=1e-5)


def test_left_padded_prompts_decode_like_unpadded_ones():
    model = build(decoder_learned_pos=True)
    short, long = random_tokens(1, 3), random_tokens(1, 5)
    prompts = torch.full((2, 5), PAD)
    prompts[0, 2:], prompts[1] = short[0], long[0]
    next_tokens = random_tokens(2, 2)
    state = {}
    out = [model(prompts, incremental_state=state)[0]]
    out += [model(next_tokens[:, t : t + 1], incremental_state=state)[0] for t in range(2)]
    logits = torch.cat(out, dim=1)  # (2, 7, V)
    alone = model(torch.cat([short, next_tokens[:1]], dim=1))[0]  # (1, 5, V)
    assert torch.allclose(logits[0, 2:], alone[0], atol=1e-5)
    assert torch.allclose(logits[1], model(torch.cat([long, next_tokens[1:]], dim=1))[0][0], atol=1e-5)


def test_reorder_incremental_state_follows_the_beam():
    model = build()
    tokens = random_tokens(3, 6)
    state = {}
    model(tokens[:, :4], incremental_state=state)
    new_order = torch.tensor([2, 2, 0])
    model.reorder_incremental_state(state, new_order)
    step = model(tokens[new_order, 4:5], incremental_state=state)[0]
    expected = model(torch.cat([tokens[new_order, :4], tokens[new_order, 4:5]], dim=1))[0][:, -1:]
    assert torch.allclose(step, expected, atol=1e-5)


# -- embeddings --------------------------------------------------------------------------------
def test_shared_input_output_embeddings_share_storage():
    model = build(share_decoder_input_output_embed=True)
    decoder = model.decoder
    assert decoder.output_projection.weight is decoder.embed_tokens.weight
    assert decoder.output_projection.weight.data_ptr() == decoder.embed_tokens.weight.data_ptr()
    separate = build()
    assert model.num_parameters() == separate.num_parameters() - VOCAB * 16


def test_sharing_needs_equal_input_and_output_dims():
    with pytest.raises(ValueError, match="decoder_output_dim"):
        build(share_decoder_input_output_embed=True, decoder_output_dim=8)


def test_sinusoidal_and_learned_positions():
    sinusoidal, learned = build(), build(decoder_learned_pos=True)
    assert isinstance(sinusoidal.decoder.embed_positions, SinusoidalPositionalEmbedding)
    assert not any("embed_positions" in k for k in sinusoidal.state_dict())
    assert isinstance(learned.decoder.embed_positions, LearnedPositionalEmbedding)
    assert "decoder.embed_positions.weight" in dict(learned.named_parameters())
    assert learned.max_positions() == 32
    assert build(no_token_positional_embeddings=True).decoder.embed_positions is None


# -- training ----------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize_before", [False, True])
def test_pre_and_post_norm_both_learn_a_repeated_sequence(normalize_before):
    model = build(decoder_normalize_before=normalize_before).train()
    sequence = random_tokens(1, 9).repeat(4, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        logits = model(sequence[:, :-1])[0]
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), sequence[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_activations_gives_the_same_gradients():
    tokens = random_tokens(2, 6)
    grads = []
    for checkpoint_activations in (False, True):
        torch.manual_seed(1)
        model = build(checkpoint_activations=checkpoint_activations).train()
        model(tokens)[0].sum().backward()
        grads.append(model.decoder.layers[0].fc1.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_layerdrop_skips_layers_only_in_training():
    model = build(decoder_layers=4, decoder_layerdrop=0.5)
    tokens = random_tokens(1, 3)
    assert len(model(tokens)[1]["inner_states"]) == 5
    model.train()
    depths = {len(model(tokens)[1]["inner_states"]) for _ in range(30)}
    assert len(depths) > 1 and max(depths) <= 5


def test_layers_to_keep_prunes_and_loads_a_full_checkpoint():
    full = build(decoder_layers=4)
    pruned = build(decoder_layers=4, decoder_layers_to_keep="0,2")
    assert len(pruned.decoder.layers) == 2
    pruned.load_state_dict(full.state_dict())
    assert torch.equal(pruned.decoder.layers[1].fc1.weight, full.decoder.layers[2].fc1.weight)
    pruned.load_state_dict(pruned.state_dict())  # its own checkpoint loads as is
    with pytest.raises(ValueError, match="decoder_layers_to_keep"):
        build(decoder_layers=2, decoder_layers_to_keep="0,3")


# -- adaptive input and softmax ----------------------------------------------------------------
def test_adaptive_softmax_model_gives_normalized_probabilities():
    model = build(adaptive_softmax_cutoff="10,30", adaptive_softmax_factor=2)
    net_output = model(random_tokens(2, 5))
    assert net_output[0].shape == (2, 5, 16)  # features: the softmax is applied later
    log_probs = model.get_normalized_probs(net_output, log_probs=True)
    assert log_probs.shape == (2, 5, VOCAB)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 5), atol=1e-5)


def test_wiki103_preset_with_tied_adaptive_weights_builds_and_decodes():
    preset = MODEL_REGISTRY.get("transformer_lm_wiki103").preset
    small = dict(decoder_layers=2, decoder_attention_heads=4, adaptive_input_cutoff="10,30",
                 adaptive_softmax_cutoff="10,30", decoder_ffn_embed_dim=32, dropout=0.0,
                 decoder_embed_dim=16, decoder_input_dim=16, decoder_output_dim=16)
    values = {**preset, **small, "max_target_positions": 32}
    cfg = OmegaConf.structured(TransformerLanguageModelConfig(**values))
    model = TransformerLanguageModel.build_model(cfg, tiny_task(VOCAB, PAD)).eval()
    decoder = model.decoder
    assert isinstance(decoder.embed_tokens, AdaptiveInput) and decoder.layer_norm is None
    assert decoder.adaptive_softmax.tail_out[0] is decoder.embed_tokens.embeddings[1].weight
    assert decoder.adaptive_softmax.tail_proj[1] is decoder.embed_tokens.projections[2].weight
    tokens = random_tokens(2, 6)
    full = model(tokens)[0]
    state = {}
    steps = torch.cat([model(tokens[:, t : t + 1], incremental_state=state)[0] for t in range(6)], 1)
    assert torch.allclose(steps, full, atol=1e-5)
    probs = model.get_normalized_probs((full, {}), log_probs=False)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 6), atol=1e-5)


def test_tied_adaptive_weights_need_matching_factors():
    with pytest.raises(ValueError, match="adaptive_input_factor"):
        build(adaptive_input=True, adaptive_input_cutoff="10,30", adaptive_softmax_cutoff="10,30",
              tie_adaptive_weights=True, adaptive_input_factor=2)


# -- presets -----------------------------------------------------------------------------------
EXPECTED_PRESETS = {
    "transformer_lm_big": dict(decoder_embed_dim=1024, decoder_ffn_embed_dim=4096,
                               decoder_attention_heads=16, decoder_layers=12),
    "transformer_lm_baevski_wiki103": dict(
        decoder_layers=16, decoder_attention_heads=8, decoder_embed_dim=1024,
        decoder_ffn_embed_dim=4096, adaptive_input=True, adaptive_input_cutoff="20000,60000",
        adaptive_softmax_cutoff="20000,60000", dropout=0.3, attention_dropout=0.1,
        activation_dropout=0.1, no_decoder_final_norm=True, tie_adaptive_weights=True,
        tie_adaptive_proj=True, decoder_normalize_before=True),
    "transformer_lm_baevski_gbw": dict(decoder_embed_dim=512, dropout=0.1, attention_dropout=0.1,
                                       no_decoder_final_norm=True, decoder_normalize_before=True),
    "transformer_lm_gpt": dict(decoder_embed_dim=768, decoder_ffn_embed_dim=3072, decoder_layers=12,
                               decoder_attention_heads=12, dropout=0.1, attention_dropout=0.1,
                               activation_fn="gelu"),
    "transformer_lm_gpt2_small": dict(decoder_embed_dim=1024, decoder_ffn_embed_dim=4096,
                                      decoder_layers=24, decoder_attention_heads=16, activation_fn="gelu"),
    "transformer_lm_gpt2_medium": dict(decoder_embed_dim=1280, decoder_ffn_embed_dim=5120,
                                       decoder_layers=36, decoder_attention_heads=20, activation_fn="gelu"),
    "transformer_lm_gpt2_big": dict(decoder_embed_dim=1600, decoder_ffn_embed_dim=6400,
                                    decoder_layers=48, decoder_attention_heads=25, activation_fn="gelu"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_presets_register_with_consistent_dims(name):
    entry = MODEL_REGISTRY.get(name)
    assert entry.base == "transformer_lm"
    assert entry.preset.items() >= EXPECTED_PRESETS[name].items()
    # the input and output dims are left to follow the embed dim (PITFALLS #18), not frozen
    assert "decoder_input_dim" not in entry.preset and "decoder_output_dim" not in entry.preset
    cfg = OmegaConf.structured(entry.default_config())
    assert cfg.decoder_input_dim == cfg.decoder_output_dim == cfg.decoder_embed_dim
    assert cfg.decoder_embed_dim % cfg.decoder_attention_heads == 0


def test_aliases_share_their_preset():
    assert MODEL_REGISTRY.get("transformer_lm_wiki103").preset == \
        MODEL_REGISTRY.get("transformer_lm_baevski_wiki103").preset
    assert MODEL_REGISTRY.get("transformer_lm_gbw").preset == \
        MODEL_REGISTRY.get("transformer_lm_baevski_gbw").preset


def test_feed_forward_layers_keep_nn_linears_initialisation_as_fairseq_does():
    """fairseq 0.12.2 builds fc1/fc2 as plain nn.Linear: weights and biases uniform within
    1/sqrt(fan_in) (kaiming a=sqrt(5)), not xavier with zero biases (whose fc2 bound at
    128 -> 512 -> 128 would be twice as large)."""
    from fairseq.modules.transformer_layer import TransformerDecoderLayer

    torch.manual_seed(0)
    layer = TransformerDecoderLayer(128, 512, 4)
    for fc in (layer.fc1, layer.fc2):
        bound = fc.in_features ** -0.5
        for p in (fc.weight, fc.bias):
            assert p.abs().max() <= bound
            assert p.abs().max() > 0.9 * bound  # spread over the whole range, biases not zero


def test_a_decoding_steps_few_rows_against_a_large_vocabulary_give_the_same_logits():
    """Inference with at most FEW_ROWS rows and V >= FEW_ROWS_MIN_VOCAB computes weight @ x.T
    (faster on CPU BLAS); the logits equal the projection's within float rounding, and with
    gradients, more rows or a small vocabulary the projection itself runs."""
    from fairseq.data import Dictionary
    from fairseq.modules.transformer_decoder import FEW_ROWS, FEW_ROWS_MIN_VOCAB
    from op_watch import OpCalls

    d = Dictionary()
    for i in range(FEW_ROWS_MIN_VOCAB):
        d.add_symbol(f"w{i}")

    class Task:
        source_dictionary = target_dictionary = d

    torch.manual_seed(0)
    model = TransformerLanguageModel.build_model(TransformerLanguageModelConfig(
        decoder_layers=1, decoder_embed_dim=16, decoder_ffn_embed_dim=32, decoder_attention_heads=2,
        dropout=0.0), Task()).eval()
    decoder = model.decoder
    for rows in (1, FEW_ROWS, FEW_ROWS + 1):
        features = torch.randn(rows, 1, 16)
        with torch.no_grad(), OpCalls() as ops:
            got = decoder.output_layer(features)
        # the vocabulary as the product's long (first) side for a decoding step's few rows
        assert ((len(d), 16) in ops.first_shapes.get("mm", [])) == (rows <= FEW_ROWS), ops.first_shapes
        expected = decoder.output_projection(features)
        assert got.shape == expected.shape == (rows, 1, len(d))
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert got.is_contiguous()
    with torch.no_grad():
        tokens = torch.randint(4, len(d), (4, 6))
        full = model(tokens)[0][:, -1]
        state = {}
        model(tokens[:, :-1], incremental_state=state)
        step = model(tokens[:, -1:], incremental_state=state)[0][:, -1]  # 4 rows: weight @ x.T
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
