"""A stop signal takes effect at the next safe point wherever the run is: between two
validation batches (the partial pass is not used or saved as a validation), between epochs and
during the setup; the log then shows only what happened, and a saved checkpoint resumes exactly.
Validation's progress counts the steps it will take (``--max-valid-steps``)."""
import os
import re
import signal
from pathlib import Path
from typing import List

import pytest
import torch

from tests.conftest import TINY_MODEL, run_in

# 6 updates, a validation (and a scheduled save) every 3 of 4 batches of one sample
ARGS: List[str] = [*TINY_MODEL, "--optimizer", "adam", "--lr", "0.001", "--tokens-per-sample", "32",
                   "--max-tokens", "256", "--num-workers", "0", "--max-update", "6", "--no-epoch-checkpoints",
                   "--validate-interval-updates", "3", "--save-interval-updates", "3", "--batch-size-valid", "1",
                   "--max-valid-steps", "4",
                   "--log-format", "json", "--log-interval", "1", "--seed", "3"]


def train(argv: List[str], capsys):
    """``fairseq-train ARGV`` in this process: (exit code, stderr)."""
    from fairseq_cli.train import cli_main

    result = run_in(Path.cwd(), cli_main, argv, capsys)
    return result.returncode, result.stderr


def command(data_bin: str, tmp_path: Path, *extra: str) -> List[str]:
    return [data_bin, *ARGS, "--save-dir", str(tmp_path / "ck"), "--log-file", str(tmp_path / "log"), *extra]


def losses(log: Path) -> dict:
    """The training loss at each update, from the json records of a log file."""
    import json

    out = {}
    for line in log.read_text().splitlines():
        if "| train_inner |" in line:
            record = json.loads(line.split("| train_inner |", 1)[1])
            out[int(record["num_updates"])] = record["loss"]
    return out


@pytest.fixture
def valid_steps_sending(monkeypatch):
    """Makes ``Trainer.valid_step`` send ``signum`` to this process during its ``at``-th call;
    returns the list of calls (1-based) made so far."""
    from fairseq.trainer import Trainer

    calls: List[int] = []
    plan = {}
    original = Trainer.valid_step

    def valid_step(self, sample, *args, **kwargs):
        calls.append(len(calls) + 1)
        if plan and len(calls) == plan["at"]:
            os.kill(os.getpid(), plan["signum"])
        return original(self, sample, *args, **kwargs)

    def arm(at: int, signum: int = signal.SIGINT) -> List[int]:
        calls.clear()
        plan.update(at=at, signum=signum)
        return calls

    monkeypatch.setattr(Trainer, "valid_step", valid_step)
    return arm


@pytest.mark.parametrize("save", [True, False])
def test_a_stop_signal_during_validation_stops_between_batches(data_bin, tmp_path, capsys,
                                                               valid_steps_sending, save):
    calls = valid_steps_sending(at=2)
    argv = command(data_bin, tmp_path, *(["--save-on-interrupt"] if save else []))
    code, err = train(argv, capsys)
    assert code == 130
    assert len(calls) == 2  # the batch the signal came in finished; no other one ran
    save_dir = tmp_path / "ck"
    if save:
        assert err.strip() == (f"interrupted (Ctrl-C) at update 3: saved {save_dir / 'checkpoint_last.pt'} "
                               "first; rerun the same command to resume from it")
    else:
        assert err.strip().startswith("interrupted (Ctrl-C) at update 3; no checkpoint was written"), err
        assert not list(save_dir.glob("*.pt"))
    log = (tmp_path / "log").read_text()
    assert re.search(r'validation on "valid" stopped after 2 of 4 batches: its loss is not used', log)
    # only what happened: no validation record, no end of the epoch, no end of training
    for unwanted in ("| valid |", "end of epoch", "done training", "stopping:"):
        assert unwanted not in log, unwanted
    assert max(losses(tmp_path / "log")) == 3
    if save:
        # the partial pass recorded nowhere: no best checkpoint, no val_loss or best in the state
        assert not (save_dir / "checkpoint_best.pt").exists()
        state = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=True)
        assert state["extra_state"]["val_loss"] is None and state["extra_state"]["best"] is None
        assert state["num_updates"] == 3


def test_the_checkpoint_saved_during_validation_resumes_exactly(data_bin, tmp_path, capsys, valid_steps_sending):
    reference = tmp_path / "reference"
    reference.mkdir()
    # validation changes nothing in training: the reference skips it
    code, err = train(command(data_bin, reference, "--disable-validation"), capsys)
    assert code == 0, err

    calls = valid_steps_sending(at=2)
    code, _ = train(command(data_bin, tmp_path, "--save-on-interrupt"), capsys)
    assert code == 130 and len(calls) == 2
    valid_steps_sending(at=0)
    code, err = train(command(data_bin, tmp_path, "--save-on-interrupt"), capsys)  # the same command again
    assert code == 0, err
    log = (tmp_path / "log").read_text()
    assert "@ 3 updates" in log and "done training: 6 updates" in log
    # updates 4-6 of the rerun are those of the uninterrupted run (and the first 3 were too)
    assert losses(tmp_path / "log") == losses(reference / "log")


def test_a_stop_signal_between_epochs_stops_before_the_next_one(data_bin, tmp_path, capsys, monkeypatch):
    import fairseq.training as training

    original = training.get_train_iterator
    epochs = []

    def next_epoch(cfg, task, epoch, *args, **kwargs):
        epochs.append(epoch)
        os.kill(os.getpid(), signal.SIGINT)  # during the work between epoch 1 and epoch 2
        return original(cfg, task, epoch, *args, **kwargs)

    monkeypatch.setattr(training, "get_train_iterator", next_epoch)
    # big batches: epoch 1 is a few updates, saved at its end (save_interval 1)
    argv = command(data_bin, tmp_path, "--save-on-interrupt", "--max-tokens", "2048", "--max-update", "100",
                   "--validate-interval-updates", "0", "--save-interval-updates", "0")
    code, err = train(argv, capsys)
    assert code == 130 and epochs == [2]
    at = max(losses(tmp_path / "log"))
    last = tmp_path / "ck" / "checkpoint_last.pt"
    assert err.strip() == (f"interrupted (Ctrl-C) at update {at}: the last checkpoint {last} is at this update; "
                           "rerun the same command to resume from it")
    log = (tmp_path / "log").read_text()
    assert "end of epoch 1" in log and "epoch 002" not in log and "done training" not in log


def test_a_stop_signal_during_the_setup_stops_before_the_first_update(data_bin, tmp_path, capsys, monkeypatch):
    import fairseq.training as training
    from fairseq.trainer import Trainer

    original = training.valid_iterator
    monkeypatch.setattr(training, "valid_iterator",
                        lambda *a, **k: (os.kill(os.getpid(), signal.SIGINT), original(*a, **k))[1])
    steps = []
    monkeypatch.setattr(Trainer, "train_step", lambda self, samples: steps.append(1))
    code, err = train(command(data_bin, tmp_path, "--save-on-interrupt"), capsys)
    assert code == 130 and not steps
    assert err.strip() == ("interrupted (Ctrl-C) at update 0; no checkpoint was written "
                           "(no update was trained yet)")


def test_validation_progress_counts_the_steps_it_takes(data_bin, tmp_path, capsys, monkeypatch):
    import fairseq.training as training

    totals = []
    original = training.pb.progress_bar

    def progress_bar(iterable, *args, **kwargs):
        bar = original(iterable, *args, **kwargs)
        if "valid on" in str(kwargs.get("prefix")):
            totals.append((bar.total, len(iterable)))
        return bar

    monkeypatch.setattr(training.pb, "progress_bar", progress_bar)
    code, err = train(command(data_bin, tmp_path, "--max-valid-steps", "2", "--max-update", "3", "--no-save",
                              "--validate-interval-updates", "0"), capsys)
    assert code == 0, err
    assert totals and all(total == 2 < length for total, length in totals), totals
