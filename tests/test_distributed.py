"""Data-parallel training with torchrun: 2 gloo processes match 1 process with update_freq=2."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, read_json_log, scaled_timeout

# every test here trains or starts several processes
pytestmark = pytest.mark.slow

ARGS = ["--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "32",
        "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-attention-heads", "2", "--dropout", "0", "--optimizer", "adam", "--lr", "0.003",
        "--warmup-updates", "5", "--tokens-per-sample", "32", "--max-tokens", "128",
        "--max-update", "8", "--log-format", "json", "--log-interval", "1", "--num-workers", "0",
        "--save-interval-updates", "4", "--cpu"]


def _records(log):
    return {r["num_updates"]: r for r in read_json_log(log) if "update" in r}


@pytest.mark.parametrize("ddp_backend", ["pytorch_ddp", "no_c10d"])
def test_two_gloo_processes_match_one_process_with_update_freq_2(data_bin, tmp_path, ddp_backend):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "fairseq_cli.train", data_bin, *ARGS, "--update-freq", "2",
                          "--save-dir", str(tmp_path / "one"), "--log-file", str(tmp_path / "one.log")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=scaled_timeout(300))
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--standalone", "-m", "fairseq_cli.train", data_bin, *ARGS,
                          "--distributed-backend", "gloo", "--ddp-backend", ddp_backend,
                          "--save-dir", str(tmp_path / "two"), "--log-file", str(tmp_path / "two.log")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=scaled_timeout(300))
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _records(tmp_path / "one.log"), _records(tmp_path / "two.log")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for update in a:
        assert abs(a[update]["loss"] - b[update]["loss"]) < 1e-4, update
        assert a[update]["wpb"] == b[update]["wpb"]  # the same effective batch
    # only the first process writes checkpoints and logs: one line per update in the log
    records = [r for r in read_json_log(tmp_path / "two.log") if "update" in r]
    assert len(records) == 8
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))
