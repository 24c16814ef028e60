"""Llama-style parts of transformer_lm: rotary positions, RMSNorm, SwiGLU, grouped-query attention,
bias-free layers; each against a hand formula, through both doors, and through training, resume,
safetensors, eval-lm context windows, cached decoding and generation."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_task, train_losses
from fairseq.models.transformer_lm import ARCHITECTURES, TransformerLanguageModel, TransformerLanguageModelConfig
from fairseq.modules.multihead_attention import MultiheadAttention
from fairseq.modules.normalization import build_norm
from fairseq.modules.rotary import RotaryEmbedding
from fairseq.modules.transformer_layer import TransformerDecoderLayer

VOCAB, PAD = 50, 1
MODERN = dict(rope=True, decoder_norm="rmsnorm", decoder_ffn_gated=True, activation_fn="silu",
              no_decoder_bias=True, no_scale_embedding=True)
# legacy flags and Hydra overrides of one tiny Llama-style model
MODERN_LEGACY = ["--rope", "--rope-theta", "500", "--decoder-norm", "rmsnorm", "--norm-eps", "1e-6",
                 "--decoder-ffn-gated", "--activation-fn", "silu", "--decoder-kv-attention-heads", "2",
                 "--no-decoder-bias", "--no-scale-embedding", "--decoder-layers", "2", "--decoder-embed-dim", "32",
                 "--decoder-ffn-embed-dim", "48", "--decoder-attention-heads", "4", "--dropout", "0"]
MODERN_HYDRA = ["model.rope=true", "model.rope_theta=500", "model.decoder_norm=rmsnorm", "model.norm_eps=1e-6",
                "model.decoder_ffn_gated=true", "model.activation_fn=silu", "model.decoder_kv_attention_heads=2",
                "model.no_decoder_bias=true", "model.no_scale_embedding=true", "model.decoder_layers=2",
                "model.decoder_embed_dim=32", "model.decoder_ffn_embed_dim=48", "model.decoder_attention_heads=4",
                "model.dropout=0"]


def build(**overrides) -> TransformerLanguageModel:
    values = dict(decoder_layers=2, decoder_embed_dim=32, decoder_input_dim=32, decoder_output_dim=32,
                  decoder_ffn_embed_dim=48, decoder_attention_heads=4, dropout=0.0, max_target_positions=64,
                  **MODERN)
    cfg = TransformerLanguageModelConfig(**{**values, **overrides})
    return TransformerLanguageModel.build_model(cfg, tiny_task(VOCAB, PAD)).eval()


def random_tokens(B: int, T: int) -> torch.Tensor:
    return torch.randint(PAD + 3, VOCAB, (B, T))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- each part against its formula --------------------------------------------------------------
def test_rotary_turns_feature_pairs_j_and_j_plus_half_by_position_times_frequency():
    hd, theta = 8, 100.0
    rotary = RotaryEmbedding(hd, theta)
    q, k = torch.randn(2, 3, 5, hd), torch.randn(2, 1, 5, hd)
    for offset in (0, 3, 300):  # 300: past the first table, which is rebuilt longer
        rq, rk = rotary(q, k, offset=offset)
        for x, rx in ((q, rq), (k, rk)):
            expected = torch.empty_like(x)
            for t in range(5):
                for j in range(hd // 2):
                    angle = (offset + t) / theta ** (2 * j / hd)
                    c, s = math.cos(angle), math.sin(angle)
                    a, b = x[..., t, j], x[..., t, j + hd // 2]
                    expected[..., t, j] = a * c - b * s
                    expected[..., t, j + hd // 2] = b * c + a * s
            torch.testing.assert_close(rx, expected, atol=1e-5, rtol=1e-5)
    assert rotary.cos_table.size(0) >= 305
    assert rotary.state_dict() == {}  # the tables are not weights
    with pytest.raises(ValueError, match="even head dimension"):
        RotaryEmbedding(7)


def test_rmsnorm_and_bias_free_layernorm_are_the_hand_formulas():
    x = torch.randn(3, 4, 8)
    norm = build_norm("rmsnorm", 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8))
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=1e-5)
    assert list(norm.state_dict()) == ["weight"]
    plain = build_norm("layernorm", 8, eps=1e-3, bias=False)
    assert list(plain.state_dict()) == ["weight"]
    torch.testing.assert_close(plain(x), F.layer_norm(x, (8,), plain.weight, None, 1e-3))
    default = build_norm("layernorm", 8)  # fairseq 0.12's norm
    assert isinstance(default, torch.nn.LayerNorm) and default.eps == 1e-5 and default.bias is not None


def test_gated_feed_forward_is_swiglu():
    layer = TransformerDecoderLayer(16, 24, 4, activation_fn="silu", ffn_gated=True, bias=False)
    x = torch.randn(2, 3, 16)
    w1, w2, w3 = layer.fc1.weight, layer.fc2.weight, layer.fc3.weight
    expected = (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T
    torch.testing.assert_close(layer.feed_forward(x), expected, atol=1e-6, rtol=1e-5)
    assert all(m.bias is None for m in (layer.fc1, layer.fc2, layer.fc3, layer.self_attn.in_proj,
                                        layer.self_attn.out_proj))


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_grouped_query_attention_is_the_hand_formula(kv_heads):
    H, C, T = 4, 16, 6
    hd = C // H
    attn = MultiheadAttention(C, H, bias=False, kv_heads=kv_heads, rotary=RotaryEmbedding(hd)).eval()
    assert attn.in_proj.weight.shape == (C + 2 * kv_heads * hd, C)
    x = torch.randn(2, T, C)
    q, k, v = (x @ attn.in_proj.weight.T).split([C, kv_heads * hd, kv_heads * hd], dim=-1)
    q = q.view(2, T, H, hd).transpose(1, 2)
    k = k.view(2, T, kv_heads, hd).transpose(1, 2)
    v = v.view(2, T, kv_heads, hd).transpose(1, 2)
    q, k = attn.rotary(q, k)
    y = torch.zeros(2, H, T, hd)
    for h in range(H):
        g = h // (H // kv_heads)  # the key/value head that query head h reads
        scores = q[:, h] @ k[:, g].transpose(-1, -2) / math.sqrt(hd)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y[:, h] = scores.softmax(-1) @ v[:, g]
    expected = y.transpose(1, 2).reshape(2, T, C) @ attn.out_proj.weight.T
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


# -- both doors, value rules -------------------------------------------------------------------
def _legacy_model_cfg(argv):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = ["/tmp/data", *argv]
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(
        options.get_training_parser(input_args=argv), argv)).model


def _hydra_model_cfg(overrides):
    from fairseq.dataclass.initialize import compose_config

    return compose_config(["task.data=x", *overrides]).model


@pytest.mark.parametrize("legacy, hydra", [
    (["--arch", "transformer_lm", *MODERN_LEGACY], MODERN_HYDRA),
    (["--arch", "transformer_lm_llama_tiny"], ["model=transformer_lm_llama_tiny"]),
], ids=["flags", "preset"])
def test_both_doors_build_the_same_model(legacy, hydra):
    from omegaconf import OmegaConf

    from fairseq.data import Dictionary

    class Task:
        source_dictionary = target_dictionary = Dictionary()

    configs = [_legacy_model_cfg(legacy), _hydra_model_cfg(hydra)]
    assert OmegaConf.to_container(configs[0]) == OmegaConf.to_container(configs[1])
    states = []
    for cfg in configs:
        torch.manual_seed(1)
        states.append(TransformerLanguageModel.build_model(cfg, Task()).state_dict())
    assert list(states[0]) == list(states[1])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    keys = set(states[0])
    assert "decoder.layers.0.fc3.weight" in keys and "decoder.embed_positions.weight" not in keys
    assert not any(k.endswith(".bias") for k in keys)
    # half as many key/value heads as query heads: keys and values together as many rows as the queries
    width = configs[0].decoder_embed_dim
    assert states[0]["decoder.layers.0.self_attn.in_proj.weight"].shape == (2 * width, width)


def test_presets_follow_llamas_shapes_and_the_small_one_has_125m_parameters():
    from fairseq.data import Dictionary

    tiny = ARCHITECTURES["transformer_lm_llama_tiny"]
    assert (tiny["decoder_layers"], tiny["decoder_embed_dim"], tiny["decoder_attention_heads"],
            tiny["decoder_kv_attention_heads"]) == (2, 64, 4, 2)
    d = Dictionary()
    for i in range(32000 - len(d)):
        d.add_symbol(f"w{i}")

    class Task:
        source_dictionary = target_dictionary = d

    cfg = _hydra_model_cfg(["model=transformer_lm_llama_small"])
    with torch.device("meta"):
        model = TransformerLanguageModel.build_model(cfg, Task())
    count = sum(p.numel() for p in model.parameters())
    assert 120e6 < count < 130e6, count
    assert model.decoder.layers[0].self_attn.kv_heads == 4 and model.decoder.embed_positions is None


def _one_line_refusal(capsys, cli_main, argv, key):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert key in lines[0], err
    return lines[0]


@pytest.mark.parametrize("legacy, hydra, key, hint", [
    (["--decoder-kv-attention-heads", "3"], ["model.decoder_kv_attention_heads=3"],
     "decoder_kv_attention_heads=3", "1, 2, 4"),
    (["--rope", "--decoder-attention-heads", "8", "--decoder-embed-dim", "24"],
     ["model.rope=true", "model.decoder_attention_heads=8", "model.decoder_embed_dim=24"], "rope=true", "is 3"),
    (["--rope", "--decoder-learned-pos"], ["model.rope=true", "model.decoder_learned_pos=true"],
     "decoder_learned_pos", "drop --decoder-learned-pos"),
    (["--rope-theta", "0"], ["model.rope_theta=0"], "rope_theta", ""),
], ids=["kv-heads", "odd-head-dim", "learned-pos", "theta"])
def test_values_that_do_not_fit_are_refused_in_one_line_in_both_doors(
        data_bin, tmp_path, capsys, legacy, hydra, key, hint):
    from fairseq_cli import train, train_hydra

    base_legacy = [data_bin, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
                   "--decoder-attention-heads", "4", "--optimizer", "adam", "--max-update", "1",
                   "--num-workers", "0", "--save-dir", str(tmp_path / "a")]
    line = _one_line_refusal(capsys, train.cli_main, base_legacy + legacy, key)
    assert hint in line
    base_hydra = [f"task.data={data_bin}", "model.decoder_layers=1", "model.decoder_embed_dim=16",
                  "model.decoder_attention_heads=4", "optimizer=adam", "optimization.max_update=1",
                  "dataset.num_workers=0", f"checkpoint.save_dir={tmp_path / 'b'}"]
    line = _one_line_refusal(capsys, train_hydra.cli_main, base_hydra + hydra, key)
    assert hint in line


# -- cached decoding ---------------------------------------------------------------------------
@pytest.mark.parametrize("kv_heads", [0, 2, 1], ids=["mha", "gqa", "mqa"])
def test_cached_decoding_equals_the_full_forward_and_caches_only_kv_heads(kv_heads):
    model = build(decoder_kv_attention_heads=kv_heads)
    tokens = random_tokens(3, 12)
    with torch.no_grad():
        full, _ = model(tokens)
        state: dict = {}
        prompt, _ = model(tokens[:, :5], incremental_state=state)  # a prompt, then one token a step
        steps = [prompt] + [model(tokens[:, t:t + 1], incremental_state=state)[0] for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    kv = kv_heads or 4
    for i in range(2):
        cache = state[f"layers.{i}"]
        assert cache["key"].shape == cache["value"].shape == (3, kv, 12, 8)
        assert cache["buffers"].key.size(1) == kv


def test_left_padded_prompts_decode_like_unpadded_ones():
    model = build(decoder_kv_attention_heads=2)
    prompt, rest = random_tokens(1, 4), random_tokens(1, 3)
    with torch.no_grad():
        alone, _ = model(torch.cat([prompt, rest], dim=1))
        padded = torch.cat([torch.full((1, 3), PAD), prompt], dim=1)
        state: dict = {}
        first, _ = model(padded, incremental_state=state)
        steps = [model(rest[:, t:t + 1], incremental_state=state)[0] for t in range(3)]
    torch.testing.assert_close(torch.cat([first[:, 3:], *steps], dim=1), alone, atol=1e-5, rtol=0)


def test_reordered_cache_continues_the_reordered_rows():
    model = build(decoder_kv_attention_heads=1)
    tokens = random_tokens(3, 8)
    order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        state: dict = {}
        model(tokens[:, :5], incremental_state=state)
        model.decoder.reorder_incremental_state(state, order)
        steps = [model(tokens[order, t:t + 1], incremental_state=state)[0] for t in range(5, 8)]
        full, _ = model(tokens[order])
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 5:], atol=1e-5, rtol=0)


def test_beam_search_and_sampling_run_and_cached_equals_uncached():
    from fairseq.data import Dictionary
    from fairseq.search import Sampling
    from fairseq.sequence_generator import SequenceGenerator

    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"w{i}")

    class Task:
        source_dictionary = target_dictionary = d

    cfg = TransformerLanguageModelConfig(decoder_layers=2, decoder_embed_dim=16, decoder_input_dim=16,
                                         decoder_output_dim=16, decoder_ffn_embed_dim=24, decoder_attention_heads=4,
                                         decoder_kv_attention_heads=2, dropout=0.0, max_target_positions=64, **MODERN)
    model = TransformerLanguageModel.build_model(cfg, Task()).eval()
    src = torch.tensor([[5, 6, 7], [8, 9, d.pad()]])
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([3, 2])}}
    outputs = [SequenceGenerator([model], d, beam_size=3, max_len_b=10, use_cache=use_cache).generate(
        [model], sample, prefix_tokens=src) for use_cache in (True, False)]
    for cached, uncached in zip(*outputs):
        assert [h["tokens"].tolist() for h in cached] == [h["tokens"].tolist() for h in uncached]
    g = torch.Generator().manual_seed(0)
    sampled = SequenceGenerator([model], d, beam_size=2, max_len_b=10,
                                search_strategy=Sampling(d, sampling_topk=5, generator=g)).generate(
        [model], sample, prefix_tokens=src)
    assert all(len(hypos) == 2 for hypos in sampled)


# -- the fairseq layout, and fairseq 0.12's model unchanged -------------------------------------
def test_fairseq_layout_round_trips_a_grouped_query_model():
    from fairseq.formats import FAIRSEQ_LM, to_ours

    model = build(decoder_kv_attention_heads=2)
    theirs = model.fairseq_state_dict()
    assert theirs["decoder.layers.0.self_attn.k_proj.weight"].shape == (16, 32)
    assert "decoder.layers.0.fc3.weight" in theirs
    back = to_ours(theirs, FAIRSEQ_LM, model.fairseq_layout_context())
    ours = model.state_dict()
    assert sorted(back) == sorted(ours) and all(torch.equal(back[k], ours[k]) for k in ours)
    other = build(decoder_kv_attention_heads=2)
    other.load_state_dict(theirs)
    tokens = random_tokens(2, 6)
    assert torch.equal(other(tokens)[0], model(tokens)[0])


def test_defaults_build_fairseq_0_12s_model():
    model = build(**{k: TransformerLanguageModelConfig.__dataclass_fields__[k].default for k in MODERN})
    layer = model.decoder.layers[0]
    assert type(layer.self_attn_layer_norm) is torch.nn.LayerNorm and layer.fc3 is None
    assert layer.self_attn.rotary is None and model.decoder.embed_positions is not None
    assert layer.self_attn.in_proj.weight.shape == (96, 32) and layer.self_attn.in_proj.bias is not None


def test_fairseq_0_12_checkpoint_still_scores_its_loss():
    from conftest import ROOT
    from fairseq_cli import eval_lm

    fixture = ROOT / "tests" / "fixtures" / "fairseq_0_12"
    results = eval_lm.main([str(fixture / "data-bin"), "--path", str(fixture / "checkpoint_last.pt"),
                            "--tokens-per-sample", "32", "--max-tokens", "1024", "--gen-subset", "test",
                            "--num-workers", "0"])
    assert abs(results["loss"] - 6.3361) < 1e-3  # fairseq 0.12.2's own number


# -- training, resume, safetensors, eval-lm ----------------------------------------------------
def _train_args(data_bin, save_dir, log_file, max_update, extra=()):
    return [data_bin, "--arch", "transformer_lm_llama_tiny", "--decoder-embed-dim", "32",
            "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "48",
            "--optimizer", "adam", "--lr", "0.003", "--tokens-per-sample", "32", "--max-tokens", "128",
            "--max-update", str(max_update), "--log-format", "json", "--log-interval", "1", "--num-workers", "0",
            "--save-dir", save_dir, "--log-file", log_file, "--save-interval-updates", "10",
            "--no-epoch-checkpoints", "--seed", "3", "--save-format", "safetensors", *extra]


@pytest.fixture(scope="module")
def runs(data_bin, tmp_path_factory):
    """A 20-update run, and the same run stopped at 10 and resumed to 20 (fused output loss)."""
    from fairseq_cli import train

    base = tmp_path_factory.mktemp("modern_runs")
    train.cli_main(_train_args(data_bin, str(base / "full"), str(base / "full.log"), 20))
    train.cli_main(_train_args(data_bin, str(base / "part"), str(base / "part.log"), 10))
    train.cli_main(_train_args(data_bin, str(base / "part"), str(base / "part.log"), 20))
    return base


def test_training_then_resume_is_exact_and_safetensors_round_trip(runs, data_bin):
    from safetensors.torch import load_file

    from fairseq.checkpoint_utils import load_model_for_inference

    full, part = train_losses(str(runs / "full.log")), train_losses(str(runs / "part.log"))
    assert len(full) == 20 and part == full
    assert full[-1] < full[0]
    a = load_file(str(runs / "full" / "checkpoint_last.safetensors"))
    b = load_file(str(runs / "part" / "checkpoint_last.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "decoder.layers.1.fc3.weight" in a and not any(k.endswith(".bias") for k in a)
    model, _, _ = load_model_for_inference(str(runs / "full" / "checkpoint_last.pt"), data=data_bin)
    state = model.state_dict()
    assert all(torch.equal(state[k], a[k]) for k in a)
    assert model.decoder.layers[0].self_attn.kv_heads == 2


@pytest.mark.parametrize("context_window", [0, 8])
def test_eval_lm_context_window_scores_each_block_after_its_preceding_tokens(runs, data_bin, context_window):
    from fairseq.checkpoint_utils import load_model_for_inference
    from fairseq.data import indexed_dataset
    from fairseq_cli import eval_lm

    checkpoint = str(runs / "full" / "checkpoint_last.pt")
    results = eval_lm.main([data_bin, "--path", checkpoint, "--context-window", str(context_window),
                            "--max-tokens", "256", "--num-workers", "0"])
    model, task, _ = load_model_for_inference(checkpoint, data=data_bin)
    sentences = indexed_dataset.make_dataset(f"{data_bin}/test", impl="mmap")
    stream = torch.cat([sentences[i].long() for i in range(len(sentences))])
    inputs = torch.cat([stream.new_tensor([task.source_dictionary.eos()]), stream[:-1]])
    block, total = 32 - context_window, 0.0
    with torch.no_grad():  # each block scored once, after up to context_window tokens before it
        for start in range(0, len(stream), block):
            end, first = min(start + block, len(stream)), max(0, start - context_window)
            lprobs = torch.log_softmax(model(inputs[first:end].unsqueeze(0))[0].float(), -1)[0, start - first:]
            total += lprobs.gather(-1, stream[start:end].unsqueeze(-1)).sum().item()
    assert results["loss"] == pytest.approx(-total / len(stream) / math.log(2), abs=1e-4)


def test_checkpoint_activations_give_identical_gradients():
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(5)
        model = build(decoder_kv_attention_heads=2, checkpoint_activations=checkpointed, dropout=0.1).train()
        torch.manual_seed(6)
        logits, _ = model(random_tokens(2, 10))
        logits.float().logsumexp(-1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


def test_compiled_training_step_equals_eager():
    torch._dynamo.reset()
    model = build(decoder_kv_attention_heads=2).train()
    tokens = random_tokens(2, 12)
    eager = model(tokens)[0]
    compiled = torch.compile(model, backend="aot_eager", fullgraph=False)(tokens)[0]
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
