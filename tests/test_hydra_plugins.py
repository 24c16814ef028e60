"""The optional Hydra plugins (fairseq[sweep]) driving real, tiny training jobs: an Optuna sweep
minimising the validation loss the task function returns, the joblib launcher running two jobs
in parallel, and the submitit launcher (local executor) whose job's checkpoint loads back."""
import os
import re

import pytest
import yaml

from conftest import run_module
from test_bad_input import TINY_HYDRA

FAST = TINY_HYDRA + ["optimization.max_update=3", "common.cpu=true", "lr_scheduler=fixed",
                     "checkpoint.save_dir=ck/${hydra:job.num}", "hydra.sweep.dir=ms"]


def need(module):
    pytest.importorskip(f"hydra_plugins.{module}", reason="pip install 'fairseq[sweep]'")


def valid_loss(log):
    return float(re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", log.read_text())[-1])


@pytest.mark.slow
def test_optuna_sweep_minimises_the_returned_valid_loss(data_bin, tmp_path):
    """4 Optuna trials over `interval(...)` on the list field optimization.lr: Optuna hands each
    trial a number, which becomes a one-element list (as `optimization.lr=0.001` does); the best
    trial is the one with the lowest validation loss the task function returned. (The `choice`
    + grid form of docs/training.md runs in tests/test_docs_commands.py.)"""
    need("hydra_optuna_sweeper")
    import torch

    result = run_module("fairseq_cli.train_hydra", ["--multirun", f"task.data={data_bin}", *FAST,
                 "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=1",
                 "hydra.sweeper.direction=minimize", "optimization.lr=interval(0.0001,0.1)"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "ms").glob("[0-9]*"))
    assert len(jobs) == 4
    lrs, losses = [], []
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        lr = float([o for o in overrides if o.startswith("optimization.lr=")][0].split("=", 1)[1])
        state = torch.load(tmp_path / "ck" / job.name / "checkpoint_best.pt", weights_only=True)
        assert state["cfg"]["optimization"]["lr"] == [lr] and 0.0001 <= lr <= 0.1
        lrs.append(lr)
        losses.append(valid_loss(job / "train_hydra.log"))
    assert len(set(lrs)) == 4
    assert len(set(losses)) > 1  # the lr matters, so the sweep has something to choose
    results = yaml.safe_load((tmp_path / "ms" / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(min(losses), abs=1e-3)
    assert results["best_params"]["optimization.lr"] == pytest.approx(lrs[losses.index(min(losses))])


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_in_parallel(data_bin, tmp_path):
    need("hydra_joblib_launcher")
    result = run_module("fairseq_cli.train_hydra", ["--multirun", f"task.data={data_bin}", *FAST,
                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimization.lr=0.001,0.01"],
                 tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    for num in ("0", "1"):
        assert (tmp_path / "ck" / num / "checkpoint_last.pt").is_file()
    assert valid_loss(tmp_path / "ms" / "0" / "train_hydra.log") != valid_loss(
        tmp_path / "ms" / "1" / "train_hydra.log")


@pytest.mark.slow
def test_submitit_local_job_checkpoint_loads_back(data_bin, tmp_path):
    need("hydra_submitit_launcher")
    from fairseq.checkpoint_utils import load_model_ensemble_and_task

    result = run_module("fairseq_cli.train_hydra", ["--multirun", f"task.data={data_bin}", *FAST,
                 "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "ms" / ".submitit").glob("*/*_result.pkl"))
    models, cfg, task = load_model_ensemble_and_task([str(tmp_path / "ck" / "0" / "checkpoint_last.pt")])
    assert cfg.model.decoder_embed_dim == 16 and len(models) == 1


def test_missing_plugin_is_one_line(monkeypatch, tmp_path, capsys):
    from fairseq.dataclass import sweep_plugins
    from fairseq_cli import train_hydra

    monkeypatch.setattr(sweep_plugins, "installed", lambda module: False)
    monkeypatch.chdir(tmp_path)
    for choice, package in [("hydra/sweeper=optuna", "hydra-optuna-sweeper"),
                            ("hydra/launcher=submitit_slurm", "hydra-submitit-launcher")]:
        with pytest.raises(SystemExit) as e:
            train_hydra.cli_main(["--multirun", "task.data=x", choice])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1
        assert package in err and "pip install 'fairseq[sweep]'" in err and "Traceback" not in err
    assert not (tmp_path / "multirun").exists()


def test_slurm_tasks_are_ranks_without_torchrun(monkeypatch):
    """srun / submitit_slurm with tasks_per_node = GPUs: each task finds its rank in SLURM's env."""
    pytest.importorskip("submitit", reason="pip install 'fairseq[sweep]'")
    from omegaconf import OmegaConf

    from fairseq.dataclass.configs import DistributedTrainingConfig
    from fairseq.distributed import utils as dist_utils

    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(key, "x")  # recorded, so the export below is undone after the test
        monkeypatch.delenv(key)
    slurm = {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
             "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1",
             "SUBMITIT_EXECUTOR": "slurm"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    dt = OmegaConf.structured(DistributedTrainingConfig())
    dist_utils.infer_init_method(dt)
    assert dt.distributed_init_method == "env://" and dt.distributed_no_spawn
    assert (dt.distributed_world_size, dt.distributed_rank, dt.device_id) == (4, 3, 1)
    assert os.environ["MASTER_ADDR"] == "gpu07" and int(os.environ["MASTER_PORT"]) > 0
    # one task: nothing changes (the task spawns distributed_world_size processes itself)
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        os.environ.pop(key, None)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    single = OmegaConf.structured(DistributedTrainingConfig())
    dist_utils.infer_init_method(single)
    assert single.get("distributed_init_method") is None
