"""Killed runs, a NaN loss and fp16 overflows: no corrupt file, exact resume, clear stops."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT, read_json_log, scaled_timeout, write_plugin

TINY = ["--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "32",
        "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-attention-heads", "2", "--optimizer", "adam", "--lr", "0.003",
        "--warmup-updates", "5", "--tokens-per-sample", "32", "--max-tokens", "128",
        "--log-format", "json", "--log-interval", "1", "--num-workers", "0", "--seed", "3"]


def losses_by_update(log_file):
    """Update -> loss; a resumed run's records replace the killed run's for the same update."""
    out = {}
    for record in read_json_log(log_file):
        if "update" in record and "loss" in record:
            out[record["num_updates"]] = record["loss"]
    return out


def run_script(code, cwd, timeout=180):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=scaled_timeout(timeout))


def train_code(argv, prelude=""):
    return textwrap.dedent(prelude) + f"\nfrom fairseq_cli.train import cli_main\ncli_main({argv!r})\n"


@pytest.mark.slow
def test_sigkill_during_training_and_during_a_checkpoint_write(data_bin, tmp_path):
    full_log = str(tmp_path / "full.log")
    args = [data_bin] + TINY + ["--max-update", "12", "--save-interval-updates", "4"]
    assert run_script(train_code(args + ["--save-dir", str(tmp_path / "full"), "--log-file", full_log]),
                      tmp_path).returncode == 0
    save_dir, log = str(tmp_path / "ck"), str(tmp_path / "ck.log")
    command = args + ["--save-dir", save_dir, "--log-file", log]

    # 1. killed (SIGKILL) halfway through writing its second checkpoint, at update 8
    kill_in_save = """
        import os, signal, torch
        import fairseq.checkpoint_utils as cu
        real_save, calls = torch.save, []
        def dying_save(obj, f, *a, **k):
            calls.append(1)
            if len(calls) == 2:
                f.write(b"partial checkpoint bytes")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *a, **k)
        cu.torch.save = dying_save
    """
    result = run_script(train_code(command, kill_in_save), tmp_path)
    assert result.returncode == -signal.SIGKILL
    files = sorted(os.listdir(save_dir))
    assert "checkpoint_1_4.pt" in files and "checkpoint_1_8.pt" not in files
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=True)
    assert state["num_updates"] == 4  # the previous checkpoint is intact

    # 2. restarted, then killed from outside after update 10 (between checkpoints)
    kill_after = """
        import os, signal
        import fairseq.trainer as t
        real_step = t.Trainer.train_step
        def step(self, samples):
            out = real_step(self, samples)
            if self.get_num_updates() == 10:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        t.Trainer.train_step = step
    """
    result = run_script(train_code(command, kill_after), tmp_path)
    assert result.returncode == -signal.SIGKILL
    assert torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=True)["num_updates"] == 8

    # 3. the same command again finishes; every checkpoint loads; losses equal the clean run's
    assert run_script(train_code(command), tmp_path).returncode == 0
    for name in os.listdir(save_dir):
        assert not name.startswith(".tmp"), name
        if name.endswith(".pt"):  # config.json is written beside the checkpoints
            torch.load(os.path.join(save_dir, name), weights_only=True)
    expected = losses_by_update(full_log)
    assert sorted(expected) == list(range(1, 13))
    assert losses_by_update(log) == expected


PLUGIN = '''
import math
import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig
from dataclasses import dataclass, field

@dataclass
class FaultyConfig(CrossEntropyCriterionConfig):
    fault_at: int = field(default=3, metadata={"help": "update at which the fault appears"})
    fault: str = field(default="nan_loss", metadata={"help": "nan_loss or inf_grad"})

@register_criterion("faulty_cross_entropy", dataclass=FaultyConfig)
class Faulty(CrossEntropyCriterion):
    def __init__(self, cfg, task):
        super().__init__(cfg, task)
        self.fault_at, self.fault, self.calls = cfg.fault_at, cfg.fault, 0

    def forward(self, model, sample, reduce=True):
        loss, size, log = super().forward(model, sample, reduce)
        if model.training:
            self.calls += 1
            if self.calls == self.fault_at:
                if self.fault == "nan_loss":
                    loss = loss * float("nan")
                    log["loss"] = loss.detach()
                else:  # a finite loss whose gradient overflows
                    w = next(model.parameters())
                    loss = loss + (w * float("inf")).sum() * 0.0
        return loss, size, log
'''


@pytest.fixture
def plugin_dir(tmp_path):
    return write_plugin(tmp_path, "my_plugins", PLUGIN)


@pytest.mark.slow
def test_nan_loss_stops_clearly_and_keeps_the_last_good_checkpoint(data_bin, tmp_path, plugin_dir):
    save_dir = str(tmp_path / "ck")
    args = [data_bin] + TINY + ["--user-dir", plugin_dir, "--criterion", "faulty_cross_entropy",
                                "--fault-at", "6", "--max-update", "10", "--save-interval-updates", "4",
                                "--save-dir", save_dir]
    result = run_script(train_code(args), tmp_path)
    assert result.returncode == 1
    assert "the training loss became nan by update 6" in result.stderr
    assert "Traceback" not in result.stderr
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=True)
    assert state["num_updates"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.slow
def test_fp16_overflow_is_skipped_and_the_scale_lowered(data_bin, tmp_path, plugin_dir):
    log = str(tmp_path / "log")
    args = [data_bin] + TINY + ["--user-dir", plugin_dir, "--criterion", "faulty_cross_entropy",
                                "--fault", "inf_grad", "--fault-at", "3", "--max-update", "5", "--fp16",
                                "--fp16-init-scale", "64", "--save-dir", str(tmp_path / "ck"),
                                "--log-file", log]
    result = run_script(train_code(args), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gradient overflow at update 3: update skipped, loss scale lowered to 32" in result.stdout
    records = [r for r in read_json_log(log) if "update" in r]
    assert [r["num_updates"] for r in records] == [1, 2, 3, 4, 5]  # 6 steps, one skipped
    assert [r["loss_scale"] for r in records] == [64, 64, 32, 32, 32]
    assert all(r["loss"] == r["loss"] for r in records)  # finite throughout
