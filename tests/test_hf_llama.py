"""fairseq <-> Hugging Face Llama (``LlamaForCausalLM``): export, import, refusals.

Equality is the test, offline, on tiny random models made here: a Llama-style ``transformer_lm``
(preset ``transformer_lm_llama_tiny``) exported loads in ``AutoModelForCausalLM`` with no custom
code and gives the same logits (within 1e-5) and the same 32 greedy tokens, and imports back
bit-identical; a grouped-query ``LlamaForCausalLM`` made with transformers (tied and untied,
``rope_theta`` 500000) imported gives the same logits, and ``fairseq-eval-lm``'s loss equals the
loss transformers computes on the same tokens; what does not map is refused with one line.
"""
import json
import math
import os
from pathlib import Path

import pytest
import torch

from fairseq import hf_bridge

from conftest import perturbed_model

TOLERANCE = 1e-5
NEW_TOKENS = 32


# -- helpers ------------------------------------------------------------------------------------
def llama_cfg(data: str, arch: str = "transformer_lm_llama_tiny", **model):
    """The run config of ``arch`` on ``data`` (the preset's values under ``model``'s overrides)."""
    from fairseq.dataclass.json_io import config_from_dict
    from fairseq.models.transformer_lm import ARCHITECTURES

    values = {"_name": "transformer_lm", **ARCHITECTURES[arch], "max_target_positions": 64, **model}
    return config_from_dict({"model": values, "task": {"_name": "language_modeling", "data": data,
                                                       "tokens_per_sample": 64}})


def random_llama(data_bin: str, seed: int = 0, **model):
    """``(model, cfg, task)``: a Llama-style transformer_lm on data_bin's dictionary, every weight
    (norms included) moved at random so that the outputs are far from uniform."""
    return perturbed_model(llama_cfg(data_bin, **model), data_bin, seed)


def hub_of(model, cfg, task):
    from fairseq.hub_utils import GeneratorHubInterface

    return GeneratorHubInterface(cfg, task, [model])


@pytest.fixture(scope="module")
def auto():
    """transformers' Auto classes, offline (a missing path fails at once, nothing is looked up)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModelForCausalLM

        yield AutoModelForCausalLM


def native_llama(directory: Path, vocab_size: int, tied: bool, seed: int = 0, **config):
    """A random grouped-query ``LlamaForCausalLM`` (4 heads, 2 key/value heads, rope_theta 500000)
    saved in ``directory``, with fairseq's special ids (<s>=0, <pad>=1, </s>=2, <unk>=3)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    values = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6,
                  rope_theta=500000.0, tie_word_embeddings=tied, bos_token_id=0, pad_token_id=1, eos_token_id=2)
    values.update(config)
    torch.manual_seed(seed)
    hf = LlamaForCausalLM(LlamaConfig(**values)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "norm" in name else 0.05))
    hf.save_pretrained(directory)
    return hf


# -- ours -> transformers -> ours ----------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"share_decoder_input_output_embed": True, "no_scale_embedding": False}],
                         ids=["preset", "tied_scaled"])
def test_export_loads_in_transformers_with_the_same_logits_and_imports_back_bit_identical(
        options, data_bin, tmp_path, auto):
    from fairseq import checkpoint_utils

    model, cfg, task = random_llama(data_bin, **options)
    d = task.source_dictionary
    report = hf_bridge.export_model(model, cfg, d, str(tmp_path / "hf"), data_bin)
    assert report.architecture == "LlamaForCausalLM"
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["model_type"], config["num_key_value_heads"], config["tie_word_embeddings"]) == \
        ("llama", 2, False)

    hf = auto.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    torch.manual_seed(1)
    tokens = torch.randint(d.nspecial, len(d), (3, 40))
    tokens[:, 0] = d.eos()
    with torch.no_grad():
        diff = (model(tokens)[0] - hf(input_ids=tokens).logits).abs().max().item()
    assert diff < TOLERANCE, diff

    # greedy decoding (our incremental state against transformers' KV cache): the same 32 tokens
    prompt = tokens[0, 1:9]
    n = len(prompt)
    ours = hub_of(model, cfg, task).generate(prompt, beam=1, max_len_a=0, max_len_b=n + NEW_TOKENS,
                                             min_len=n + NEW_TOKENS)[0]["tokens"][n:n + NEW_TOKENS].tolist()
    with torch.no_grad():
        theirs = hf.generate(tokens[:1, :9], max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                             suppress_tokens=[d.pad()], pad_token_id=d.eos())[0, 9:].tolist()
    assert ours == theirs

    hf_bridge.import_directory(str(tmp_path / "hf"), str(tmp_path / "back" / "model.pt"))
    models, cfg2, task2 = checkpoint_utils.load_model_ensemble_and_task([str(tmp_path / "back" / "model.pt")])
    before, after = model.state_dict(), models[0].state_dict()
    assert before.keys() == after.keys()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert {k: (cfg.model[k], cfg2.model[k]) for k in cfg.model if cfg.model[k] != cfg2.model[k]} == {}
    assert task2.source_dictionary == d


# -- transformers -> ours ------------------------------------------------------------------------
def write_data(directory: Path, d, tokens: torch.Tensor) -> str:
    """A data-bin whose valid split holds ``tokens`` (rows without their leading </s>) and whose
    dict.txt is ``d``."""
    from fairseq_cli import preprocess

    text = directory / "text"
    text.mkdir(parents=True)
    lines = [" ".join(d[int(i)] for i in row) for row in tokens]
    (text / "valid.txt").write_text("\n".join(lines) + "\n")
    d.save(str(directory / "dict.in.txt"))
    dest = directory / "data-bin"
    preprocess.cli_main(["--only-source", "--validpref", str(text / "valid.txt"), "--srcdict",
                         str(directory / "dict.in.txt"), "--destdir", str(dest), "--workers", "1"])
    return str(dest)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_import_of_a_grouped_query_llama_gives_its_logits_and_its_loss(tied, data_bin, tmp_path, auto):
    from fairseq.data import Dictionary
    from fairseq_cli import eval_lm

    d = Dictionary.load(os.path.join(data_bin, "dict.txt"))
    hf = native_llama(tmp_path / "hf", len(d), tied)
    d.save(str(tmp_path / "hf" / "dict.txt"))  # the vocabulary's symbols: the data's dictionary
    report = hf_bridge.import_directory(str(tmp_path / "hf"), str(tmp_path / "ours" / "model.pt"))
    assert report.model_values["decoder_kv_attention_heads"] == 2
    assert report.model_values["rope_theta"] == 500000.0
    assert report.model_values["share_decoder_input_output_embed"] is tied

    hub = hf_bridge.from_pretrained_hf(str(tmp_path / "hf"))
    torch.manual_seed(2)
    tokens = torch.randint(d.nspecial, len(d), (2, 24))
    tokens[:, 0] = d.eos()
    with torch.no_grad():
        ours = hub.models[0](tokens)[0]
        theirs = hf(input_ids=tokens).logits
    assert (ours - theirs).abs().max().item() < TOLERANCE

    # eval-lm's loss on a data-bin of these rows = transformers' loss on the same tokens: a
    # fairseq sample is "</s> w1 .. wn" predicting "w1 .. wn </s>"
    rows = tokens[:, 1:]
    data = write_data(tmp_path / "data", d, rows)
    out = eval_lm.main([data, "--path", str(tmp_path / "ours" / "model.pt"), "--gen-subset", "valid",
                        "--sample-break-mode", "eos", "--tokens-per-sample", "64", "--max-tokens", "1024"])
    with torch.no_grad():
        full = torch.cat([tokens, torch.full((2, 1), d.eos())], dim=1)
        logp = torch.log_softmax(hf(input_ids=full[:, :-1]).logits.double(), dim=-1)
        nll = -logp.gather(-1, full[:, 1:, None]).mean().item()
    assert abs(out["loss"] - nll / math.log(2)) < 1e-4, (out, nll / math.log(2))


# -- what does not map: one line, exit 2 ------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A valid tiny Llama directory (no tokenizer: dict.txt-free ids), to copy and spoil."""
    directory = tmp_path_factory.mktemp("llama") / "hf"
    native_llama(directory, 40, tied=False)
    return directory


IMPORT_REFUSED = {
    "rope_scaling": ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling="),
    "rope_parameters": ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}},
                        "rope_type='yarn'"),
    "partial_rotary": ({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                            "partial_rotary_factor": 0.5}}, "partial_rotary_factor=0.5"),
    "sliding_window": ({"sliding_window": 16}, "sliding_window=16"),
    "attention_bias": ({"attention_bias": True}, "attention_bias=true"),
    "mlp_bias": ({"mlp_bias": True}, "mlp_bias=true"),
    "hidden_act": ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    "head_dim": ({"head_dim": 16}, "head_dim=16"),
    "pretraining_tp": ({"pretraining_tp": 2}, "pretraining_tp=2"),
    # malformed rather than unmappable (fairseq.hf_validation's llama table)
    "kv_heads": ({"num_key_value_heads": 3}, "num_key_value_heads=3"),
    "theta": ({"rope_parameters": {"rope_type": "default", "rope_theta": -1.0}}, "rope_theta=-1.0"),
    "eps": ({"rms_norm_eps": 0}, "rms_norm_eps=0"),
}


@pytest.mark.parametrize("case", sorted(IMPORT_REFUSED))
def test_a_llama_that_does_not_map_is_refused_with_one_line(case, llama_dir, tmp_path, capsys):
    import shutil

    from fairseq_cli import import_hf

    change, named = IMPORT_REFUSED[case]
    directory = tmp_path / "hf"
    shutil.copytree(llama_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(change)
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as e:
        import_hf.cli_main([str(directory), "--out", str(tmp_path / "out" / "model.pt")])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and named in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


EXPORT_REFUSED = {
    "layernorm": ({"decoder_norm": "layernorm"}, "decoder_norm=layernorm"),
    "relu": ({"activation_fn": "relu"}, "activation_fn=relu"),
    "not_gated": ({"decoder_ffn_gated": False}, "decoder_ffn_gated=false"),
    "biases": ({"no_decoder_bias": False}, "no_decoder_bias=false"),
    "no_rope": ({"rope": False, "decoder_learned_pos": True}, "rope=false"),
    "post_norm": ({"decoder_normalize_before": False}, "post-norm"),
}


@pytest.mark.parametrize("case", sorted(EXPORT_REFUSED))
def test_a_llama_style_model_llama_cannot_hold_is_refused_with_one_line(case, data_bin):
    change, named = EXPORT_REFUSED[case]
    cfg = llama_cfg(data_bin, **change)
    with pytest.raises(hf_bridge.UnmappableModelError) as e:
        hf_bridge.hf_target(cfg.model)
    assert named in str(e.value) and "LlamaForCausalLM" in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_the_export_command_refuses_with_one_line_and_writes_nothing(data_bin, tmp_path, capsys):
    from fairseq.checkpoint.state import plain_config
    from fairseq.checkpoint_utils import torch_persistent_save
    from fairseq_cli import export_hf

    model, cfg, _ = random_llama(data_bin, decoder_norm="layernorm")
    path = tmp_path / "checkpoint.pt"
    torch_persistent_save({"cfg": plain_config(cfg), "model": model.state_dict(), "version": 1}, str(path))
    with pytest.raises(SystemExit) as e:
        export_hf.cli_main(["--path", str(path), "--data", data_bin, "--out", str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and "decoder_norm=layernorm" in err and "--decoder-norm rmsnorm" in err, err
    assert not (tmp_path / "hf").exists()

    # the same model with RMSNorm exports through the command line
    model, cfg, _ = random_llama(data_bin)
    torch_persistent_save({"cfg": plain_config(cfg), "model": model.state_dict(), "version": 1}, str(path))
    export_hf.cli_main(["--path", str(path), "--data", data_bin, "--out", str(tmp_path / "hf")])
    assert "LlamaForCausalLM" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
