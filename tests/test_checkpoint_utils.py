"""Checkpoints: safe loading, atomic writes, retention options, resets, fine-tuning, upgrades."""
import logging
import os
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL, read_json_log

TINY = [*TINY_MODEL, "--optimizer", "adam", "--lr", "0.003", "--warmup-updates", "3", "--tokens-per-sample", "32",
        "--max-tokens", "256", "--log-format", "json", "--log-interval", "1", "--num-workers", "0"]


def train(data_bin, save_dir, *extra):
    from fairseq_cli.train import cli_main

    cli_main([data_bin, *TINY, "--save-dir", str(save_dir), *map(str, extra)])


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fairseq_pwned_by_checkpoint",))


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu

    marker = "/tmp/fairseq_pwned_by_checkpoint"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "cfg": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint_to_cpu(str(path))
    assert not os.path.exists(marker)


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    path = tmp_path / "checkpoint_last.pt"
    checkpoint_utils.atomic_save({"model": {"w": torch.ones(2)}}, str(path))

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_utils.torch, "save", failing_save)
    with pytest.raises(OSError):
        checkpoint_utils.atomic_save({"model": {"w": torch.zeros(2)}}, str(path))
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["checkpoint_last.pt"]


def test_config_with_a_field_added_and_one_removed_loads_with_a_warning(data_bin, tmp_path, caplog):
    from fairseq.checkpoint_utils import load_model_for_inference, torch_persistent_save

    train(data_bin, tmp_path / "ck", "--max-update", "2", "--dropout", "0.3")
    path = tmp_path / "ck" / "checkpoint_last.pt"
    state = torch.load(path, weights_only=True)
    state["cfg"]["model"]["a_field_this_version_lacks"] = 7  # removed from the code since
    del state["cfg"]["model"]["activation_dropout"]  # added to the code since
    torch_persistent_save(state, str(path))  # an edit saved with plain torch.save fails the digest
    with caplog.at_level(logging.WARNING):
        model, task, cfg = load_model_for_inference(str(path))
    assert "model.a_field_this_version_lacks" in caplog.text
    assert cfg.model.activation_dropout == 0.0  # the current default
    assert cfg.model.dropout == 0.3  # kept from the checkpoint


def test_a_checkpoint_from_another_vocabulary_is_explained(data_bin, tmp_path):

    train(data_bin, tmp_path / "ck", "--max-update", "1")
    # the same text binarized with a smaller vocabulary: consistent data, another dictionary
    from fairseq_cli import preprocess

    text = Path(data_bin).parent / "text"
    other = tmp_path / "other"
    preprocess.cli_main(["--only-source", "--trainpref", str(text / "train.txt"),
                         "--validpref", str(text / "valid.txt"), "--destdir", str(other),
                         "--nwordssrc", "50", "--workers", "1"])
    with pytest.raises(SystemExit) as exit_info:
        train(str(other), tmp_path / "ck", "--max-update", "2")
    assert exit_info.value.code == 1


def test_retention_options(data_bin, tmp_path):
    train(data_bin, tmp_path / "a", "--max-epoch", "3", "--save-interval-updates", "5",
          "--keep-interval-updates", "2", "--keep-last-epochs", "1", "--keep-best-checkpoints", "2")
    names = sorted(os.listdir(tmp_path / "a"))
    interval = [n for n in names if n.startswith("checkpoint_") and n[11:12].isdigit()]
    epochs = [n for n in names if n[10:11].isdigit()]
    best = [n for n in names if n.startswith("checkpoint.best_loss_")]
    assert len(interval) == 2 and epochs == ["checkpoint3.pt"] and len(best) == 2
    assert "checkpoint_last.pt" in names and "checkpoint_best.pt" in names
    train(data_bin, tmp_path / "b", "--max-update", "3", "--no-epoch-checkpoints", "--no-last-checkpoints")
    assert sorted(os.listdir(tmp_path / "b")) == ["checkpoint_best.pt", "config.json"]
    train(data_bin, tmp_path / "c", "--max-update", "3", "--no-save")
    assert os.listdir(tmp_path / "c") == []


def test_interval_checkpoint_is_kept_when_it_falls_on_an_epoch_end(data_bin, tmp_path):
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config
    from fairseq.training import get_train_iterator

    cfg = compose_config([f"task.data={data_bin}", "task.tokens_per_sample=32", "dataset.max_tokens=256",
                          "dataset.num_workers=0"])
    per_epoch = len(get_train_iterator(cfg, tasks.setup_task(cfg.task), 1))
    train(data_bin, tmp_path / "ck", "--max-epoch", "1", "--save-interval-updates", per_epoch)
    names = os.listdir(tmp_path / "ck")
    assert f"checkpoint_1_{per_epoch}.pt" in names and "checkpoint1.pt" in names


def test_patience_stops_after_n_validations_without_improvement(data_bin, tmp_path):
    log = tmp_path / "log"
    # a maximized loss almost never improves: patience 2 stops after the 3rd validation
    train(data_bin, tmp_path / "ck", "--max-update", "50", "--validate-interval-updates", "2",
          "--maximize-best-checkpoint-metric", "--patience", "2", "--log-file", log)
    valid = [r for r in read_json_log(log) if "valid_loss" in r]
    updates = [r["valid_num_updates"] for r in valid]
    assert updates[-1] < 50 and len(updates) <= 4


def test_resets_and_finetune(data_bin, tmp_path):
    train(data_bin, tmp_path / "base", "--max-update", "4")
    base = torch.load(tmp_path / "base" / "checkpoint_last.pt", weights_only=True)
    # fine-tune: weights only, fresh update count and data position
    log = tmp_path / "ft.log"
    train(data_bin, tmp_path / "ft", "--max-update", "2", "--log-file", log,
          "--finetune-from-model", tmp_path / "base" / "checkpoint_last.pt")
    records = [r for r in read_json_log(log) if "update" in r]
    assert [r["num_updates"] for r in records] == [1, 2]
    # restore + reset_optimizer/lr_scheduler/dataloader: same weights, optimizer state rebuilt
    log = tmp_path / "reset.log"
    train(data_bin, tmp_path / "reset", "--max-update", "6", "--log-file", log,
          "--restore-file", tmp_path / "base" / "checkpoint_last.pt", "--reset-optimizer",
          "--reset-lr-scheduler", "--reset-dataloader")
    records = [r for r in read_json_log(log) if "update" in r]
    assert [r["num_updates"] for r in records] == [5, 6]
    state = torch.load(tmp_path / "reset" / "checkpoint_last.pt", weights_only=True)
    assert state["extra_state"]["train_iterator"]["iterations_in_epoch"] == 2
    assert base["extra_state"]["train_iterator"]["iterations_in_epoch"] == 4


def test_load_ema_from_checkpoint_puts_the_average_weights_in_model(tmp_path):
    from fairseq.checkpoint_utils import CheckpointError, load_ema_from_checkpoint

    path = tmp_path / "ema.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "extra_state": {"ema": {"w": torch.ones(2)}}}, path)
    state = load_ema_from_checkpoint(str(path))
    assert torch.equal(state["model"]["w"], torch.ones(2))
    torch.save({"model": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="holds no EMA weights"):
        load_ema_from_checkpoint(str(path))
