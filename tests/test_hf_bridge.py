"""fairseq <-> Hugging Face transformers: ``fairseq/hf_bridge.py``, ``fairseq-export-hf``,
``fairseq-import-hf``.

Equality is the test, offline, on tiny random models made here: the same tokens give the same
logits (within 1e-5) in transformers and in this package, both ways (ours exported as
XGLMForCausalLM / GPT2LMHeadModel; random GPT-2 and XGLM models imported); greedy generation
gives the same 32 tokens; export then import gives back bit-identical weights; a model that maps
to neither is refused with one line; the command lines exit 0, or 2 on a refused model.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq import hf_bridge

from conftest import ROOT, perturbed_model, scaled_timeout
TOLERANCE = 1e-5
NEW_TOKENS = 32
TEXT = "The function returns a value , or raises an exception ."


# -- helpers ------------------------------------------------------------------------------------
def fairseq_config(data: str, **model):
    from fairseq.dataclass.json_io import config_from_dict

    values = {"_name": "transformer_lm", "decoder_embed_dim": 32, "decoder_ffn_embed_dim": 64, "decoder_layers": 2,
              "decoder_attention_heads": 4, "dropout": 0.0, "max_target_positions": 64,
              "share_decoder_input_output_embed": True, **model}
    return config_from_dict({"model": values, "task": {"_name": "language_modeling", "data": data,
                                                       "tokens_per_sample": 64}})


def random_fairseq_model(data_bin: str, seed: int = 0, **model):
    """``(model, cfg, task)``: a transformer_lm on data_bin's dictionary, every weight (LayerNorms
    included) drawn at random so that the outputs are far from uniform."""
    return perturbed_model(fairseq_config(data_bin, **model), data_bin, seed)


def save_checkpoint(model, cfg, path: Path) -> Path:
    from fairseq.checkpoint.state import plain_config
    from fairseq.checkpoint_utils import torch_persistent_save

    path.parent.mkdir(parents=True, exist_ok=True)
    torch_persistent_save({"cfg": plain_config(cfg), "model": model.state_dict(), "version": 1}, str(path))
    return path


def hub_of(model, cfg, task):
    from fairseq.hub_utils import GeneratorHubInterface

    return GeneratorHubInterface(cfg, task, [model])


def fairseq_greedy(hub, prompt: torch.Tensor) -> list:
    """The ``NEW_TOKENS`` tokens greedy search appends to ``prompt`` (ids after the start token)."""
    n = len(prompt)
    hyp = hub.generate(prompt, beam=1, max_len_a=0, max_len_b=n + NEW_TOKENS, min_len=n + NEW_TOKENS)[0]
    return hyp["tokens"][n:n + NEW_TOKENS].tolist()


def hf_greedy(hf, input_ids: list, suppress: list) -> list:
    with torch.no_grad():
        out = hf.generate(torch.tensor([input_ids]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                          do_sample=False, suppress_tokens=suppress or None, pad_token_id=hf.config.eos_token_id)
    return out[0, len(input_ids):].tolist()


def run_cli(module: str, args: list, cwd: Path) -> subprocess.CompletedProcess:
    script = shutil.which({"fairseq_cli.export_hf": "fairseq-export-hf",
                           "fairseq_cli.import_hf": "fairseq-import-hf"}[module])
    command = [script] if script else [sys.executable, "-m", module]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=scaled_timeout(300))


@pytest.fixture(scope="module")
def auto():
    """transformers' Auto classes (imported once: the import takes seconds), offline: a path
    that does not exist fails at once instead of being looked up on the Hub."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        yield AutoModelForCausalLM, AutoTokenizer


# -- ours -> transformers -> ours ----------------------------------------------------------------
EXPORTS = {
    # sinusoids, relu, tied, scaled: fairseq's default transformer_lm
    "xglm": ({}, "XGLMForCausalLM"),
    # learned positions, gelu, tied, scaled (the gpt3 presets): GPT-2 with wte = table x sqrt(d)
    "gpt2": ({"decoder_learned_pos": True, "activation_fn": "gelu"}, "GPT2LMHeadModel"),
    # learned positions, tanh gelu, untied, unscaled
    "gpt2_untied": ({"decoder_learned_pos": True, "activation_fn": "gelu_accurate", "no_scale_embedding": True,
                     "share_decoder_input_output_embed": False}, "GPT2LMHeadModel"),
}


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_export_gives_the_same_logits_and_generation_and_imports_back_bit_identical(name, data_bin, tmp_path, auto):
    from fairseq import checkpoint_utils

    AutoModelForCausalLM, AutoTokenizer = auto
    options, architecture = EXPORTS[name]
    model, cfg, task = random_fairseq_model(data_bin, **options)
    d = task.source_dictionary
    report = hf_bridge.export_model(model, cfg, d, str(tmp_path / "hf"), data_bin)
    assert report.architecture == architecture and report.start_token_id == d.eos()

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == architecture
    assert (hf.config.bos_token_id, hf.config.pad_token_id, hf.config.eos_token_id) == (d.bos(), d.pad(), d.eos())
    torch.manual_seed(1)
    tokens = torch.randint(d.nspecial, len(d), (3, 40))
    tokens[:, 0] = d.eos()  # a fairseq sample starts with </s>
    with torch.no_grad():
        diff = (model(tokens)[0] - hf(input_ids=tokens).logits).abs().max().item()
    assert diff < TOLERANCE, diff

    # the tokenizer gives the ids fairseq feeds its model: </s>, then the line's symbols
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = tokenizer(TEXT)["input_ids"]
    line = d.encode_line(TEXT, add_if_not_exist=False)
    assert ids == [d.eos()] + line[:-1].tolist()
    assert tokenizer.unk_token_id == d.unk()

    prompt = line[:-1]
    assert fairseq_greedy(hub_of(model, cfg, task), prompt) == hf_greedy(hf, ids, [d.pad()])

    # import back: the same weights, bit for bit, the same config and dictionary
    hf_bridge.import_directory(str(tmp_path / "hf"), str(tmp_path / "back" / "model.pt"))
    # the file is in the layout a trained checkpoint has, which fairseq 0.12.2 reads (its
    # q/k/v weight names, no args, an optimizer history; scripts/check_fairseq_reads_ours.py
    # runs a real fairseq on one)
    raw = torch.load(tmp_path / "back" / "model.pt", map_location="cpu", weights_only=True)
    assert raw["args"] is None and len(raw["optimizer_history"]) == 1 and "best_loss" not in raw
    assert "decoder.layers.0.self_attn.q_proj.weight" in raw["model"]
    assert not any(".in_proj." in k for k in raw["model"])
    models, cfg2, task2 = checkpoint_utils.load_model_ensemble_and_task([str(tmp_path / "back" / "model.pt")])
    before, after = model.state_dict(), models[0].state_dict()
    assert before.keys() == after.keys()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert all(cfg.model[k] == cfg2.model[k] for k in cfg.model), \
        {k: (cfg.model[k], cfg2.model[k]) for k in cfg.model if cfg.model[k] != cfg2.model[k]}
    assert task2.source_dictionary == d


# -- transformers -> ours ------------------------------------------------------------------------
def byte_level_tokenizer(directory: Path, data_bin: str):
    """A GPT-2 style byte-level BPE (vocab.json, merges.txt, tokenizer.json) trained on the corpus."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    text = Path(data_bin).parent / "text" / "train.txt"
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(text.read_text(encoding="utf-8").splitlines(), vocab_size=400, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    eot = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=eot, eos_token=eot, unk_token=eot)
    tokenizer.save_pretrained(directory)
    bpe.save_model(str(directory))
    return tokenizer


def test_export_of_a_gpt2_bpe_model_tokenizes_text_as_fairseq_does(data_bin, tmp_path, auto):
    """A model trained on gpt2-BPE text (dict.txt symbols: BPE ids, in frequency order) gets a
    byte-level BPE tokenizer that yields the dictionary's ids."""
    from collections import Counter

    from safetensors.torch import load_file

    from fairseq import checkpoint_utils
    from fairseq.data import Dictionary
    from fairseq.data.encoders.gpt2_bpe import GPT2BPE
    from fairseq.dataclass.json_io import config_from_dict
    from fairseq.tasks.language_modeling import LanguageModelingTask

    _, AutoTokenizer = auto
    byte_level_tokenizer(tmp_path / "bpe", data_bin)
    files = {"gpt2_encoder_json": str(tmp_path / "bpe" / "vocab.json"),
             "gpt2_vocab_bpe": str(tmp_path / "bpe" / "merges.txt")}
    bpe = GPT2BPE(type("Cfg", (), files))
    lines = (Path(data_bin).parent / "text" / "train.txt").read_text(encoding="utf-8").splitlines()
    counts = Counter(symbol for line in lines for symbol in bpe.encode(line).split())
    d = Dictionary()
    for symbol, n in counts.most_common():
        d.add_symbol(symbol, n)
    cfg = config_from_dict({"model": {"_name": "transformer_lm", "decoder_embed_dim": 16, "decoder_ffn_embed_dim": 32,
                                      "decoder_layers": 1, "decoder_attention_heads": 2},
                            "task": {"_name": "language_modeling", "data": str(tmp_path), "tokens_per_sample": 64},
                            "bpe": {"_name": "gpt2", **files}})
    model = LanguageModelingTask(cfg.task, d).build_model(cfg.model)
    report = hf_bridge.export_model(model, cfg, d, str(tmp_path / "hf"))
    assert report.tokenizer.startswith("GPT-2 byte-level BPE")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    seen_alias = False
    for line in lines[:20] + ["The function returns a value, or raises an exception."]:
        expected = d.encode_line(bpe.encode(line), add_if_not_exist=False).tolist()
        ids = tokenizer(line)["input_ids"]
        # a GPT-2 token that dict.txt lacks has an id after the dictionary's: <unk> to the model
        seen_alias |= any(i >= len(d) for i in ids)
        assert [i if i < len(d) else d.unk() for i in ids] == [d.eos()] + expected[:-1], line
        if d.unk() not in expected:
            assert tokenizer.decode(ids, skip_special_tokens=True) == line
    assert seen_alias
    weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
    table = weights["model.embed_tokens.weight"]
    assert table.size(0) == len(d) + report_aliases(tmp_path / "hf") and (table[len(d):] == table[d.unk()]).all()
    hf_bridge.import_directory(str(tmp_path / "hf"), str(tmp_path / "back" / "model.pt"))
    back = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "back" / "model.pt"))
    assert all(torch.equal(v, back["model"][k]) for k, v in model.state_dict().items())
    assert back["cfg"]["bpe"]["_name"] == "gpt2"


def report_aliases(directory: Path) -> int:
    return json.loads((directory / "config.json").read_text())["fairseq"]["unk_aliases"]


def randomize_(hf) -> None:
    with torch.no_grad():
        for name, p in hf.named_parameters():
            norm = "ln" in name or "norm" in name
            p.copy_(torch.randn_like(p) * (0.3 if norm else 0.15) + (1.0 if norm and name.endswith("weight") else 0.0))


def native_gpt2(directory: Path, data_bin: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = byte_level_tokenizer(directory, data_bin)
    eot = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=eot, eos_token_id=eot, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(2)
    hf = GPT2LMHeadModel(config).eval()
    randomize_(hf)
    hf.save_pretrained(directory)
    return hf, tokenizer


def native_xglm(directory: Path, data_bin: str):
    from transformers import XGLMConfig, XGLMForCausalLM

    config = XGLMConfig(vocab_size=300, max_position_embeddings=64, d_model=32, num_layers=2, attention_heads=4,
                        ffn_dim=64, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    torch.manual_seed(3)
    hf = XGLMForCausalLM(config).eval()
    randomize_(hf)
    hf.save_pretrained(directory)
    return hf, None


@pytest.mark.parametrize("kind", ["gpt2", "xglm"])
def test_import_gives_the_same_logits_and_generation(kind, data_bin, tmp_path, auto):
    from fairseq import checkpoint_utils
    from fairseq.errors import ConfigError

    hf, tokenizer = (native_gpt2 if kind == "gpt2" else native_xglm)(tmp_path / "hf", data_bin)
    hub = hf_bridge.from_pretrained_hf(str(tmp_path / "hf"))
    model = hub.models[0]
    vocab = hf_bridge.load_hf_directory(str(tmp_path / "hf")).vocab
    ours = {h: i for i, h in enumerate(vocab.hf_ids) if h is not None}  # HF id -> fairseq id
    V = hf.config.vocab_size
    eos = hf.config.eos_token_id
    assert ours[eos] == hub.src_dict.eos()
    if kind == "xglm":
        assert vocab.is_identity  # XGLM's ids are fairseq's
    else:
        assert len(vocab.extras) == 3  # <s>, <pad>, <unk>: GPT-2 has only <|endoftext|>

    torch.manual_seed(4)
    hf_tokens = torch.randint(0, V, (3, 40))
    hf_tokens[:, 0] = eos
    hf_tokens[hf_tokens == hf.config.pad_token_id] = eos if hf.config.pad_token_id is not None else 0
    our_tokens = hf_tokens.clone().apply_(lambda h: ours[h])
    columns = torch.tensor([ours[h] for h in range(V)])
    with torch.no_grad():
        a = model(our_tokens)[0]
        b = hf(input_ids=hf_tokens).logits
    assert (a[..., columns] - b).abs().max().item() < TOLERANCE
    # the fairseq-only specials take no probability: log-probabilities agree too
    assert (a.log_softmax(-1)[..., columns] - b.log_softmax(-1)).abs().max().item() < TOLERANCE

    if tokenizer is not None:  # the checkpoint's gpt2 BPE encodes text as the HF tokenizer does
        text = "The function returns a value, or raises an exception."
        hf_ids = tokenizer(text)["input_ids"]
        assert hub.encode(text).tolist() == [ours[h] for h in hf_ids] + [hub.src_dict.eos()]
        assert hub.decode(hub.encode(text)) == text
    else:
        hf_ids = hf_tokens[0, 1:9].tolist()
    prompt = torch.tensor([ours[h] for h in hf_ids])
    generated = fairseq_greedy(hub, prompt)
    suppress = [hf.config.pad_token_id] if hf.config.pad_token_id is not None else []
    assert [vocab.hf_ids[i] for i in generated] == hf_greedy(hf, [eos] + hf_ids, suppress)

    # the checkpoint that fairseq-import-hf writes holds the same model
    report = hf_bridge.import_directory(str(tmp_path / "hf"), str(tmp_path / "ckpt" / "model.pt"))
    assert report.vocab_size == len(vocab.hf_ids)
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([report.checkpoint])
    with torch.no_grad():
        assert torch.equal(models[0](our_tokens)[0], a)
    # another model's dictionary is never replaced unasked
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dict.txt").write_text("hello 1\n")
    with pytest.raises(ConfigError, match="differs from the imported model's") as e:
        hf_bridge.import_directory(str(tmp_path / "hf"), str(tmp_path / "x.pt"), data_out=str(tmp_path / "other"))
    assert "\n" not in str(e.value) and not (tmp_path / "x.pt").exists()


def test_silent_rows_have_one_constant_logit():
    torch.manual_seed(5)
    ln = torch.nn.LayerNorm(16)
    with torch.no_grad():
        ln.weight.copy_(1 + 0.3 * torch.randn(16))
        ln.bias.copy_(0.3 * torch.randn(16))
    rows = hf_bridge.silent_rows(ln.weight, ln.bias, 2)
    logits = ln(torch.randn(50, 16) * 10) @ rows.T
    assert logits.max() < -1000 and (logits - logits[0, 0]).abs().max() < 1e-1
    assert hf_bridge.silent_rows(torch.ones(16), torch.zeros(16), 1) is None  # zero biases: not possible


# -- refusals: one line naming the option --------------------------------------------------------
REFUSED = {
    "decoder_normalize_before": (False, "post-norm"),
    "no_decoder_final_norm": (True, "no_decoder_final_norm"),
    "adaptive_softmax_cutoff": ("100,500", "adaptive softmax"),
    "adaptive_input": (True, "adaptive_input"),
    "layernorm_embedding": (True, "layernorm_embedding"),
    "scale_attn": (True, "NormFormer"),
    "no_token_positional_embeddings": (True, "no_token_positional_embeddings"),
    "decoder_output_dim": (16, "decoder_output_dim=16"),
}


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_a_model_that_maps_to_neither_is_refused_with_one_line(key):
    value, named = REFUSED[key]
    model_cfg = {"_name": "transformer_lm", "decoder_embed_dim": 32, "decoder_normalize_before": True, key: value}
    with pytest.raises(hf_bridge.UnmappableModelError) as e:
        hf_bridge.hf_target(model_cfg)
    assert named in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("config, named", [
    ({"model_type": "mistral"}, "model_type='mistral'"),
    ({"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"model_type": "gpt2", "activation_function": "quick_gelu"}, "quick_gelu"),
    ({"model_type": "gpt2", "layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
    ({"model_type": "xglm", "pad_token_id": 5}, "pad_token_id=5"),
])
def test_an_hf_model_that_does_not_map_is_refused_with_one_line(config, named):
    config = {"vocab_size": 10, "eos_token_id": 2, **config}
    vocab = hf_bridge.build_vocab_map(config, None, "ids")
    with pytest.raises(hf_bridge.UnmappableModelError) as e:
        hf_bridge.hf_to_fairseq(config, {}, vocab)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_from_pretrained_on_an_hf_directory_says_how_to_load_it(tmp_path):
    from fairseq.errors import ConfigError
    from fairseq.models.transformer_lm import TransformerLanguageModel

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError) as e:
        TransformerLanguageModel.from_pretrained(str(tmp_path))
    assert "fairseq.hf_bridge.from_pretrained_hf" in str(e.value) and "fairseq-import-hf" in str(e.value)
    assert "\n" not in str(e.value)


# -- the command lines -----------------------------------------------------------------------------
@pytest.mark.slow
def test_command_lines_round_trip_and_the_converted_checkpoint_trains_and_evaluates(data_bin, tmp_path):
    from fairseq import checkpoint_utils
    from fairseq_cli import eval_lm, generate, train

    model, cfg, _ = random_fairseq_model(data_bin, decoder_learned_pos=True, activation_fn="gelu")
    original = save_checkpoint(model, cfg, tmp_path / "orig" / "checkpoint.pt")

    done = run_cli("fairseq_cli.export_hf", ["--path", original, "--data", data_bin, "--out", tmp_path / "hf"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "GPT2LMHeadModel" in done.stdout and "Traceback" not in done.stderr
    done = run_cli("fairseq_cli.import_hf", [tmp_path / "hf", "--out", tmp_path / "imported" / "model.pt"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fairseq-train DATA --finetune-from-model" in done.stdout
    imported = tmp_path / "imported" / "model.pt"
    before = model.state_dict()
    after = checkpoint_utils.load_checkpoint_to_cpu(str(imported))["model"]  # integrity record checked
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "imported" / "dict.txt").read_bytes() == (Path(data_bin) / "dict.txt").read_bytes()

    # refused: post-norm; one line on stderr, exit 2, nothing written
    post_norm, post_cfg, _ = random_fairseq_model(data_bin, decoder_normalize_before=False)
    refused = save_checkpoint(post_norm, post_cfg, tmp_path / "post" / "checkpoint.pt")
    done = run_cli("fairseq_cli.export_hf", ["--path", refused, "--data", data_bin, "--out", tmp_path / "no"], tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and "post-norm" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "no").exists()

    # the imported checkpoint evaluates as the original, generates, and fine-tunes
    common = ["--gen-subset", "test", "--tokens-per-sample", "32", "--max-tokens", "1024", "--log-format", "none"]
    a = eval_lm.main([data_bin, "--path", str(original), *common])
    b = eval_lm.main([data_bin, "--path", str(imported), *common])
    assert a["loss"] == b["loss"]
    generate.cli_main([data_bin, "--path", str(imported), "--gen-subset", "test", "--max-tokens", "256", "--beam", "1",
                       "--max-len-b", "4", "--log-format", "none"])
    flags = ["--arch", "transformer_lm", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
             "--decoder-layers", "2", "--decoder-attention-heads", "4", "--activation-fn", "gelu",
             "--decoder-learned-pos", "--share-decoder-input-output-embed", "--max-target-positions", "64"]
    train.cli_main([data_bin, "--task", "language_modeling", *flags, "--finetune-from-model", str(imported),
                    "--tokens-per-sample", "32", "--max-tokens", "512", "--optimizer", "adam", "--lr", "0.0001",
                    "--max-update", "1", "--save-dir", str(tmp_path / "ft"), "--no-epoch-checkpoints",
                    "--disable-validation", "--num-workers", "0", "--log-format", "none", "--seed", "1"])
    tuned = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "ft" / "checkpoint_last.pt"))["model"]
    moved = max((tuned[k] - after[k]).abs().max().item() for k in after)
    assert 0 < moved < 0.01  # one small step away from the imported weights
