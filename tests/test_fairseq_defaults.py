"""The legacy door's defaults are fairseq 0.12's, and the validation-subset rules are fairseq's."""
import ast
import re
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fairseq_0_12"


def legacy_config(argv):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    return convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(input_args=argv),
                                                                     argv))


def fairseq_config_from_log():
    """The config fairseq 0.12.2 printed at the start of tests/fixtures' train.log, as a dict."""
    line = next(x for x in (FIXTURES / "train.log").read_text().splitlines() if "| fairseq_cli.train | {" in x)
    text = line.split("| fairseq_cli.train | ", 1)[1]
    # enum values are printed bare (relu, none): quote them so the dict is a literal
    text = re.sub(r": ([A-Za-z_]\w*)([,}])",
                  lambda m: m.group(0) if m.group(1) in ("None", "True", "False") else f": {m.group(1)!r}{m.group(2)}",
                  text)
    return ast.literal_eval(text)


def fixture_train_argv():
    readme = (FIXTURES / "README.md").read_text()
    command = readme.split("## checkpoint_last.pt, train.log")[1].split("```")[1]
    return shlex.split(command.replace("\\\n", " "))[1:]


# Where this package's values deliberately differ from fairseq 0.12's for the same flags.
KNOWN_DIFFERENCES = {
    ("model", "decoder_normalize_before"),  # pre-norm by default (docs/design.md)
    ("model", "max_target_positions"),  # follows task.tokens_per_sample instead of None
    ("distributed_training", "distributed_backend"),  # None: nccl on GPUs, gloo on CPUs
    ("checkpoint", "save_dir"), ("task", "data"),  # the fixture's paths were made relative
    ("optimizer", "adam_betas"),  # a list, not the string "(0.9, 0.98)"; same values
}


def test_legacy_config_equals_the_one_fairseq_printed_for_the_same_flags():
    theirs = fairseq_config_from_log()
    ours = OmegaConf.to_container(legacy_config(fixture_train_argv()), resolve=True, enum_to_str=True)
    compared, differences = 0, set()
    for group, node in ours.items():
        if not isinstance(node, dict) or not isinstance(theirs.get(group), dict):
            continue
        for key, value in node.items():
            if key in theirs[group]:
                compared += 1
                if theirs[group][key] != value:
                    differences.add((group, key))
    assert compared > 100  # most of the config is shared
    assert differences == KNOWN_DIFFERENCES
    assert ours["optimizer"]["adam_betas"] == list(ast.literal_eval(theirs["optimizer"]["adam_betas"]))


def test_legacy_component_defaults_are_fairseqs():
    cfg = legacy_config(["data-bin", "--arch", "transformer_lm", "--optimizer", "adam"])
    assert (cfg.task._name, cfg.criterion._name, cfg.lr_scheduler._name) == ("language_modeling", "cross_entropy",
                                                                             "fixed")
    bare = legacy_config(["data-bin"])
    assert bare.model is None and bare.optimizer is None  # --arch and --optimizer have no default


def test_the_doors_differ_only_in_the_documented_component_defaults():
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.overrides import check_overrides

    hydra = compose_config(check_overrides(["task.data=data-bin"]))
    legacy = legacy_config(["data-bin", "--arch", "transformer_lm", "--optimizer", "adam"])
    assert hydra.lr_scheduler._name == "inverse_sqrt" and legacy.lr_scheduler._name == "fixed"
    for group in ("common", "dataset", "optimization", "checkpoint", "task", "model", "criterion", "optimizer"):
        assert OmegaConf.to_container(hydra[group], resolve=True) == OmegaConf.to_container(legacy[group], resolve=True)
    same = legacy_config(["data-bin", "--arch", "transformer_lm", "--optimizer", "adam", "--lr-scheduler",
                          "inverse_sqrt"])
    assert OmegaConf.to_container(same, resolve=True) == OmegaConf.to_container(hydra, resolve=True)


@pytest.mark.parametrize("missing, flag", [(["--optimizer", "adam"], "--arch"), (["--arch", "transformer_lm"],
                                                                                "--optimizer")])
def test_training_without_arch_or_optimizer_stops_naming_the_flag(data_bin, tmp_path, capsys, missing, flag):
    from fairseq_cli.train import cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main([data_bin, *missing, "--save-dir", str(tmp_path / "ck")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"give {flag} NAME" in err and "Traceback" not in err


def test_help_marks_arch_and_optimizer_as_required():
    from fairseq import options

    text = options.get_training_parser(input_args=[]).format_help()
    assert "optimizer (required for training;" in text and "lr_scheduler (default: fixed;" in text


# -- validation subsets ----------------------------------------------------------------------------
def subset_config(directory, splits, *flags):
    for split in ["train", *splits]:
        (directory / f"{split}.bin").write_bytes(b"")
        (directory / f"{split}.idx").write_bytes(b"")
    return legacy_config([str(directory), "--arch", "transformer_lm", "--optimizer", "adam", *flags])


@pytest.mark.parametrize("splits, flags", [
    (["valid", "valid1"], []),
    (["valid", "valid1", "valid2"], ["--valid-subset", "valid,valid1"]),
])
def test_unused_valid_splits_stop_the_run(tmp_path, splits, flags):
    from fairseq.data.data_utils import raise_if_valid_subsets_unintentionally_ignored
    from fairseq.dataclass.overrides import ConfigError

    with pytest.raises(ConfigError, match=r"leaves the validation splits \[.*'valid\d'\] .*--combine-valid-subsets"):
        raise_if_valid_subsets_unintentionally_ignored(subset_config(tmp_path, splits, *flags))


@pytest.mark.parametrize("splits, flags", [
    (["valid"], []),
    (["valid", "valid1"], ["--ignore-unused-valid-subsets"]),
    (["valid", "valid1"], ["--combine-val"]),
    (["valid", "valid1"], ["--combine-valid-subsets"]),
    (["valid", "valid1"], ["--valid-subset", "valid,valid1"]),
    (["valid", "valid1"], ["--valid-subset", "valid1"]),
    (["valid1"], ["--valid-subset", "valid1"]),
    (["valid", "valid1", "valid2"], ["--valid-subset", "valid,valid1", "--ignore-unused-valid-subsets"]),
    (["valid", "valid1"], ["--disable-validation"]),
])
def test_valid_split_configurations_that_are_fine(tmp_path, splits, flags):
    from fairseq.data.data_utils import raise_if_valid_subsets_unintentionally_ignored

    raise_if_valid_subsets_unintentionally_ignored(subset_config(tmp_path, splits, *flags))


@pytest.fixture()
def two_valid_splits(data_bin, tmp_path):
    """A copy of the corpus whose valid split is also present as valid1."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_bin, data)
    for ext in ("bin", "idx"):
        shutil.copyfile(data / f"valid.{ext}", data / f"valid1.{ext}")
    return str(data)


def run(data, tmp_path, name, *flags):
    from conftest import read_json_log
    from fairseq_cli.train import cli_main

    log = tmp_path / f"{name}.log"
    cli_main([data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
              "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--optimizer", "adam",
              "--tokens-per-sample", "32", "--max-tokens", "256", "--num-workers", "0", "--max-update", "1",
              "--no-save", "--save-dir", str(tmp_path / "ck"), "--lr", "0.003", "--log-format", "json",
              "--log-file", str(log), *flags])
    return [r for r in read_json_log(log) if any(k.endswith("_loss") for k in r) and "train_loss" not in r]


def test_each_valid_subset_gets_its_record_or_one_when_combined(two_valid_splits, tmp_path):
    apart = run(two_valid_splits, tmp_path, "apart", "--valid-subset", "valid,valid1")
    assert [sorted(k for k in r if k.endswith("_loss")) for r in apart] == [["valid_loss"], ["valid1_loss"]]
    assert apart[0]["valid_loss"] == apart[1]["valid1_loss"]  # the same data twice
    combined = run(two_valid_splits, tmp_path, "combined", "--combine-valid-subsets")
    assert len(combined) == 1 and combined[0]["valid_loss"] == apart[0]["valid_loss"]


def test_an_unused_valid_split_stops_the_legacy_door_with_one_line(two_valid_splits, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(two_valid_splits, tmp_path, "unused")
    assert exit_info.value.code == 2
    assert "['valid1']" in capsys.readouterr().err
