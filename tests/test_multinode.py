"""Many nodes on one machine: two torchrun agents as two "nodes" (c10d rendezvous on 127.0.0.1),
and two SLURM tasks without torchrun (a simulated ``srun`` environment), each match one process
with ``--update-freq 2`` update by update.

The reference run, the arguments and the log reading are those of test_distributed.py (which
explains the equal words per batch and the barrier at the end of a multi-process run).
"""
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, read_json_log, scaled_timeout
from test_distributed import ARGS as _ARGS, _records

# every test here trains or starts several processes
pytestmark = pytest.mark.slow

ARGS = [*_ARGS, "--max-update", "4"]  # the later flag wins: 4 updates, a checkpoint at 4

_GROUP_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
               "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def _clear_group_env(monkeypatch, *more):
    """Remove the process-group and SLURM variables for one test and restore them after it.

    ``export_slurm_env`` writes RANK, WORLD_SIZE, MASTER_ADDR, ... into ``os.environ``; only a
    variable monkeypatch has recorded is removed again at teardown, and ``delenv`` of an absent
    variable records nothing, hence the set-then-delete. A leak would make every later
    subprocess of the suite wait for a process group that never forms.
    """
    for key in _GROUP_VARS + ("SUBMITIT_EXECUTOR",) + more:
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in _GROUP_VARS and not k.startswith("SLURM_")}
    env.pop("SUBMITIT_EXECUTOR", None)
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    return env


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(data_bin, tmp_path, name):
    return [data_bin, *ARGS, "--distributed-backend", "gloo", "--save-dir", str(tmp_path / name),
            "--log-file", str(tmp_path / f"{name}.log")]


def _start(cmd, cwd, env):
    """Start ``cmd``; its output goes to a file (a pipe nobody reads yet could fill and block it)."""
    out = open(cwd / f"out-{len(list(cwd.glob('out-*')))}.txt", "w+")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    proc.output_file = out
    return proc


@pytest.fixture(scope="module")
def runs(data_bin, tmp_path_factory):
    """Three jobs of 8 updates, started together (the suite runs tests one after another, and
    most of each job is starting Python and torch): ``one``, the reference (one process,
    ``--update-freq 2``); ``two``, two torchrun agents with one process each, meeting at a c10d
    rendezvous on 127.0.0.1; ``slurm``, what ``srun --ntasks 2 python -m fairseq_cli.train ...``
    gives each task (SLURM's variables only: rank, world size and rendezvous, the first node
    of the step's node list and a port from the job id, are derived from them)."""
    from fairseq.distributed.utils import slurm_master_port

    tmp_path = tmp_path_factory.mktemp("multinode")
    procs = {"one": [_start([sys.executable, "-m", "fairseq_cli.train", data_bin, *ARGS, "--update-freq", "2",
                             "--save-dir", str(tmp_path / "one"), "--log-file", str(tmp_path / "one.log")],
                            tmp_path, _env())]}
    endpoint = f"127.0.0.1:{_free_port()}"
    procs["two"] = [_start([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                            "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "multinode-test",
                            "--node-rank", str(node), "-m", "fairseq_cli.train",
                            *_train_args(data_bin, tmp_path, "two")], tmp_path, _env())
                    for node in (0, 1)]
    job_id = next(j for j in range(4242, 4342) if _port_is_free(slurm_master_port(str(j), "0")))
    procs["slurm"] = []
    for task in (0, 1):
        slurm = dict(SLURM_JOB_ID=str(job_id), SLURM_STEP_ID="0", SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2",
                     SLURM_PROCID=str(task), SLURM_LOCALID=str(task), SLURM_NODEID="0",
                     SLURM_STEP_NODELIST="localhost", SLURM_JOB_NODELIST="localhost",
                     SLURM_STEP_NUM_NODES="1", SLURM_JOB_NUM_NODES="1")
        procs["slurm"].append(_start([sys.executable, "-m", "fairseq_cli.train",
                                      *_train_args(data_bin, tmp_path, "slurm")], tmp_path, _env(**slurm)))
    results = {}
    try:
        for name, group in procs.items():
            errors = []
            for proc in group:
                proc.wait(timeout=scaled_timeout(300))
                proc.output_file.seek(0)
                errors.append((proc.returncode, proc.output_file.read()[-3000:]))
                proc.output_file.close()
            results[name] = errors
    finally:
        for proc in (p for group in procs.values() for p in group):
            if proc.poll() is None:
                proc.kill()
    for code, err in results["one"]:
        assert code == 0, err
    return tmp_path, results


def _check_same_updates(runs, name):
    tmp_path, results = runs
    for code, err in results[name]:
        assert code == 0, err
    expected, got = _records(tmp_path / "one.log"), _records(tmp_path / f"{name}.log")
    assert sorted(got) == sorted(expected) == list(range(1, 5))
    for update in expected:
        assert abs(expected[update]["loss"] - got[update]["loss"]) < 1e-4, update
        assert expected[update]["wpb"] == got[update]["wpb"]  # the same effective batch
        assert expected[update]["bsz"] == got[update]["bsz"]
    # rank 0 alone wrote the log (one record per update) and the same checkpoints
    assert len([r for r in read_json_log(tmp_path / f"{name}.log") if "update" in r]) == 4
    assert sorted(os.listdir(tmp_path / name)) == sorted(os.listdir(tmp_path / "one"))


def test_two_torchrun_nodes_match_one_process_with_update_freq_2(runs):
    _check_same_updates(runs, "two")


def test_two_slurm_tasks_without_torchrun_match_one_process(runs):
    _check_same_updates(runs, "slurm")


def test_a_batch_script_shell_is_one_process(monkeypatch):
    """The batch script itself (SLURM_PROCID=0 and the job's SLURM_NTASKS, no job step) does not
    wait for tasks that only ``srun`` would start."""
    from fairseq.distributed import utils as dist_utils

    _clear_group_env(monkeypatch, "SLURM_STEP_NUM_TASKS", "SLURM_JOB_ID", "SLURM_LOCALID")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    dist_utils.export_slurm_env()
    assert "WORLD_SIZE" not in os.environ and "MASTER_ADDR" not in os.environ
    assert dist_utils.slurm_first_host("gpu[07-08,11],cpu3") == "gpu07"
    assert dist_utils.slurm_first_host("a[1-2]b[003-004]") == "a1b003"


def test_srun_tasks_that_do_not_match_distributed_world_size_stop_with_the_fix(monkeypatch):
    from omegaconf import OmegaConf

    from fairseq.distributed import utils as dist_utils

    _clear_group_env(monkeypatch)
    for key, value in dict(SLURM_JOB_ID="7", SLURM_PROCID="1", SLURM_LOCALID="0", SLURM_STEP_NUM_TASKS="2",
                           SLURM_STEP_NODELIST="gpu[07-08]", SLURM_STEP_NUM_NODES="2").items():
        monkeypatch.setenv(key, value)
    cfg = OmegaConf.create({"distributed_training": {"distributed_world_size": 16, "distributed_backend": None},
                            "common": {"cpu": True}})
    with pytest.raises(ValueError, match=r"distributed_world_size=16 but srun started 2 tasks.*torchrun"):
        dist_utils.init_from_env(cfg)
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"]) == ("1", "2", "gpu07")
