"""A user's config tree: its groups are chosen on the command line like built-ins. The command
runs in-process, except where a plugin's import must not stay in the test process."""
import os

import pytest

from conftest import ROOT, run_forked, run_in

TINY = ["task.tokens_per_sample=32", "model.decoder_embed_dim=16", "model.decoder_input_dim=16",
        "model.decoder_output_dim=16", "model.decoder_ffn_embed_dim=32", "model.decoder_attention_heads=2",
        "dataset.max_tokens=256", "dataset.num_workers=0", "optimization.max_update=1",
        "checkpoint.save_dir=ck", "hydra.run.dir=out"]


pytestmark = pytest.mark.usefixtures("restore_root_log_handlers")


def hydra_train(args, cwd, capsys):
    """fairseq-hydra-train run in-process from ``cwd``: its exit status and stderr."""
    from fairseq_cli import train_hydra

    return run_in(cwd, train_hydra.cli_main, args, capsys)


def hydra_train_process(args, cwd):
    """fairseq-hydra-train in its own process, for a run that imports a plugin."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return run_forked("module", "fairseq_cli.train_hydra", args, cwd, env=env, base_timeout=180)


def write_tree(tmp_path):
    configs = tmp_path / "myconf"
    (configs / "model").mkdir(parents=True)
    (configs / "model" / "tiny_lm.yaml").write_text(
        "defaults:\n  - /schema/model/transformer_lm@_here_\n  - _self_\ndecoder_layers: 1\n")
    return configs


@pytest.mark.slow
def test_user_group_is_chosen_on_the_command_line(data_bin, tmp_path, capsys):
    configs = write_tree(tmp_path)
    result = hydra_train(["--config-dir", "myconf", "model=tiny_lm", f"task.data={data_bin}", *TINY], tmp_path, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    import torch

    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
    assert state["cfg"]["model"]["decoder_layers"] == 1
    assert state["cfg"]["model"]["_name"] == "transformer_lm"
    # a typo names the user's file among the choices
    result = hydra_train(["--config-dir", str(configs), "model=tiny_ln", f"task.data={data_bin}"], tmp_path, capsys)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Did you mean 'tiny_lm'?" in result.stderr and "transformer_lm_gpt" in result.stderr
    # without the user's tree the name is unknown
    result = hydra_train(["model=tiny_lm", f"task.data={data_bin}"], tmp_path, capsys)
    assert result.returncode == 2 and "unknown model 'tiny_lm'" in result.stderr


def test_fairseq_group_path_selects_the_preset():
    from fairseq.dataclass.initialize import compose_config

    cfg = compose_config(["model=transformer_lm/transformer_lm_gpt", "model.decoder_layers=2"], check=True)
    assert cfg.model._name == "transformer_lm_gpt"
    assert cfg.model.decoder_embed_dim == 768 and cfg.model.decoder_layers == 2


def test_fairseq_style_experiment_file_and_group_header(data_bin, tmp_path, capsys):
    configs = write_tree(tmp_path)
    # fairseq 0.12's header, and a group file that extends its schema
    (configs / "model" / "2_layers.yaml").write_text(
        "# @package _group_\ndefaults:\n  - /schema/model/transformer_lm@_here_\n  - _self_\ndecoder_layers: 2\n")
    # an experiment file with no defaults list: values on top of the built-in config.yaml
    (configs / "wiki103.yaml").write_text(
        "# @package _group_\noptimization:\n  max_update: 2\nmodel:\n  decoder_embed_dim: 16\n")
    args = ["--config-dir", str(configs), "--config-name", "wiki103", "model=2_layers", f"task.data={data_bin}",
            *[a for a in TINY if "max_update" not in a and "decoder_embed_dim" not in a]]
    result = hydra_train(args, tmp_path, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    import torch

    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
    assert state["num_updates"] == 2
    assert state["cfg"]["model"]["decoder_layers"] == 2 and state["cfg"]["model"]["decoder_embed_dim"] == 16
    assert state["cfg"]["model"]["_name"] == "transformer_lm"


def test_group_files_of_field_values_only_take_their_directorys_or_the_default_schema(tmp_path):
    """fairseq 0.12's component files hold field values under ``# @package _group_``, no
    ``_name``: in ``model/transformer_lm/`` they are transformer_lm's, directly in ``model/`` the
    default model's (config.yaml's choice); unknown keys are still refused."""
    import pytest

    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.overrides import ConfigError

    configs = write_tree(tmp_path)
    (configs / "model" / "transformer_lm").mkdir()
    (configs / "model" / "transformer_lm" / "small.yaml").write_text(
        "# @package _group_\ndecoder_layers: 3\ndecoder_embed_dim: 48\nactivation_fn: gelu\n")
    (configs / "model" / "bare.yaml").write_text("# @package _group_\ndecoder_layers: 2\n")
    cfg = compose_config(["task.data=x", "model=transformer_lm/small"], user_config_dir=str(configs), check=True)
    assert (cfg.model._name, cfg.model.decoder_layers, cfg.model.decoder_embed_dim,
            cfg.model.activation_fn) == ("transformer_lm", 3, 48, "gelu")
    cfg = compose_config(["task.data=x", "model=bare", "model.dropout=0.3"], user_config_dir=str(configs), check=True)
    assert (cfg.model._name, cfg.model.decoder_layers, cfg.model.dropout) == ("transformer_lm", 2, 0.3)
    (configs / "model" / "typo.yaml").write_text("# @package _group_\ndecoder_layerz: 2\n")
    with pytest.raises(ConfigError, match="decoder_layerz"):
        compose_config(["task.data=x", "model=typo"], user_config_dir=str(configs), check=True)


@pytest.mark.slow
def test_fairseq_docs_experiment_file_names_components_by_string(data_bin, tiny_checkpoint, tmp_path, capsys):
    """fairseq 0.12's documented experiment file: no defaults list, components chosen by a plain
    string (``criterion: cross_entropy``) or by ``_name``; it trains and the evaluation commands
    take it too."""
    configs = tmp_path / "conf"
    (configs / "model" / "transformer_lm").mkdir(parents=True)
    (configs / "model" / "transformer_lm" / "tiny.yaml").write_text(
        "# @package _group_\ndecoder_layers: 1\ndecoder_embed_dim: 16\ndecoder_input_dim: 16\n"
        "decoder_output_dim: 16\ndecoder_ffn_embed_dim: 32\ndecoder_attention_heads: 2\n")
    (configs / "lm_experiment.yaml").write_text(f"""# @package _group_

model:
  _name: transformer_lm
  decoder_layers: 1
  decoder_embed_dim: 16
  decoder_input_dim: 16
  decoder_output_dim: 16
  decoder_ffn_embed_dim: 32
  decoder_attention_heads: 2
dataset:
  max_tokens: 256
  num_workers: 0
task:
  _name: language_modeling
  data: {data_bin}
  tokens_per_sample: 32
optimization:
  max_update: 2
  lr: 0.001
criterion: cross_entropy
optimizer: adam
lr_scheduler:
  _name: polynomial_decay
  warmup_updates: 1
checkpoint:
  save_dir: ck
""")
    result = hydra_train(["--config-dir", str(configs), "--config-name", "lm_experiment", "hydra.run.dir=out"],
                         tmp_path, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    import torch

    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
    assert state["num_updates"] == 2
    assert (state["cfg"]["criterion"]["_name"], state["cfg"]["optimizer"]["_name"],
            state["cfg"]["lr_scheduler"]["_name"]) == ("cross_entropy", "adam", "polynomial_decay")
    assert list(state["cfg"]["optimization"]["lr"]) == [0.001] and state["cfg"]["model"]["decoder_layers"] == 1

    from fairseq_cli import hydra_eval

    path = tiny_checkpoint / "checkpoint_last.pt"
    for args in (["--config-name", "lm_experiment"], ["model=transformer_lm/tiny"]):
        out = hydra_eval.eval_lm_main(["--config-dir", str(configs), *args, f"common_eval.path={path}",
                                       f"task.data={data_bin}", "task.tokens_per_sample=32"])
        assert out["loss"] > 0 and out["ntokens"] > 0


def test_printing_the_config_checks_and_rewrites_as_a_run(tmp_path, capsys):
    import yaml

    write_tree(tmp_path)
    # what --cfg job prints is what a run trains: `update_freq=1,2` is the list [1, 2] in both
    result = hydra_train(["optimization.update_freq=1,2", "optimization.lr=0.5", "--cfg", "job"], tmp_path, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    assert printed["optimization"]["update_freq"] == [1, 2] and printed["optimization"]["lr"] == [0.5]
    assert printed["task"]["data"] == "???"  # required values may stay unset when only printing
    # the run's one-line errors, not Hydra's
    result = hydra_train(["optimization.lrr=1", "--cfg", "job", "--resolve"], tmp_path, capsys)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "did you mean 'optimization.lr'" in result.stderr
    # --info takes no override as its value, and sees the user's groups
    result = hydra_train(["model=tiny_lm", "--info", "--config-dir", "myconf"], tmp_path, capsys)
    assert result.returncode == 0 and "model/tiny_lm" in result.stdout, result.stderr[-2000:]
    result = hydra_train(["model=tiny_lx", "--config-dir", "myconf", "--info", "defaults"], tmp_path, capsys)
    assert result.returncode == 2 and "Did you mean 'tiny_lm'?" in result.stderr


PLUGIN = '''
from dataclasses import dataclass, field
from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig

@dataclass
class YamlPluginConfig(CrossEntropyCriterionConfig):
    plugin_strength: float = field(default=0.1, metadata={"help": "a plugin's own field"})

@register_criterion("yaml_plugin_ce", dataclass=YamlPluginConfig)
class YamlPluginCE(CrossEntropyCriterion):
    pass
'''


@pytest.mark.slow
def test_user_dir_set_in_yaml_registers_its_plugins(tmp_path):
    import yaml

    configs = write_tree(tmp_path)
    plugin = tmp_path / "yaml_plugins"
    plugin.mkdir()
    (plugin / "__init__.py").write_text(PLUGIN)
    # the YAML chooses the plugin's component itself: it cannot compose before the import
    (configs / "exp.yaml").write_text(
        "defaults:\n  - config\n  - override criterion: yaml_plugin_ce\n  - _self_\n"
        f"common:\n  user_dir: {plugin}\ncriterion:\n  plugin_strength: 0.3\n")
    # a user_dir named only in a YAML file is imported with --allow-config-code (test_config_doors.py)
    result = hydra_train_process(["--config-dir", "myconf", "--config-name", "exp", "--cfg", "job",
                          "--allow-config-code"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    assert printed["criterion"]["_name"] == "yaml_plugin_ce" and printed["criterion"]["plugin_strength"] == 0.3
    # the YAML only names the user_dir; the command line chooses its component (a relative path)
    (configs / "plain.yaml").write_text("common:\n  user_dir: yaml_plugins\n")
    result = hydra_train_process(["--config-dir", "myconf", "--config-name", "plain", "criterion=yaml_plugin_ce",
                          "criterion.plugin_strength=0.5", "--cfg", "job", "--allow-config-code"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert yaml.safe_load(result.stdout)["criterion"]["plugin_strength"] == 0.5
    result = hydra_train_process(["--config-dir", "myconf", "--config-name", "plain", "criterion=yaml_plugin_cf",
                          "--cfg", "job", "--allow-config-code"], tmp_path)
    assert result.returncode == 2 and "Did you mean 'yaml_plugin_ce'?" in result.stderr


def test_help_lists_the_user_group_files(tmp_path, capsys):
    write_tree(tmp_path)
    result = hydra_train(["--config-dir", "myconf", "--help"], tmp_path, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    files = result.stdout.split("== config files (group=NAME) ==", 1)[1]
    assert "model: " in files and "tiny_lm" in files and "transformer_lm/transformer_lm_gpt" in files
