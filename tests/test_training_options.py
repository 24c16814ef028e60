"""Validation, stop conditions, per-epoch update_freq, precision and determinism on CPU."""
import math

import pytest

from conftest import TINY_MODEL, read_json_log

TINY = [*TINY_MODEL, "--optimizer", "adam", "--lr", "0.003", "--warmup-updates", "3", "--tokens-per-sample", "32",
        "--max-tokens", "256", "--num-workers", "0", "--log-format", "json", "--log-interval", "1"]


def train(data_bin, tmp_path, name, *extra):
    from fairseq_cli.train import cli_main

    log = tmp_path / f"{name}.log"
    cli_main([data_bin, *TINY, "--save-dir", str(tmp_path / name), "--log-file", str(log), *map(str, extra)])
    return read_json_log(log)


def test_validation_intervals_and_several_subsets(data_bin, tmp_path):
    records = train(data_bin, tmp_path, "v", "--max-update", "6", "--validate-interval-updates", "2",
                    "--valid-subset", "valid,test", "--no-save")
    assert [r["valid_num_updates"] for r in records if "valid_loss" in r] == [2, 4, 6]
    assert [r["test_num_updates"] for r in records if "test_loss" in r] == [2, 4, 6]
    records = train(data_bin, tmp_path, "d", "--max-update", "3", "--disable-validation")
    assert not [r for r in records if "valid_loss" in r]


def test_stop_conditions(data_bin, tmp_path):
    records = train(data_bin, tmp_path, "t", "--stop-time-hours", "1e-9")
    assert [r["num_updates"] for r in records if "update" in r] == [1]
    records = train(data_bin, tmp_path, "e", "--max-epoch", "1")
    assert {r["epoch"] for r in records} == {1}


def test_stop_min_lr_is_checked_between_epochs_as_in_fairseq(data_bin, tmp_path):
    # fixed schedule: epoch 1 at 0.003, epoch 2 annealed to 0.0003 <= stop_min_lr, so the run
    # stops after epoch 2 (the lr check reads the lr of the epoch just finished)
    records = train(data_bin, tmp_path, "m", "--lr-scheduler", "fixed", "--force-anneal", "2",
                    "--stop-min-lr", "0.0005", "--max-epoch", "4", "--max-tokens", "1024", "--no-save")
    inner = [r for r in records if "update" in r]
    assert {r["epoch"] for r in records} == {1, 2}
    assert {r["lr"] for r in inner if r["epoch"] == 2} == {0.0003}
    assert [r["lr"] for r in inner if r["epoch"] == 1][-1] == 0.003


def test_legacy_default_schedule_is_fixed_with_its_warmup(data_bin, tmp_path):
    records = train(data_bin, tmp_path, "f", "--max-update", "5")  # no --lr-scheduler
    assert [r["lr"] for r in records if "update" in r] == [0.002, 0.003, 0.003, 0.003, 0.003]


def test_update_freq_per_epoch(data_bin, tmp_path):
    records = train(data_bin, tmp_path, "u", "--max-epoch", "2", "--update-freq", "1,2", "--no-save")
    inner = [r for r in records if "update" in r]
    wpb = {e: [r["wpb"] for r in inner if r["epoch"] == e] for e in (1, 2)}
    assert sum(wpb[2]) / len(wpb[2]) > 1.7 * sum(wpb[1]) / len(wpb[1])
    assert len(wpb[2]) in (len(wpb[1]) // 2, len(wpb[1]) // 2 + 1)


def test_bf16_on_cpu_trains_and_differs_from_float32(data_bin, tmp_path):
    fp32 = train_losses_of(train(data_bin, tmp_path, "a", "--max-update", "4"))
    bf16 = train_losses_of(train(data_bin, tmp_path, "b", "--max-update", "4", "--bf16"))
    assert all(math.isfinite(x) for x in bf16)
    assert bf16 != fp32
    assert abs(bf16[0] - fp32[0]) < 0.1


@pytest.mark.slow
def test_a_cpu_run_is_bit_for_bit_repeatable(data_bin, tmp_path):
    first = train_losses_of(train(data_bin, tmp_path, "r1", "--max-update", "5", "--seed", "11"))
    again = train_losses_of(train(data_bin, tmp_path, "r2", "--max-update", "5", "--seed", "11"))
    other = train_losses_of(train(data_bin, tmp_path, "r3", "--max-update", "5", "--seed", "12"))
    assert first == again and first != other


def train_losses_of(records):
    return [r["loss"] for r in records if "update" in r]
