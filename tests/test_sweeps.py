"""List fields given one value, and --multirun sweeps: each job trains into its own save_dir.
Where a run and a sweep write; the default batch of a bare `fairseq-hydra-train task.data=DIR`."""
import re

import pytest
import torch

from fairseq.dataclass.initialize import compose_config
from fairseq.dataclass.overrides import ConfigError, check_overrides
from conftest import run_module
from test_bad_input import TINY_HYDRA


def test_scalar_for_list_field_is_a_one_element_list():
    out = check_overrides(["task.data=x", "optimization.lr=0.001", "optimization.update_freq=2"])
    assert "optimization.lr=[0.001]" in out and "optimization.update_freq=[2]" in out
    cfg = compose_config(out)
    assert list(cfg.optimization.lr) == [0.001] and list(cfg.optimization.update_freq) == [2]
    # a sweep over a list field sweeps one-element lists
    out = check_overrides(["task.data=x", "optimization.lr=0.001,0.002"], multirun=True)
    assert "optimization.lr=choice([0.001],[0.002])" in out
    out = check_overrides(["task.data=x", "optimization.lr=[0.1,0.2],[0.3]"], multirun=True)
    assert "optimization.lr=choice([0.1,0.2],[0.3])" in out


def test_sweep_save_dir_rules():
    # no save_dir: each job gets one under its own output directory
    out = check_overrides(["task.data=x", "optimization.lr=0.1,0.2"], multirun=True)
    assert out[-1] == "checkpoint.save_dir=${hydra:runtime.output_dir}/checkpoints"
    # a save_dir shared by several jobs is refused, naming the fix
    with pytest.raises(ConfigError, match=r"\$\{hydra:job.num\}"):
        check_overrides(["task.data=x", "optimization.lr=0.1,0.2", "checkpoint.save_dir=ck"], multirun=True)
    # per-job save_dirs are kept as given
    for given in ["checkpoint.save_dir=ck/${hydra:job.num}", "checkpoint.save_dir=ck_${optimization.lr}",
                  "checkpoint.save_dir=a,b"]:
        assert given in check_overrides(["task.data=x", "optimization.lr=0.1,0.2", given], multirun=True)
    # one job: a save_dir is not shared
    assert "checkpoint.save_dir=ck" in check_overrides(["task.data=x", "checkpoint.save_dir=ck"], multirun=True)


@pytest.mark.slow
def test_two_job_sweep_trains_both_into_separate_dirs(data_bin, tmp_path):
    args = ["-m", f"task.data={data_bin}", *TINY_HYDRA, "optimization.max_update=4",
            "lr_scheduler.warmup_updates=1", "optimization.lr=0.0001,0.01", "common.log_format=none"]
    result = run_module("fairseq_cli.train_hydra", args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # the layout docs/training.md ("Where a Hydra run writes") describes: multirun/DATE/TIME/N/
    sweeps = list(tmp_path.glob("multirun/*/*"))
    assert len(sweeps) == 1 and re.fullmatch(r"multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d",
                                             sweeps[0].relative_to(tmp_path).as_posix())
    sweep = sweeps[0]
    assert (sweep / "multirun.yaml").is_file()
    losses = []
    for job, lr in (("0", 0.0001), ("1", 0.01)):
        for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
            assert (sweep / job / ".hydra" / name).is_file()
        assert "done training" in (sweep / job / "train_hydra.log").read_text()
        state = torch.load(sweep / job / "checkpoints" / "checkpoint_last.pt", weights_only=True)
        assert state["num_updates"] == 4  # trained, not resumed from the other job
        assert list(state["cfg"]["optimization"]["lr"]) == [lr]
        assert state["cfg"]["checkpoint"]["save_dir"] == str(sweep / job / "checkpoints")
        losses.append(state["extra_state"]["best"])
    assert losses[0] != losses[1]
    # the sweep ends with one line per job and the best job
    summary = [line for line in result.stdout.splitlines() if line.startswith(("job ", "best: "))]
    assert len(summary) == 3, result.stdout[-2000:]
    for job, lr in (("0", "0.0001"), ("1", "0.01")):
        line = next(line for line in summary if line.startswith(f"job {job}: "))
        assert f"optimization.lr=[{lr}]" in line and str(sweep / job / "checkpoints") in line
        assert f"best valid loss {losses[int(job)]:.4g}" in line
    won = min((0, 1), key=lambda j: losses[j])
    assert summary[-1].startswith(f"best: job {won} (") and f"{losses[won]:.4g}" in summary[-1]
    assert not (tmp_path / "checkpoints").exists()
    # a save_dir shared by the jobs stops before anything runs: one line, exit 2
    result = run_module("fairseq_cli.train_hydra", args + ["checkpoint.save_dir=ck"], tmp_path)
    assert result.returncode == 2 and "${hydra:job.num}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "ck").exists()


def test_task_function_returns_best_validation_loss(data_bin, tmp_path, monkeypatch):
    from fairseq_cli.train_hydra import hydra_main

    monkeypatch.chdir(tmp_path)
    cfg = compose_config(check_overrides([f"task.data={data_bin}", *TINY_HYDRA, "optimization.max_update=2",
                                          "common.log_format=none", "checkpoint.save_dir=ck"]))
    best = hydra_main(cfg)
    state = torch.load(tmp_path / "ck" / "checkpoint_best.pt", weights_only=True)
    assert isinstance(best, float) and best == pytest.approx(state["extra_state"]["best"])


def test_scalar_for_list_field_in_yaml(tmp_path):
    (tmp_path / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\n"
                                        "optimization:\n  lr: 0.003\n  update_freq: 2\n")
    cfg = compose_config(["task.data=x"], config_name="mine", user_config_dir=str(tmp_path), check=True)
    assert list(cfg.optimization.lr) == [0.003] and list(cfg.optimization.update_freq) == [2]


@pytest.mark.slow
def test_bare_run_trains_with_the_default_batch_and_writes_the_documented_layout(data_bin, tmp_path):
    """`fairseq-hydra-train task.data=DIR` with no batch size trains (dataset.max_tokens=1024), and
    writes outputs/DATE/TIME/{.hydra/*.yaml,train_hydra.log} and checkpoints/ in the launch dir."""
    tiny = [a for a in TINY_HYDRA if not a.startswith("dataset.max_tokens")]
    result = run_module("fairseq_cli.train_hydra", [f"task.data={data_bin}", *tiny, "optimization.max_update=1",
                                             "common.log_format=none"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = list(tmp_path.glob("outputs/*/*"))
    assert len(runs) == 1 and re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d",
                                           runs[0].relative_to(tmp_path).as_posix())
    assert sorted(p.name for p in (runs[0] / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert "dataset.max_tokens=1024" in (runs[0] / ".hydra" / "overrides.yaml").read_text()
    assert "done training" in (runs[0] / "train_hydra.log").read_text()
    state = torch.load(tmp_path / "checkpoints" / "checkpoint_last.pt", weights_only=True)
    assert state["cfg"]["dataset"]["max_tokens"] == 1024 and state["num_updates"] == 1
    assert state["cfg"]["checkpoint"]["save_dir"] == str(tmp_path / "checkpoints")


def test_default_batch_only_when_none_is_given(tmp_path):
    """A batch size given on the command line or in YAML is left alone (the bare case is checked
    by the run above and by tests/test_docs_commands.py's table test)."""
    assert check_overrides(["task.data=x", "dataset.batch_size=4"], default_max_tokens=1024) == [
        "task.data=x", "dataset.batch_size=4"]
    (tmp_path / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\ndataset:\n  batch_size: 3\n")
    out = check_overrides(["task.data=x", "optimization.lr=0.1,0.2"], multirun=True, config_name="mine",
                          user_config_dir=str(tmp_path), default_max_tokens=1024)
    assert not any(o.startswith("dataset.max_tokens") for o in out)
