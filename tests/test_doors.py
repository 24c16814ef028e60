"""The two front doors: the design note's command lines give equal configs and equal training.

The command lines are the design note's, changing only the data path, the save dir and the
sizes (smaller model, max_update, max_tokens, tokens_per_sample).
"""
import os
import sys
import warnings

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, train_losses, run_forked

SIZES_HYDRA = [
    "model.decoder_layers=2", "model.decoder_embed_dim=32", "model.decoder_input_dim=32",
    "model.decoder_output_dim=32", "model.decoder_ffn_embed_dim=64", "model.decoder_attention_heads=2",
]
SIZES_LEGACY = [
    "--decoder-layers", "2", "--decoder-embed-dim", "32", "--decoder-input-dim", "32",
    "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
]


VARIANTS = {
    "design_note": ([], []),
    "adaptive_loss": (["criterion=adaptive_loss", "model.adaptive_softmax_cutoff='100,500'"],
                      ["--criterion", "adaptive_loss", "--adaptive-softmax-cutoff", "100,500"]),
    "nag_cosine": (["optimizer=nag", "optimizer.momentum=0.9", "lr_scheduler=cosine",
                    "lr_scheduler.min_lr=1e-06", "lr_scheduler.warmup_updates=2"],
                   ["--optimizer", "nag", "--momentum", "0.9", "--lr-scheduler", "cosine",
                    "--min-lr", "1e-06", "--warmup-updates", "2"]),
}


def with_variant(command, variant, door):
    """The design note's command with one component family swapped, in either door."""
    hydra_extra, legacy_extra = VARIANTS[variant]
    if door == "hydra":
        replaced = {o.split("=", 1)[0] for o in hydra_extra}
        kept = [o for o in command if o.split("=", 1)[0] not in replaced]
        if "optimizer=nag" in hydra_extra:
            kept = [o for o in kept if not o.startswith("optimizer.adam_betas")]
        return kept + hydra_extra
    kept, skip = [], 0
    replaced = {a for a in legacy_extra if a.startswith("--")}
    for arg in command:
        if skip:
            skip -= 1
            continue
        if arg in replaced or ("--optimizer" in replaced and arg == "--adam-betas"):
            skip = 1
            continue
        kept.append(arg)
    return kept + legacy_extra


def hydra_command(data, save_dir, log_file, max_update=6):
    return [
        "task=language_modeling", f"task.data={data}", "task.tokens_per_sample=32",
        "task.sample_break_mode=none", "model=transformer_lm",
        "model.share_decoder_input_output_embed=true", "model.dropout=0.1",
        "optimizer=adam", "optimizer.adam_betas='(0.9, 0.98)'", "optimizer.weight_decay=0.01",
        "lr_scheduler=inverse_sqrt", "lr_scheduler.warmup_updates=4000",
        "lr_scheduler.warmup_init_lr=1e-07", "criterion=cross_entropy", "common.fp16=true",
        "common.log_format=json", "common.log_interval=1", "dataset.max_tokens=128",
        "dataset.num_workers=4", "optimization.update_freq=[16]",
        f"optimization.max_update={max_update}", "optimization.clip_norm=0.0",
        "optimization.lr=[0.0005]", f"checkpoint.save_dir={save_dir}",
        "checkpoint.save_interval_updates=10", f"common.log_file={log_file}",
    ] + SIZES_HYDRA


def legacy_command(data, save_dir, log_file, max_update=6):
    return [
        "--task", "language_modeling", data, "--save-dir", save_dir,
        "--arch", "transformer_lm", "--share-decoder-input-output-embed", "--dropout", "0.1",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--weight-decay", "0.01",
        "--clip-norm", "0.0", "--lr", "0.0005", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "4000", "--warmup-init-lr", "1e-07", "--tokens-per-sample", "32",
        "--sample-break-mode", "none", "--max-tokens", "128", "--update-freq", "16", "--fp16",
        "--max-update", str(max_update), "--log-format", "json", "--log-interval", "1",
        "--num-workers", "4", "--save-interval-updates", "10", "--log-file", log_file,
    ] + SIZES_LEGACY


def hydra_config(overrides):
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.overrides import check_overrides

    return compose_config(check_overrides(overrides))


def legacy_config(argv):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser(input_args=argv)
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_doors_compose_equal_configs_key_by_key(data_bin, tmp_path, variant):
    log = str(tmp_path / "log")
    hydra = with_variant(hydra_command(data_bin, "ck", log), variant, "hydra")
    legacy = with_variant(legacy_command(data_bin, "ck", log), variant, "legacy")
    a = OmegaConf.to_container(hydra_config(hydra), resolve=True, enum_to_str=True)
    b = OmegaConf.to_container(legacy_config(legacy), resolve=True, enum_to_str=True)

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    fa, fb = flat(a), flat(b)
    assert sorted(fa) == sorted(fb)
    diffs = {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}
    assert diffs == {}
    assert fa["optimizer.lr"] == [0.0005] and fa["lr_scheduler.lr"] == [0.0005]
    assert fa["model.max_target_positions"] == 32
    if variant == "design_note":
        assert fa["optimizer.adam_betas"] == [0.9, 0.98]
    if variant == "adaptive_loss":
        assert fa["criterion._name"] == "adaptive_loss" and fa["model.adaptive_softmax_cutoff"] == "100,500"
    if variant == "nag_cosine":
        assert (fa["optimizer._name"], fa["lr_scheduler._name"]) == ("nag", "cosine")
        assert fa["lr_scheduler.max_update"] == 6  # the cosine period follows optimization.max_update


def run_hydra_in_process(argv, monkeypatch, cwd):
    from fairseq_cli import train_hydra

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["fairseq-hydra-train"])
    train_hydra.cli_main(argv + [f"hydra.run.dir={cwd}/outputs"])


def run_legacy_in_process(argv, monkeypatch, cwd):
    from fairseq_cli import train

    monkeypatch.chdir(cwd)
    train.cli_main(argv)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_doors_train_update_for_update(data_bin, tmp_path, monkeypatch, variant):
    (tmp_path / "h").mkdir()
    (tmp_path / "l").mkdir()
    hlog, llog = str(tmp_path / "h.log"), str(tmp_path / "l.log")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_hydra_in_process(with_variant(hydra_command(data_bin, "ck", hlog), variant, "hydra"),
                             monkeypatch, tmp_path / "h")
        run_legacy_in_process(with_variant(legacy_command(data_bin, "ck", llog), variant, "legacy"),
                              monkeypatch, tmp_path / "l")
    hydra_losses, legacy_losses = train_losses(hlog), train_losses(llog)
    assert len(hydra_losses) == 6
    assert hydra_losses == legacy_losses
    # the save dir is relative: it lands in the launch directory, not in Hydra's run dir
    assert (tmp_path / "h" / "ck" / "checkpoint_last.pt").is_file()
    assert (tmp_path / "l" / "ck" / "checkpoint_last.pt").is_file()


def _run_cli(module, args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return run_forked("module", module, args, cwd, env=env, base_timeout=120)


@pytest.mark.parametrize("args, expected", [
    ([], ["task.data", "task.data=demo/data-bin"]),
    (["task.data=x", "optimization.lrr=1"], ["optimization.lrr", "did you mean 'optimization.lr'"]),
    (["task.data=x", "optimization.max_update=abc"], ["optimization.max_update", "expects int", "abc"]),
    (["--task.data=x"], ["no leading dashes", "task.data=x"]),
    (["task.data=x", "model=transformer_lmm"], ["transformer_lmm", "Did you mean 'transformer_lm'"]),
    # a fairseq-train flag given to the Hydra door: the override that says the same
    (["task.data=x", "--max-tokens", "1024"], ["write dataset.max_tokens=1024 instead of --max-tokens 1024"]),
    (["task.data=x", "--arch=transformer_lm_gpt"], ["write model=transformer_lm_gpt"]),
    (["task.data=x", "--no-such-flag"], ["does not know '--no-such-flag'", "--help lists them"]),
    (["task.data=x", "--cfg", "jobs"], ["--cfg", "invalid choice: 'jobs'"]),
])
def test_hydra_door_errors_name_the_key_and_fix(args, expected, tmp_path):
    result = _run_cli("fairseq_cli.train_hydra", args, tmp_path)
    assert result.returncode == 2
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args, expected", [
    (["--lrr", "1"], ["--lrr", "did you mean --lr?"]),
    (["--max-update", "abc"], ["--max-update", "invalid int value: 'abc'"]),
    (["--arch", "transformer_lm"], ["data directory is required"]),
])
def test_legacy_door_errors_name_the_key_and_fix(args, expected, data_bin, tmp_path):
    if "data directory" not in expected[0]:
        args = [data_bin] + args
    result = _run_cli("fairseq_cli.train", args, tmp_path)
    assert result.returncode == 2
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unquoted_comma_values_outside_multirun_mean_one_value():
    from fairseq.dataclass.overrides import ConfigError, check_overrides

    rewritten = check_overrides(["task.data=x", "model.adaptive_softmax_cutoff=10000,50000",
                                 "optimization.update_freq=1,2"])
    assert rewritten[1:] == ["model.adaptive_softmax_cutoff='10000,50000'", "optimization.update_freq=[1,2]"]
    with pytest.raises(ConfigError, match="--multirun"):
        check_overrides(["task.data=x", "optimization.max_update=1,2"])


def test_doors_give_equal_bpe_and_tokenizer_nodes(data_bin):
    hydra = hydra_config([f"task.data={data_bin}", "model=transformer_lm", "optimizer=adam",
                          "lr_scheduler=fixed", "bpe=gpt2", "bpe.gpt2_encoder_json=bpe/encoder.json",
                          "bpe.gpt2_vocab_bpe=bpe/vocab.bpe", "tokenizer=space"])
    legacy = legacy_config([data_bin, "--arch", "transformer_lm", "--optimizer", "adam", "--bpe", "gpt2",
                            "--gpt2-encoder-json", "bpe/encoder.json", "--gpt2-vocab-bpe", "bpe/vocab.bpe",
                            "--tokenizer", "space"])
    for cfg in (hydra, legacy):
        assert OmegaConf.to_container(cfg.bpe) == {"_name": "gpt2", "gpt2_encoder_json": "bpe/encoder.json",
                                                   "gpt2_vocab_bpe": "bpe/vocab.bpe"}
        assert OmegaConf.to_container(cfg.tokenizer) == {"_name": "space"}
    plain = legacy_config([data_bin, "--arch", "transformer_lm", "--optimizer", "adam"])
    assert plain.bpe is None and plain.tokenizer is None and plain.generation.beam == 5


def test_input_and_output_dims_follow_the_embedding_dim_in_both_doors():
    """``decoder_embed_dim`` alone sizes the whole model (fairseq 0.12's legacy door did so; its
    Hydra door kept 512-wide input and output layers); a value given stays exact."""
    from fairseq import options
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.models.transformer_lm import TransformerLanguageModel

    def legacy(*flags):
        argv = ["/tmp/data", "--arch", "transformer_lm", "--decoder-embed-dim", "128", *flags]
        return convert_namespace_to_omegaconf(options.parse_args_and_arch(
            options.get_training_parser(input_args=argv), argv)).model

    def hydra(*overrides):
        return compose_config(["task.data=x", "model.decoder_embed_dim=128", *overrides]).model

    for model in (legacy(), hydra()):
        assert (model.decoder_input_dim, model.decoder_output_dim) == (128, 128)
    for model in (legacy("--decoder-input-dim", "64", "--decoder-output-dim", "96"),
                  hydra("model.decoder_input_dim=64", "model.decoder_output_dim=96")):
        assert (model.decoder_input_dim, model.decoder_output_dim) == (64, 96)

    class Task:
        from fairseq.data import Dictionary

        source_dictionary = target_dictionary = Dictionary()

    cfg = hydra("model.decoder_layers=1", "model.decoder_ffn_embed_dim=32")
    net = TransformerLanguageModel.build_model(cfg, Task())
    assert net.decoder.embed_tokens.embedding_dim == 128 and net.decoder.output_projection.in_features == 128
    assert net.decoder.project_in_dim is None
