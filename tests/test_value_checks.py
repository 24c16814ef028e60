"""Values refused before any work, from the bounds each field declares in its metadata.

NaN and infinities, values out of the declared range, rules relating several fields, unusable
log paths, a full disk while saving, files that are not UTF-8: each ends the real command with
exit code 2 and one line on stderr naming the key (or file), no traceback. The same checks
hold for legacy flags, Hydra overrides, a user's YAML and the Python API.
"""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_HYDRA, TINY_LEGACY, in_process, run_forked
from test_bad_input_table import one_line, read_only_dir

# fairseq 0.12's checkpoint of a tiny transformer_lm and its data: what the evaluation rows load
FIXTURE = ROOT / "tests" / "fixtures" / "fairseq_0_12"
CHECKPOINT = FIXTURE / "checkpoint_last.pt"

# (legacy flags, Hydra override, the key the message must name): fairseq-train and
# fairseq-hydra-train both refuse them before anything is written
BOTH_DOORS = [
    # NaN and infinities, scalar and list fields, bounded or not
    (["--lr", "nan"], "optimization.lr=[nan]", "optimization.lr"),
    (["--lr", "0.1,inf"], "optimization.lr=inf", "optimization.lr"),
    (["--dropout", "nan"], "model.dropout=nan", "model.dropout"),
    (["--clip-norm", "nan"], "optimization.clip_norm=nan", "optimization.clip_norm"),
    (["--adam-betas", "0.9,nan"], "optimizer.adam_betas=[0.9,nan]", "optimizer.adam_betas"),
    (["--adam-eps", "inf"], "optimizer.adam_eps=-inf", "optimizer.adam_eps"),
    (["--stop-time-hours", "nan"], "optimization.stop_time_hours=-inf", "optimization.stop_time_hours"),
    # ranges
    (["--seed", "-1"], "common.seed=4294967296", "common.seed"),
    (["--distributed-world-size", "0"], "distributed_training.distributed_world_size=0",
     "distributed_training.distributed_world_size"),
    (["--required-batch-size-multiple", "0"], "dataset.required_batch_size_multiple=0",
     "dataset.required_batch_size_multiple"),
    (["--tokens-per-sample", "0"], "task.tokens_per_sample=0", "task.tokens_per_sample"),
    (["--max-tokens-valid", "0"], "dataset.max_tokens_valid=0", "dataset.max_tokens_valid"),
    (["--batch-size-valid", "0"], "dataset.batch_size_valid=0", "dataset.batch_size_valid"),
    (["--log-interval", "0"], "common.log_interval=0", "common.log_interval"),
    (["--validate-interval", "0"], "dataset.validate_interval=0", "dataset.validate_interval"),
    (["--save-interval", "0"], "checkpoint.save_interval=0", "checkpoint.save_interval"),
    (["--keep-last-epochs", "-2"], "checkpoint.keep_last_epochs=-2", "checkpoint.keep_last_epochs"),
    (["--warmup-updates", "-1"], "lr_scheduler.warmup_updates=-1", "lr_scheduler.warmup_updates"),
    (["--weight-decay", "-1"], "optimizer.weight_decay=inf", "optimizer.weight_decay"),
    (["--max-epoch", "-1"], "optimization.max_epoch=-1", "optimization.max_epoch"),
    (["--patience", "-2"], "checkpoint.patience=-2", "checkpoint.patience"),
    # a rule relating several groups: the metric must be one the criterion reports
    (["--best-checkpoint-metric", "los"], "checkpoint.best_checkpoint_metric=accuracy",
     "checkpoint.best_checkpoint_metric"),
]


@pytest.mark.parametrize("legacy, hydra, key", BOTH_DOORS, ids=[row[1] for row in BOTH_DOORS])
def test_values_refused_in_both_training_doors(data_bin, tmp_path, capsys, legacy, hydra, key):
    from fairseq_cli import train, train_hydra

    save = str(tmp_path / "ck")
    code, err = in_process(train.cli_main, [data_bin, *TINY_LEGACY, "--save-dir", save, *legacy], capsys)
    one_line(code, err, 2, key)
    assert f"--{key.rsplit('.', 1)[-1].replace('_', '-')}" in err  # the legacy flag too
    code, err = in_process(train_hydra.cli_main,
                           [f"task.data={data_bin}", f"checkpoint.save_dir={save}", *TINY_HYDRA, hydra], capsys)
    one_line(code, err, 2, key)
    assert not os.path.exists(save)  # stopped before anything was written


# Hydra overrides of options the training parser has no flags for (generation), still checked
HYDRA_ONLY = [
    ("generation.beam=0", "generation.beam"),
    ("generation.nbest=6", "generation.nbest"),  # more than the default beam of 5
    ("generation.sampling_topk=-2", "generation.sampling_topk"),
    ("generation.sampling_topp=1.5", "generation.sampling_topp"),
    ("generation.temperature=0", "generation.temperature"),
    ("generation.max_len_a=-3", "generation.max_len_a"),
    ("eval_lm.softmax_batch=-1", "eval_lm.softmax_batch"),
]


@pytest.mark.parametrize("hydra, key", HYDRA_ONLY, ids=[row[0] for row in HYDRA_ONLY])
def test_generation_values_refused_by_the_hydra_door(data_bin, tmp_path, capsys, hydra, key):
    from fairseq_cli import train_hydra

    code, err = in_process(train_hydra.cli_main, [f"task.data={data_bin}", f"checkpoint.save_dir={tmp_path}/ck",
                                                  *TINY_HYDRA, hydra], capsys)
    one_line(code, err, 2, key)


# (command, flags, key): the evaluation commands' legacy flags
EVAL_ROWS = [
    ("generate", ["--beam", "0"], "generation.beam"),
    ("generate", ["--nbest", "3", "--beam", "2"], "generation.nbest"),
    ("generate", ["--sampling", "--sampling-topk", "-2"], "generation.sampling_topk"),
    ("generate", ["--sampling", "--sampling-topp", "1.5"], "generation.sampling_topp"),
    ("generate", ["--temperature", "-1"], "generation.temperature"),
    ("generate", ["--temperature", "nan"], "generation.temperature"),
    ("generate", ["--max-len-a", "-3"], "generation.max_len_a"),
    ("generate", ["--max-len-b", "-1"], "generation.max_len_b"),
    ("generate", ["--lenpen", "inf"], "generation.lenpen"),
    ("interactive", ["--beam", "0"], "generation.beam"),
    ("eval_lm", ["--softmax-batch", "-1"], "eval_lm.softmax_batch"),
    ("eval_lm", ["--tokens-per-sample", "0"], "task.tokens_per_sample"),
    ("eval_lm", ["--seed", "-1"], "common.seed"),
    ("validate", ["--max-tokens-valid", "0"], "dataset.max_tokens_valid"),
]


@pytest.mark.parametrize("command, flags, key", EVAL_ROWS,
                         ids=[f"{row[0]} {' '.join(row[1])}" for row in EVAL_ROWS])
def test_values_refused_by_the_evaluation_commands(capsys, monkeypatch, command, flags, key):
    import io
    import importlib

    cli_main = importlib.import_module(f"fairseq_cli.{command}").cli_main
    monkeypatch.setattr(sys, "stdin", io.StringIO("the function\n"))
    argv = [str(FIXTURE / "data-bin"), "--path", str(CHECKPOINT), "--num-workers", "0", "--batch-size", "2",
            *flags]
    code, err = in_process(cli_main, argv, capsys)
    one_line(code, err, 2, key)


# (Hydra evaluation command, override, key)
HYDRA_EVAL_ROWS = [
    ("generate_main", "generation.temperature=nan", "generation.temperature"),
    ("generate_main", "generation.beam=0", "generation.beam"),
    ("eval_lm_main", "eval_lm.softmax_batch=0", "eval_lm.softmax_batch"),
]


@pytest.mark.parametrize("command, override, key", HYDRA_EVAL_ROWS, ids=[row[1] for row in HYDRA_EVAL_ROWS])
def test_values_refused_by_the_hydra_evaluation_commands(capsys, command, override, key):
    from fairseq_cli import hydra_eval

    argv = [f"task.data={FIXTURE / 'data-bin'}", f"common_eval.path={CHECKPOINT}", "dataset.num_workers=0",
            override]
    code, err = in_process(getattr(hydra_eval, command), argv, capsys)
    one_line(code, err, 2, key)


# (a user's experiment YAML, the key): the values of YAML files get the same checks
YAML_ROWS = [
    ("model:\n  dropout: .nan\n", "model.dropout"),
    ("optimization:\n  lr: [.inf]\n", "optimization.lr"),
    ("optimization:\n  lr: .inf\n", "optimization.lr"),  # a scalar for a list field
    ("common:\n  seed: -1\n", "common.seed"),
    ("generation:\n  beam: 2\n  nbest: 3\n", "generation.nbest"),
]


@pytest.mark.parametrize("text, key", YAML_ROWS, ids=[row[1] + ":" + row[0].split()[-1] for row in YAML_ROWS])
def test_values_refused_in_a_user_yaml(data_bin, tmp_path, capsys, text, key):
    from fairseq_cli import train_hydra

    configs = tmp_path / "my_configs"
    configs.mkdir()
    (configs / "experiment.yaml").write_text("defaults:\n  - config\n  - _self_\n" + text)
    code, err = in_process(train_hydra.cli_main, ["--config-dir", str(configs), "--config-name", "experiment",
                                                  f"task.data={data_bin}", *TINY_HYDRA], capsys)
    one_line(code, err, 2, key)


# -- the Python API ---------------------------------------------------------------------------------
API_OVERRIDES = [
    ({"dropout": float("nan")}, "model.dropout"),
    ({"tokens_per_sample": 0}, "task.tokens_per_sample"),
    ({"seed": -1}, "common.seed"),
    ({"softmax_batch": float("inf")}, "eval_lm.softmax_batch"),
]


@pytest.mark.parametrize("overrides, key", API_OVERRIDES, ids=[row[1] for row in API_OVERRIDES])
def test_from_pretrained_checks_its_overrides(overrides, key):
    """``from_pretrained(..., **overrides)`` sets its overrides through the same field checks."""
    from fairseq.errors import ConfigError
    from fairseq.models.transformer_lm import TransformerLanguageModel

    with pytest.raises(ConfigError) as e:
        TransformerLanguageModel.from_pretrained(str(FIXTURE), CHECKPOINT.name,
                                                 data_name_or_path=str(FIXTURE / "data-bin"), **overrides)
    assert key in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 2


def test_generation_settings_of_a_python_call():
    """The hub's generation keywords: ``beam=0`` is refused; :func:`check_settings` checks plain
    settings against GenerationConfig's declared bounds (NaN, ranges, nbest <= beam)."""
    from fairseq.dataclass.configs import GenerationConfig
    from fairseq.dataclass.overrides import check_settings
    from fairseq.errors import ConfigError
    from fairseq.models.transformer_lm import TransformerLanguageModel

    lm = TransformerLanguageModel.from_pretrained(str(FIXTURE), CHECKPOINT.name,
                                                  data_name_or_path=str(FIXTURE / "data-bin"))
    with pytest.raises(ConfigError, match="generation.beam=0"):
        lm.sample("the function", beam=0)
    for kwargs, key in [({"temperature": float("nan"), "sampling": True}, "generation.temperature"),
                        ({"max_len_a": -3.0}, "generation.max_len_a"),
                        ({"beam": 2, "nbest": 3}, "generation.nbest")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            lm.sample("the function", **kwargs)
    for settings, key in [({"temperature": float("nan")}, "generation.temperature"),
                          ({"max_len_a": -3.0}, "generation.max_len_a"),
                          ({"sampling_topp": 0.0}, "generation.sampling_topp"),
                          ({"beam": 2, "nbest": 3}, "generation.nbest")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
            check_settings(GenerationConfig, settings, "generation")
        assert "\n" not in str(e.value)
    check_settings(GenerationConfig, {"beam": 1, "sampling_topk": -1, "sampling_topp": -1.0, "x": 1}, "generation")


# -- what is accepted ---------------------------------------------------------------------------------
def test_special_and_boundary_values_are_accepted():
    """-1 where it means off, inf where a field declares it means no limit, the bounds themselves."""
    from fairseq.dataclass.configs import CheckpointConfig, GenerationConfig, OptimizationConfig
    from fairseq.dataclass.overrides import check_settings

    check_settings(GenerationConfig, {"sampling_topk": -1, "sampling_topp": -1.0, "temperature": 1e-6,
                                      "max_len_a": 0.0, "beam": 1, "nbest": 1}, "generation")
    check_settings(GenerationConfig, {"sampling_topp": 1.0, "sampling_topk": 1}, "generation")
    check_settings(OptimizationConfig, {"clip_norm": float("inf"), "stop_time_hours": float("inf"),
                                        "max_epoch": 0, "lr": [0.0, 1.0]}, "optimization")
    check_settings(CheckpointConfig, {"keep_last_epochs": -1, "patience": -1, "keep_best_checkpoints": 0},
                   "checkpoint")


def test_the_message_says_what_is_accepted():
    from fairseq.dataclass.overrides import accepted_values

    assert accepted_values({"min": 0, "max": 1}) == "a value in [0, 1]"
    assert accepted_values({"above": 0, "max": 1, "also": (-1,)}) == "a value in (0, 1] or -1"
    assert accepted_values({"min": 1, "also": (-1,)}) == "a value >= 1 or -1"
    assert accepted_values({"min": 0, "inf": True}) == "a value >= 0 (inf: no limit)"
    assert accepted_values({}) == "a finite number"
    assert accepted_values({"len": 2, "min": 0, "below": 1}) == "2 values, each in [0, 1)"


# -- where the run writes ----------------------------------------------------------------------------
def test_unusable_log_paths_stop_before_training(data_bin, tmp_path, capsys):
    from fairseq_cli import train

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    rows = [(["--log-file", str(a_file / "train.log")], "--log-file"),
            (["--log-file", str(tmp_path)], "--log-file"),
            (["--log-file", read_only_dir(tmp_path) + "/logs/train.log"], "--log-file"),
            (["--tensorboard-logdir", str(a_file)], "--tensorboard-logdir")]
    for flags, flag in rows:
        save = tmp_path / "ck"
        code, err = in_process(train.cli_main, [data_bin, *TINY_LEGACY, "--save-dir", str(save), *flags], capsys)
        one_line(code, err, 2, flag)
        assert flags[1] in err
        assert not [f for f in os.listdir(save) if f.endswith(".pt")]  # no training happened


def test_unusable_tensorboard_logdir_through_hydras_app(data_bin, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = run_forked("module", "fairseq_cli.train_hydra",
                        [f"task.data={data_bin}", f"checkpoint.save_dir={tmp_path / 'ck'}", "hydra.run.dir=out",
                         f"common.tensorboard_logdir={a_file}", *TINY_HYDRA], tmp_path, env=env, base_timeout=180)
    one_line(result.returncode, result.stderr, 2, "common.tensorboard_logdir")
    assert str(a_file) in result.stderr


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 MiB tmpfs (root only; skipped where mounting is impossible), unmounted afterwards."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs: {e}")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)  # still open


def fill(directory, leave):
    """Fill the device holding ``directory`` until about ``leave`` bytes are free."""
    import tempfile

    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with tempfile.NamedTemporaryFile(dir=directory, prefix="filler", delete=False) as f:
        try:
            f.write(b"\0" * max(free - leave, 0))
            f.flush()
        except OSError:  # tmpfs counts in pages: "full" may come a page early
            pass


def test_a_real_full_disk_while_saving(data_bin, tiny_tmpfs, capsys):
    """torch.save on a full tmpfs: one line naming the file, the partial file gone, the previous
    checkpoint whole; and a full device refused for --log-file before training."""
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu
    from fairseq_cli import train

    save = tiny_tmpfs / "ck"
    argv = [data_bin, *TINY_LEGACY, "--save-dir", str(save), "--log-format", "none"]
    train.cli_main([*argv, "--max-update", "1"])
    last = save / "checkpoint_last.pt"
    before = last.read_bytes()
    fill(str(tiny_tmpfs), leave=len(before) // 2)  # room for half a checkpoint
    code, err = in_process(train.cli_main, [*argv, "--max-update", "2"], capsys)
    one_line(code, err, 1, "no space left on the device holding save_dir")  # a failed run
    assert str(save / "checkpoint_last.pt") in err and "--save-dir" in err
    assert not [f for f in os.listdir(save) if f.startswith(".tmp")]
    assert last.read_bytes() == before
    assert load_checkpoint_to_cpu(str(last))["extra_state"]["train_iterator"] is not None
    # the log file on that (now full) device: refused before training
    fill(str(tiny_tmpfs), leave=0)
    code, err = in_process(train.cli_main, [*argv, "--max-update", "3", "--log-file", str(tiny_tmpfs / "x.log")],
                           capsys)
    one_line(code, err, 2, "--log-file")
    assert "no space left" in err


def test_a_simulated_full_disk_while_saving(data_bin, tmp_path, capsys, monkeypatch):
    """torch.save's zip writer raising what it raises on a full disk (a RuntimeError, no errno):
    one line, the partial file removed, the previous checkpoint untouched."""
    import torch

    from fairseq.checkpoint import files, saving
    from fairseq_cli import train

    real_save, calls = torch.save, []

    def save_then_fail(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 1 or not hasattr(f, "write"):
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK" * 1000)  # a partial write
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(saving.torch, "save", save_then_fail)
    monkeypatch.setattr(files, "_free_bytes", lambda path: 0)
    save = tmp_path / "ck"
    code, err = in_process(train.cli_main, [data_bin, *TINY_LEGACY, "--save-dir", str(save),
                                            "--save-interval-updates", "1"], capsys)
    one_line(code, err, 1, "no space left on the device holding save_dir")  # a failed run
    assert str(save / "checkpoint_last.pt") in err and "--save-dir" in err
    assert not [f for f in os.listdir(save) if f.startswith(".tmp")]
    monkeypatch.setattr(saving.torch, "save", real_save)
    state = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["extra_state"]["saved_as"][:2] == ["checkpoint_last.pt", "checkpoint_1_1.pt"]


def test_which_torch_save_failures_are_named():
    """A failed zip write with space left names the failed write; other errors pass through."""
    from fairseq.checkpoint.files import checkpoint_write_error
    from fairseq.errors import ResourceError

    failed = RuntimeError("[enforce fail at inline_container.cc:591] . PytorchStreamWriter failed writing "
                          "file data/0: file write failed")
    error = checkpoint_write_error(failed, "/tmp", "/tmp/checkpoint_last.pt")
    assert isinstance(error, ResourceError) and error.exit_code == 1  # the run failed
    assert "torch.save failed" in str(error) and "--save-dir" in str(error) and "\n" not in str(error)
    assert checkpoint_write_error(RuntimeError("CUDA error"), "/tmp", "/tmp/x.pt") is None
    assert checkpoint_write_error(ValueError("unexpected pos"), "/tmp", "/tmp/x.pt") is None


# -- files that are not UTF-8 ------------------------------------------------------------------------
def test_a_dictionary_that_is_not_utf8(data_bin, tmp_path, capsys):
    import shutil

    from fairseq_cli import train

    data = tmp_path / "data"
    shutil.copytree(data_bin, data)
    lines = (data / "dict.txt").read_bytes().split(b"\n")
    offset = sum(len(line) + 1 for line in lines[:5]) + 3
    lines[5] = b"caf\xe9 12"
    (data / "dict.txt").write_bytes(b"\n".join(lines))
    code, err = in_process(train.cli_main, [str(data), *TINY_LEGACY, "--save-dir", str(tmp_path / "ck")], capsys)
    one_line(code, err, 2, str(data / "dict.txt"))
    assert f"byte {offset}" in err and "line 6" in err


def test_the_yaml_decode_helper_names_the_file_and_offset(tmp_path):
    from fairseq.dataclass.overrides import undecodable_yaml_error

    configs = tmp_path / "configs"
    (configs / "model").mkdir(parents=True)
    (configs / "experiment.yaml").write_text("defaults:\n  - config\n  - _self_\n")
    bad = b"defaults:\n  - /schema/model/transformer_lm@_here_\n  - _self_\ndropout: 0.2 # \xff\n"
    (configs / "model" / "mine.yaml").write_bytes(bad)
    try:
        bad.decode("utf-8")
    except UnicodeDecodeError as e:
        error = undecodable_yaml_error(str(configs), e)
    message = str(error)
    offset = bad.index(b"\xff")
    assert str(configs / "model" / "mine.yaml") in message and f"byte {offset}" in message
    assert "line 4" in message and "\n" not in message


def test_a_yaml_config_that_is_not_utf8(data_bin, tmp_path, capsys):
    from fairseq_cli import train_hydra

    configs = tmp_path / "my_configs"
    configs.mkdir()
    (configs / "experiment.yaml").write_bytes(b"defaults:\n  - config\n  - _self_\n# caf\xe9\n")
    code, err = in_process(train_hydra.cli_main, ["--config-dir", str(configs), "--config-name", "experiment",
                                                  f"task.data={data_bin}", *TINY_HYDRA], capsys)
    one_line(code, err, 2, str(configs / "experiment.yaml"))
    assert "byte 37 (line 4" in err  # 0-based offset of \xe9


# -- every declared bound, generated from the fields ------------------------------------------------
def _bound_rows():
    """(flag, bad value, key) for every field of the default training config that declares a
    bound (just outside it) and every float field (NaN): generated from the metadata, so a bound
    added to a field is tested here without a new row."""
    import dataclasses

    from fairseq.dataclass.configs import GENERIC_GROUPS
    from fairseq.dataclass.list_fields import sequence_field
    from fairseq.dataclass.values import field_python_type
    from fairseq.registry import ALL_REGISTRIES, import_builtin_components

    import_builtin_components()
    skip_groups = {"generation", "interactive", "eval_lm", "common_eval", "bmuf", "ema"}
    schemas = [(g, dc) for g, dc in GENERIC_GROUPS.items() if g not in skip_groups]
    for group, name in (("task", "language_modeling"), ("model", "transformer_lm"),
                        ("optimizer", "adam"), ("lr_scheduler", "inverse_sqrt")):
        schemas.append((group, ALL_REGISTRIES[group].get(name).dataclass))
    rows, flags = [], set()
    for group, schema in schemas:
        for f in dataclasses.fields(schema):
            if f.name.startswith("_") or f.metadata.get("suppress_argparse"):
                continue
            flag = "--" + f.name.replace("_", "-")
            if flag in flags:  # one field per flag (the first group holding a name wins)
                continue
            tp = field_python_type(f)
            is_seq, item = sequence_field(f)
            kind = item if is_seq else tp
            meta, bad = f.metadata, None
            if kind in (int, float) and "min" in meta and not meta.get("also"):
                bad = meta["min"] - 1
            elif kind in (int, float) and "above" in meta and not meta.get("also"):
                bad = meta["above"]
            elif kind in (int, float) and "max" in meta:
                bad = meta["max"] + 1
            if bad is not None and not (is_seq and meta.get("len")):
                flags.add(flag)
                rows.append((flag, str(bad), f"{group}.{f.name}"))
            if kind is float and not (is_seq and meta.get("len")):
                rows.append((flag, "nan", f"{group}.{f.name}"))
                flags.add(flag)
    return rows


BOUND_ROWS = _bound_rows()


def test_the_generated_table_is_large_enough():
    assert len(BOUND_ROWS) >= 60, BOUND_ROWS


@pytest.mark.parametrize("flag, value, key", BOUND_ROWS, ids=[f"{r[0]}={r[1]}" for r in BOUND_ROWS])
def test_every_declared_bound_is_refused_by_the_legacy_door(data_bin, tmp_path, capsys, flag, value, key):
    from fairseq_cli import train

    code, err = in_process(train.cli_main, [data_bin, *TINY_LEGACY, "--lr-scheduler", "inverse_sqrt",
                                            "--save-dir", str(tmp_path / "ck"), flag, value], capsys)
    one_line(code, err, 2, key)
    assert value in err or (value == "nan" and "nan" in err.lower())
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("flag, value, key", BOUND_ROWS, ids=[f"{r[2]}={r[1]}" for r in BOUND_ROWS])
def test_every_declared_bound_is_refused_by_the_hydra_door(data_bin, tmp_path, capsys, flag, value, key):
    from fairseq_cli import train_hydra

    group, name = key.split(".", 1)
    override = f"{key}=[{value}]" if name in ("lr", "update_freq", "adam_betas") else f"{key}={value}"
    code, err = in_process(train_hydra.cli_main, [f"task.data={data_bin}", *TINY_HYDRA,
                                                  f"checkpoint.save_dir={tmp_path / 'ck'}", override], capsys)
    one_line(code, err, 2, key)
    assert not (tmp_path / "ck").exists()
