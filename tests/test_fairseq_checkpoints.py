"""Checkpoints written by fairseq 0.12 (and the args-era before it) load and compute as in fairseq.

Test checkpoints in fairseq's layout are made from our own models through
``TransformerLanguageModel.fairseq_state_dict`` (fairseq's documented key names: ``q_proj``,
``embeddings.{i}.{0,1}``, ``head``/``tail.{i}.{0,2}``, ``version``), wrapped the way fairseq
saves them (``cfg`` dict, or an ``args`` Namespace before 0.10).
"""
import argparse
import json
import logging
import math
from pathlib import Path
from unittest.mock import MagicMock

import pytest
import torch
from omegaconf import OmegaConf

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fairseq_0_12"
CKPT = str(FIXTURES / "checkpoint_last.pt")
DATA = str(FIXTURES / "data-bin")


def lm_loss(model, task, split="test", max_tokens=1024) -> float:
    """Token-level loss (base 2) of ``model`` on ``split``: blocks of tokens_per_sample, no context."""
    task.load_dataset(split)
    itr = task.get_batch_iterator(task.dataset(split), max_tokens=max_tokens).next_epoch_itr(shuffle=False)
    pad = task.target_dictionary.pad()
    nll, count = 0.0, 0
    with torch.no_grad():
        for sample in itr:
            lprobs = model.get_normalized_probs(model(sample["net_input"]["src_tokens"]), log_probs=True)
            target = sample["target"]
            token_lp = lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            mask = target.ne(pad)
            nll -= token_lp[mask].double().sum().item()
            count += int(mask.sum())
    return nll / count / math.log(2)


# -- the checkpoint made by fairseq 0.12.2 -------------------------------------------------------
def test_fairseq_checkpoint_gives_fairseqs_test_loss():
    from fairseq.checkpoint_utils import load_model_for_inference

    model, task, cfg = load_model_for_inference(CKPT, overrides={"tokens_per_sample": 32}, data=DATA)
    # fairseq 0.12's --arch transformer_lm keeps the dataclass default: post-norm, no final norm
    assert cfg.model.decoder_normalize_before is False and model.decoder.layer_norm is None
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight
    # fairseq-eval-lm --tokens-per-sample 32 --max-tokens 1024 --context-window 0: 6.3361
    assert lm_loss(model, task) == pytest.approx(6.3361, abs=1e-4)


def test_fairseq_config_is_typed_and_unknown_keys_make_one_warning(caplog):
    from fairseq.checkpoint_utils import config_from_checkpoint, load_checkpoint_to_cpu

    with caplog.at_level(logging.WARNING):
        state = load_checkpoint_to_cpu(CKPT)
    # fairseq writes no SHA-256 of the tensors: one warning says it loads unverified
    unverified = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(unverified) == 1 and "carries no SHA-256" in unverified[0], unverified
    assert "integrity" not in state
    assert state["num_updates"] == 40
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cfg = config_from_checkpoint(state, CKPT)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    for key in ("generation.beam_mt", "model.character_embeddings", "common.aim_repo"):
        assert key in message
    # fairseq's generation, interactive, bpe and tokenizer nodes are kept, not dropped
    for node in ("generation (whole node)", "interactive", "bpe", "tokenizer"):
        assert node not in message
    assert cfg.generation.beam == 5 and cfg.generation.max_len_b == 200
    assert cfg.interactive.input == "-" and cfg.bpe is None and cfg.tokenizer is None
    assert list(cfg.optimizer.adam_betas) == [0.9, 0.98]  # from the string '(0.9, 0.98)'
    assert list(cfg.optimization.lr) == [0.003]
    assert cfg.common.log_format == "json" and cfg.common.seed == 3
    assert cfg.model.max_target_positions == 32  # fairseq's None falls back to tokens_per_sample
    assert cfg.lr_scheduler.warmup_updates == 10


# -- test checkpoints in fairseq's layout --------------------------------------------------------
MODEL_VARIANTS = {
    "adaptive_tied_learned_pos": dict(
        decoder_embed_dim=16, decoder_input_dim=16, decoder_output_dim=16, decoder_ffn_embed_dim=24,
        decoder_attention_heads=2, decoder_layers=2, adaptive_input=True, adaptive_input_cutoff="300,700",
        adaptive_input_factor=2, adaptive_softmax_cutoff="300,700", adaptive_softmax_factor=2,
        tie_adaptive_weights=True, tie_adaptive_proj=True, decoder_learned_pos=True,
        no_decoder_final_norm=True),
    "adaptive_softmax_projections": dict(
        decoder_embed_dim=24, decoder_input_dim=16, decoder_output_dim=8, decoder_ffn_embed_dim=32,
        decoder_attention_heads=4, decoder_layers=1, adaptive_softmax_cutoff="500",
        layernorm_embedding=True, decoder_normalize_before=False),
    "normformer_separate_output": dict(
        decoder_embed_dim=16, decoder_input_dim=16, decoder_output_dim=16, decoder_ffn_embed_dim=24,
        decoder_attention_heads=4, decoder_layers=2, scale_fc=True, scale_attn=True, scale_heads=True,
        scale_resids=True, activation_fn="gelu"),
}


def make_task_and_model(tokens_per_sample=16, seed=0, **model_values):
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config

    cfg = compose_config(["task=language_modeling", "model=transformer_lm", f"task.data={DATA}",
                          f"task.tokens_per_sample={tokens_per_sample}"])
    for key, value in model_values.items():
        cfg.model[key] = value
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model).eval()
    with torch.no_grad():  # NormFormer scales start at one: make them matter
        for name, p in model.named_parameters():
            if name.endswith(("c_attn", "w_resid")):
                p.uniform_(0.5, 1.5)
    return cfg, task, model


def tokens(task, rows=3, length=12):
    g = torch.Generator().manual_seed(1)
    return torch.randint(4, len(task.source_dictionary), (rows, length), generator=g)


@pytest.mark.parametrize("variant", sorted(MODEL_VARIANTS))
def test_fairseq_layout_round_trip_computes_the_same(variant):
    _, task, model = make_task_and_model(**MODEL_VARIANTS[variant])
    state = model.fairseq_state_dict()
    assert "decoder.version" in state and not any(".in_proj." in k for k in state)
    assert any(k.endswith("self_attn.q_proj.weight") for k in state)
    _, _, other = make_task_and_model(seed=1, **MODEL_VARIANTS[variant])
    other.load_state_dict(state, strict=True)
    x = tokens(task)
    with torch.no_grad():
        expected = model.get_normalized_probs(model(x), log_probs=True)
        got = other.get_normalized_probs(other(x), log_probs=True)
    assert torch.allclose(got, expected, atol=1e-6)


def test_fairseq_adaptive_softmax_keys_and_shapes():
    _, task, model = make_task_and_model(**MODEL_VARIANTS["adaptive_softmax_projections"])
    state = model.fairseq_state_dict()
    vocab = len(task.source_dictionary)
    assert state["decoder.adaptive_softmax.head.weight"].shape == (500 + 1, 8)  # words + 1 cluster
    assert state["decoder.adaptive_softmax.tail.0.0.weight"].shape == (2, 8)  # Linear(8, 8 // 4)
    assert state["decoder.adaptive_softmax.tail.0.2.weight"].shape == (vocab - 500, 2)
    assert state["decoder.project_in_dim.weight"].shape == (24, 16)
    assert state["decoder.project_out_dim.weight"].shape == (8, 24)
    tied = make_task_and_model(**MODEL_VARIANTS["adaptive_tied_learned_pos"])[2].fairseq_state_dict()
    assert tied["decoder.embed_tokens.embeddings.1.0.weight"].shape == (400, 8)
    assert tied["decoder.embed_tokens.embeddings.1.1.weight"].shape == (16, 8)
    assert tied["decoder.adaptive_softmax.head.class_proj.weight"].shape == (2, 16)
    assert torch.equal(tied["decoder.adaptive_softmax.tail.1.2.weight"],
                       tied["decoder.embed_tokens.embeddings.2.0.weight"])


def args_era_checkpoint(path, model, tokens_per_sample, **model_args):
    """A pre-0.10 fairseq checkpoint: flat args Namespace, no cfg, fairseq's old entries."""
    args = argparse.Namespace(
        arch="transformer_lm", task="language_modeling", data=[DATA], criterion="adaptive_loss",
        optimizer="adam", lr_scheduler="inverse_sqrt", lr=0.0005, adam_betas="(0.9, 0.98)",
        warmup_updates=4000, max_tokens=2048, seed=7, tokens_per_sample=tokens_per_sample,
        sample_break_mode="none", min_lr=1e-09, no_progress_bar=True, share_all_embeddings=False,
        dropout=0.1, **model_args)
    torch.save({"args": args, "model": model.fairseq_state_dict(),
                "optimizer_history": [{"criterion_name": "AdaptiveLoss", "optimizer_name": "FairseqAdam",
                                       "lr_scheduler_state": {"best": 5.1}, "num_updates": 1200}],
                "extra_state": {"epoch": 3, "val_loss": 5.1,
                                "train_iterator": {"epoch": 3, "iterations_in_epoch": 7}},
                "last_optimizer_state": {}}, path)


def test_args_era_checkpoint_loads_weights_only_and_computes(tmp_path, caplog):
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu, load_model_ensemble_and_task

    values = dict(decoder_embed_dim=16, decoder_ffn_embed_dim=24, decoder_attention_heads=2,
                  decoder_layers=2, decoder_learned_pos=True, adaptive_softmax_cutoff="300,700",
                  adaptive_softmax_factor=2.0, decoder_input_dim=12, decoder_output_dim=16)
    _, task, model = make_task_and_model(tokens_per_sample=20, decoder_normalize_before=True, **values)
    path = tmp_path / "checkpoint_best.pt"
    args_era_checkpoint(path, model, 20, **values)
    state = load_checkpoint_to_cpu(str(path))
    assert state["cfg"]["model"]["_name"] == "transformer_lm" and state["num_updates"] == 1200
    with caplog.at_level(logging.WARNING):
        models, cfg, task2 = load_model_ensemble_and_task([str(path)])
    assert "args.share_all_embeddings" in caplog.text
    assert cfg.model.decoder_normalize_before is True  # every args-era transformer_lm was pre-norm
    assert list(cfg.optimization.lr) == [0.0005] and cfg.optimization.stop_min_lr == 1e-09
    assert cfg.criterion._name == "adaptive_loss" and cfg.task.data == DATA
    x = tokens(task)
    with torch.no_grad():
        expected = model.get_normalized_probs(model(x), log_probs=True)
        got = models[0].get_normalized_probs(models[0](x), log_probs=True)
    assert torch.allclose(got, expected, atol=1e-6)


def test_our_checkpoint_layout_still_loads(tmp_path):
    """A checkpoint in this package's own layout (fused in_proj) keeps loading."""
    from fairseq.checkpoint_utils import atomic_save, load_model_for_inference, plain_config

    cfg, task, model = make_task_and_model(decoder_embed_dim=16, decoder_input_dim=16,
                                           decoder_output_dim=16, decoder_ffn_embed_dim=24,
                                           decoder_attention_heads=2, decoder_layers=1)
    path = str(tmp_path / "ours.pt")
    atomic_save({"cfg": plain_config(cfg), "model": model.state_dict()}, path)
    loaded, _, _ = load_model_for_inference(path)
    x = tokens(task)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[0], model(x)[0], atol=1e-6)


# -- bad input ------------------------------------------------------------------------------------
def _saved_cfg():
    return torch.load(CKPT, weights_only=True)


@pytest.mark.parametrize("change, message", [
    (lambda s: s["cfg"]["model"].update(_name="bart_large"), "model 'bart_large'"),
    (lambda s: s["cfg"]["task"].update(_name="speech_to_text"), "task 'speech_to_text'"),
    (lambda s: s["cfg"]["model"].update(character_embeddings=True), "model.character_embeddings=True"),
    (lambda s: s["cfg"]["model"].update(base_layers=2), "model.base_layers=2"),
    (lambda s: s["cfg"]["model"].update(activation_fn="swish"), "model.activation_fn='swish'"),
    (lambda s: s.pop("cfg"), "fairseq version"),
    (lambda s: s["model"].pop("decoder.layers.1.fc1.weight"), "decoder.layers.1.fc1.weight"),
])
def test_unsupported_checkpoints_end_in_one_clear_line(tmp_path, change, message):
    from fairseq.checkpoint_utils import CheckpointError, load_model_for_inference

    state = _saved_cfg()
    change(state)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model_for_inference(str(path), data=DATA)
    text = str(info.value)
    assert message in text and "\n" not in text and str(path) in text


def test_args_must_be_a_namespace(tmp_path):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu

    torch.save({"args": {"arch": "transformer_lm"}, "model": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not the argparse.Namespace"):
        load_checkpoint_to_cpu(str(tmp_path / "x.pt"))


# -- JSON config ----------------------------------------------------------------------------------
def test_config_json_round_trip(tmp_path):
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.json_io import load_config_json, save_config_json

    cfg = compose_config(["task=language_modeling", "model=transformer_lm_gpt2_tiny", "task.data=/d",
                          "optimizer=adam", "optimization.lr=[0.25]"])
    path = save_config_json(cfg, str(tmp_path))
    saved = json.loads(Path(path).read_text())
    assert saved["optimizer"]["lr"] == [0.25] and saved["model"]["activation_fn"] == "gelu"
    back = load_config_json(path)
    assert OmegaConf.to_container(back, resolve=True) == OmegaConf.to_container(cfg, resolve=True)
    assert not list(tmp_path.glob(".tmp*"))


def test_string_forms_are_parsed_never_evaluated(caplog):
    from fairseq.dataclass.json_io import ConfigValueError, config_from_dict

    with caplog.at_level(logging.WARNING):
        cfg = config_from_dict({"optimizer": {"_name": "adam", "adam_betas": "__import__('os')"},
                                "optimization": {"update_freq": "1,2", "lr": 0.5},
                                "common": {"log_format": "no_such_format"}})
    assert list(cfg.optimization.update_freq) == [1, 2] and list(cfg.optimization.lr) == [0.5]
    assert "optimizer.adam_betas=\"__import__('os')\"" in caplog.text
    assert "common.log_format='no_such_format'" in caplog.text
    with pytest.raises(ConfigValueError, match="model.decoder_layers='two'"):
        config_from_dict({"model": {"_name": "transformer_lm", "decoder_layers": "two"}})


# -- fairseq's Python API -------------------------------------------------------------------------
def test_load_checkpoint_with_a_checkpoint_node_follows_fairseqs_protocol():
    from fairseq import checkpoint_utils
    from fairseq.dataclass.configs import CheckpointConfig

    trainer = MagicMock()
    trainer.checkpoint_suffix = ""
    trainer.load_checkpoint.return_value = {"train_iterator": {"epoch": 2, "iterations_in_epoch": 5},
                                            "best": 3.5}
    node = OmegaConf.structured(CheckpointConfig(save_dir="/nonexistent", reset_optimizer=True))
    extra, itr = checkpoint_utils.load_checkpoint(node, trainer, combine=False)
    args, kwargs = trainer.load_checkpoint.call_args
    assert args == ("/nonexistent/checkpoint_last.pt", True, False, {}) and kwargs == {"reset_meters": False}
    trainer.get_train_iterator.assert_called_once_with(epoch=2, load_dataset=True, combine=False)
    itr.load_state_dict.assert_called_once_with({"epoch": 2, "iterations_in_epoch": 5})
    assert extra["best"] == 3.5 and itr is trainer.get_train_iterator.return_value


def test_prune_state_dict_keeps_and_renumbers_layers():
    from fairseq.checkpoint_utils import prune_state_dict

    state = {f"decoder.layers.{i}.fc1.weight": torch.full((1,), float(i)) for i in range(4)}
    state["decoder.embed_tokens.weight"] = torch.zeros(2)
    pruned = prune_state_dict(state, OmegaConf.create({"_name": "transformer_lm",
                                                       "decoder_layers_to_keep": "1,3"}))
    assert sorted(pruned) == ["decoder.embed_tokens.weight", "decoder.layers.0.fc1.weight",
                              "decoder.layers.1.fc1.weight"]
    assert pruned["decoder.layers.1.fc1.weight"].item() == 3.0
    assert prune_state_dict(state, None) is state


def test_torch_persistent_save_sync_and_async(tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    path = str(tmp_path / "c.pt")
    checkpoint_utils.torch_persistent_save({"w": torch.ones(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    opened, saved = MagicMock(), MagicMock()
    monkeypatch.setattr(checkpoint_utils.PathManager, "opena", opened)
    monkeypatch.setattr(checkpoint_utils, "_torch_persistent_save", saved)
    checkpoint_utils.torch_persistent_save({}, "async.pt", async_write=True)
    opened.assert_called_with("async.pt", "wb")
    saved.assert_called_once()


def test_verify_checkpoint_directory(tmp_path):
    from fairseq.checkpoint_utils import verify_checkpoint_directory

    verify_checkpoint_directory(str(tmp_path / "new" / "dir"))
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())


def test_fairseq_presets_are_registered_with_fairseqs_values():
    from fairseq.models import MODEL_REGISTRY

    tiny = MODEL_REGISTRY.get("transformer_lm_gpt2_tiny").default_config()
    assert (tiny.decoder_embed_dim, tiny.decoder_ffn_embed_dim, tiny.decoder_layers,
            tiny.decoder_attention_heads, tiny.activation_fn) == (64, 64, 2, 1, "gelu")
    gpt3 = MODEL_REGISTRY.get("transformer_lm_gpt3_xl").default_config()
    assert (gpt3.decoder_embed_dim, gpt3.decoder_ffn_embed_dim, gpt3.decoder_layers,
            gpt3.decoder_attention_heads) == (2048, 8192, 24, 32)
    assert gpt3.decoder_learned_pos and gpt3.share_decoder_input_output_embed and gpt3.dropout == 0.0
    for name in ("gpt3_small", "gpt3_medium", "gpt3_large", "gpt3_2_7", "gpt3_6_7", "gpt3_13",
                 "gpt3_175", "gpt2_big_wide", "gpt2_bigger"):
        assert f"transformer_lm_{name}" in MODEL_REGISTRY
