"""Every log format is parsed back; TensorBoard events are read with the tensorboard package."""
import re

import pytest

from conftest import read_json_log

TINY = ["--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
        "--decoder-input-dim", "16", "--decoder-output-dim", "16", "--decoder-ffn-embed-dim", "32",
        "--decoder-attention-heads", "2", "--optimizer", "adam", "--lr", "0.003",
        "--warmup-updates", "3", "--tokens-per-sample", "32", "--max-tokens", "256", "--num-workers", "0"]

JSON_KEYS = {"epoch", "update", "loss", "nll_loss", "ppl", "wps", "ups", "wpb", "bsz", "gnorm", "lr",
             "train_wall", "wall"}


def train(data_bin, tmp_path, *extra):
    from fairseq_cli.train import cli_main

    log = tmp_path / "train.log"
    cli_main([data_bin, *TINY, "--save-dir", str(tmp_path / "ck"), "--log-file", str(log), *map(str, extra)])
    return log.read_text()


def test_json_lines_carry_every_metric(data_bin, tmp_path):
    with pytest.warns(UserWarning, match="fp16"):
        train(data_bin, tmp_path, "--log-format", "json", "--log-interval", "2", "--max-update", "6", "--fp16")
    records = read_json_log(tmp_path / "train.log")
    inner = [r for r in records if "update" in r]
    assert [r["update"] for r in inner] == [2, 4, 6]
    for r in inner:
        assert JSON_KEYS | {"loss_scale"} <= set(r), set(r)
        assert r["ppl"] == pytest.approx(2 ** r["loss"], rel=1e-4)
    valid = [r for r in records if "valid_loss" in r]
    assert valid and valid[-1]["valid_num_updates"] == 6
    summary = [r for r in records if "train_loss" in r]
    assert summary and summary[-1]["train_num_updates"] == 6


def test_simple_lines(data_bin, tmp_path):
    text = train(data_bin, tmp_path, "--log-format", "simple", "--log-interval", "3", "--max-update", "6")
    lines = re.findall(r"epoch 001:\s+(\d+) / (\d+) loss=([\d.]+), nll_loss=[\d.]+, ppl=([\d.]+)", text)
    assert [int(n) for n, *_ in lines] == [3, 6]
    assert all(float(ppl) == pytest.approx(2 ** float(loss), rel=1e-2) for *_, loss, ppl in lines)
    assert re.search(r"epoch 001 \| valid on 'valid' subset \| valid \| loss=[\d.]+", text)


def test_none_format_keeps_only_summaries(data_bin, tmp_path):
    text = train(data_bin, tmp_path, "--log-format", "none", "--log-interval", "1", "--max-update", "4")
    assert not re.search(r"epoch 001:\s+\d+ /", text)
    assert re.search(r"epoch 001 \| train \| loss=", text)
    assert "config:" in text and "decoder_layers: 1" in text  # the resolved config, printed at start


def test_tqdm_off_a_terminal_writes_plain_lines(data_bin, tmp_path):
    text = train(data_bin, tmp_path, "--log-format", "tqdm", "--log-interval", "2", "--max-update", "4")
    assert "\r" not in text
    assert re.search(r"epoch 001:\s+4 / \d+ loss=", text)


def test_tensorboard_events_per_split(data_bin, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(data_bin, tmp_path, "--log-format", "json", "--log-interval", "1", "--max-update", "5",
          "--tensorboard-logdir", tmp_path / "tb")
    inner = EventAccumulator(str(tmp_path / "tb" / "train_inner")).Reload()
    assert [e.step for e in inner.Scalars("loss")] == [1, 2, 3, 4, 5]
    records = [r for r in read_json_log(tmp_path / "train.log") if "update" in r]
    assert [round(e.value, 4) for e in inner.Scalars("loss")] == [round(r["loss"], 4) for r in records]
    valid = EventAccumulator(str(tmp_path / "tb" / "valid")).Reload()
    assert valid.Scalars("loss")[-1].step == 5


def test_a_terminal_gets_a_live_progress_bar(data_bin, tmp_path):
    import os
    import pty
    import subprocess
    import sys

    from conftest import ROOT

    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # 100 columns
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "fairseq_cli.train", data_bin, *TINY, "--max-update", "4",
                             "--save-dir", str(tmp_path / "ck"), "--log-interval", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    shown = b"".join(chunks).decode(errors="replace")
    # tqdm redraws one line in place ("\r") with the running loss in its postfix
    assert "\r" in shown and "epoch 001" in shown and "loss=" in shown
