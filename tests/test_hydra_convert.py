"""fairseq-hydra-convert: legacy flags -> Hydra overrides / experiment YAML, overrides -> flags.

Each conversion is checked by composing what it wrote and comparing the resolved config, key by
key, with the config the original command trains.
"""
import os
import shlex

import pytest

from conftest import ROOT, run_forked
from test_doors import VARIANTS, hydra_config, legacy_command, legacy_config, with_variant

from fairseq_cli.hydra_convert import (_resolved, convert, legacy_to_overrides, legacy_to_yaml,
                                       overrides_to_flags)

README_LEGACY = ["fairseq-train", "data-bin/demo", "--arch", "transformer_lm", "--optimizer", "adam",
                 "--decoder-layers", "2", "--max-update", "1000"]
README_LEGACY_INVERSE_SQRT = README_LEGACY[:6] + ["--lr-scheduler", "inverse_sqrt"] + README_LEGACY[6:]


def commands(data_bin):
    out = {v: with_variant(legacy_command(data_bin, "ck", "train.log"), v, "legacy") for v in VARIANTS}
    out["readme"] = README_LEGACY  # fairseq's fixed schedule: the overrides must choose it
    out["readme_inverse_sqrt"] = README_LEGACY_INVERSE_SQRT
    return out


def diff(a, b):
    a, b = _resolved(a), _resolved(b)
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS) + ["readme", "readme_inverse_sqrt"])
def test_round_trips(name, data_bin, tmp_path):
    from fairseq.dataclass.initialize import compose_config

    legacy = commands(data_bin)[name]
    expected = legacy_config([a for a in legacy if a != "fairseq-train"])
    overrides = legacy_to_overrides(legacy)
    # legacy -> overrides -> the Hydra door's (checked) composition
    assert diff(hydra_config(overrides), expected) == {}
    assert {"model=transformer_lm", f"optimizer={expected.optimizer._name}",
            f"lr_scheduler={expected.lr_scheduler._name}"} <= set(overrides)
    # legacy -> yaml -> --config-dir/--config-name
    (tmp_path / "exp.yaml").write_text(legacy_to_yaml(legacy))
    assert diff(compose_config(config_name="exp", user_config_dir=str(tmp_path)), expected) == {}
    # overrides -> flags -> the legacy parser
    assert diff(legacy_config(overrides_to_flags(overrides)), expected) == {}


def test_only_changed_values_become_overrides():
    overrides = legacy_to_overrides(README_LEGACY)
    assert overrides == ["task=language_modeling", "model=transformer_lm", "criterion=cross_entropy",
                         "optimizer=adam", "lr_scheduler=fixed", "optimization.max_update=1000",
                         "task.data=data-bin/demo", "model.decoder_layers=2"]
    line = convert("line", README_LEGACY)
    assert shlex.split(line)[1:] == overrides
    flags = shlex.split(convert("flags", ["fairseq-hydra-train"] + overrides))
    assert flags[:2] == ["fairseq-train", "data-bin/demo"]
    assert "--lr-scheduler" in flags and flags[flags.index("--lr-scheduler") + 1] == "fixed"


def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return run_forked("module", "fairseq_cli.hydra_convert", args, cwd, env=env, base_timeout=120)


@pytest.mark.slow
def test_cli(tmp_path):
    out = _cli(["--to", "yaml", "-o", "exp.yaml", "--"] + README_LEGACY, tmp_path)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "exp.yaml").read_text()
    assert "override /lr_scheduler: fixed" in text and "max_update: 1000" in text
    out = _cli(["--", "fairseq-train", "data-bin/demo", "--optimizer", "adam"], tmp_path)
    assert out.returncode == 2 and "--arch" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = _cli(["--", "fairseq-train", "d", "--arch", "transformer_lm", "--optimizer", "adam",
                "--lrr", "1"], tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("fairseq-train: error:") and "--lr?" in out.stderr
    out = _cli(["--to", "flags", "--", "optimization.lrr=1"], tmp_path)
    assert out.returncode == 2 and "optimization.lr" in out.stderr and "Traceback" not in out.stderr
    out = _cli(["--to", "flags", "--", "optimization.lr=[0.1]"], tmp_path)
    assert out.returncode == 2 and "task.data" in out.stderr
    out = _cli([], tmp_path)
    assert out.returncode == 2 and "nothing to convert" in out.stderr
