"""Every log format is parsed back (json records as fairseq 0.12's own log is parsed);
TensorBoard events are read with the tensorboard package."""
import json
import re
from pathlib import Path

import pytest

from conftest import TINY_MODEL, read_json_log, scaled_timeout

TINY = [*TINY_MODEL, "--optimizer", "adam", "--lr", "0.003", "--warmup-updates", "3", "--tokens-per-sample", "32",
        "--max-tokens", "256", "--num-workers", "0"]

FIXTURE_LOG = Path(__file__).resolve().parent / "fixtures" / "fairseq_0_12" / "train.log"

# How scripts read fairseq's json logs: the object after "| <record> |" on an INFO line.
FAIRSEQ_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| INFO \| (train_inner|train|valid) \| (\{.*\})$")


def fairseq_records(text):
    """``[(record name, json object)]`` of a log, parsed the way fairseq 0.12 logs are parsed."""
    return [(m.group(1), json.loads(m.group(2), object_pairs_hook=list))
            for m in map(FAIRSEQ_RECORD.match, text.splitlines()) if m]


def train(data_bin, tmp_path, *extra):
    from fairseq_cli.train import cli_main

    log = tmp_path / "train.log"
    cli_main([data_bin, *TINY, "--save-dir", str(tmp_path / "ck"), "--log-file", str(log), *map(str, extra)])
    return log.read_text()


def shape(pairs):
    """Keys in order, with the type of each value."""
    return [(key, type(value).__name__) for key, value in pairs]


def test_json_records_parse_like_fairseqs_own_log(data_bin, tmp_path):
    theirs = fairseq_records(FIXTURE_LOG.read_text())
    assert [name for name, _ in theirs] == ["train_inner"] * 40 + ["valid", "train"]
    text = train(data_bin, tmp_path, "--log-format", "json", "--log-interval", "1", "--max-update", "3")
    ours = fairseq_records(text)
    assert [name for name, _ in ours] == ["train_inner"] * 3 + ["valid", "train"]
    # the same keys in the same order, the same value types (epoch int, update float, strings)
    theirs_by_name = {name: shape(pairs) for name, pairs in theirs}
    for name, pairs in ours:
        assert shape(pairs) == theirs_by_name[name], name
    first = dict(ours[0][1])
    assert first["epoch"] == 1 and 0 < first["update"] < 1 and first["num_updates"] == "1"
    assert [dict(p)["num_updates"] for _, p in ours[:3]] == ["1", "2", "3"]
    # numbers are written as fairseq writes them: rounded, then "{:g}"
    assert re.fullmatch(r"\d+\.\d{1,3}|\d+", first["loss"]) and re.fullmatch(r"\d+(\.\d{1,2})?", first["ppl"])
    assert re.fullmatch(r"\d+", first["train_wall"]) and re.fullmatch(r"\d+", first["wall"])
    # the lr keeps six significant digits: the fixed scheduler's warmup over 3 updates shows
    assert [dict(p)["lr"] for _, p in ours[:3]] == ["0.002", "0.003", "0.003"]
    valid = dict(ours[3][1])
    assert valid["valid_num_updates"] == "3" and float(valid["valid_ppl"]) == pytest.approx(
        2 ** float(valid["valid_loss"]), rel=1e-2)


def test_json_lines_with_fp16_carry_the_loss_scale(data_bin, tmp_path):
    with pytest.warns(UserWarning, match="fp16"):
        train(data_bin, tmp_path, "--log-format", "json", "--log-interval", "2", "--max-update", "6", "--fp16",
              "--clip-norm", "0.5")
    records = read_json_log(tmp_path / "train.log")
    inner = [r for r in records if "update" in r]
    assert [r["num_updates"] for r in inner] == [2, 4, 6]
    assert [r["update"] for r in inner] == sorted(r["update"] for r in inner)
    for r in inner:
        assert list(r) == ["epoch", "update", "loss", "ppl", "wps", "ups", "wpb", "bsz", "num_updates", "lr",
                           "gnorm", "clip", "loss_scale", "train_wall", "wall"]
        assert r["ppl"] == pytest.approx(2 ** r["loss"], rel=1e-2)
        assert 0 <= r["clip"] <= 100
    valid = [r for r in records if "valid_loss" in r]
    assert valid and valid[-1]["valid_num_updates"] == 6
    summary = [r for r in records if "train_loss" in r]
    assert summary and summary[-1]["train_num_updates"] == 6 and "train_loss_scale" in summary[-1]


def test_best_loss_joins_the_valid_record_once_there_is_a_best(data_bin, tmp_path):
    train(data_bin, tmp_path, "--log-format", "json", "--log-interval", "1", "--max-update", "4",
          "--validate-interval-updates", "2", "--no-save")
    valid = [r for r in read_json_log(tmp_path / "train.log") if "valid_loss" in r]
    assert [r["valid_num_updates"] for r in valid] == [2, 4]
    assert "valid_best_loss" not in valid[0]
    assert valid[1]["valid_best_loss"] == min(valid[0]["valid_loss"], valid[1]["valid_loss"])


def test_simple_lines(data_bin, tmp_path):
    text = train(data_bin, tmp_path, "--log-format", "simple", "--log-interval", "3", "--max-update", "6",
                 "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "3000", "--warmup-init-lr", "1e-07")
    lines = re.findall(r"\| INFO \| train_inner \| epoch 001:\s+(\d+) / (\d+) loss=([\d.]+), ppl=([\d.]+), "
                       r"wps=[\d.]+, ups=[\d.]+, wpb=[\d.]+, bsz=[\d.]+, num_updates=(\d+), lr=([\d.e-]+), ", text)
    assert [int(n) for n, *_ in lines] == [3, 6] and [int(u) for *_, u, _ in lines] == [3, 6]
    assert all(float(ppl) == pytest.approx(2 ** float(loss), rel=1e-2) for _, _, loss, ppl, _, _ in lines)
    # a warmup from 1e-07 over 3000 updates: the lr is small but written with its digits
    assert [float(lr) for *_, lr in lines] == pytest.approx([1e-07 + 3 * (0.003 - 1e-07) / 3000,
                                                            1e-07 + 6 * (0.003 - 1e-07) / 3000], rel=1e-5)
    assert re.search(r"\| INFO \| valid \| epoch 001 \| valid on 'valid' subset \| loss [\d.]+ \| ppl [\d.]+ "
                     r"\| wps [\d.]+ \| wpb [\d.]+ \| bsz [\d.]+ \| num_updates 6", text)
    assert re.search(r"\| INFO \| train \| epoch 001 \| loss [\d.]+ \| ppl", text)


def test_none_format_keeps_only_summaries(data_bin, tmp_path):
    text = train(data_bin, tmp_path, "--log-format", "none", "--log-interval", "1", "--max-update", "4")
    assert not re.search(r"epoch 001:\s+\d+ /", text)
    assert re.search(r"\| train \| epoch 001 \| loss ", text)


def test_a_run_starts_with_a_short_header_and_the_full_config_goes_to_the_save_dir(data_bin, tmp_path):
    import json

    text = train(data_bin, tmp_path, "--log-format", "none", "--max-update", "1")
    header = [line.split(" | fairseq.train | ", 1)[1] for line in text.splitlines()
              if " | fairseq.train | " in line][:4]
    assert header[0].startswith(f"task language_modeling: data {data_bin}, dictionary ")
    assert re.fullmatch(r"model transformer_lm \(1 layers x 16, ffn 32, 2 heads\): [\d,]+ parameters; "
                        r"criterion cross_entropy", header[1]), header[1]
    assert header[2].startswith("batch max_tokens ") and "optimizer adam, lr [" in header[2]
    assert header[3] == (f"checkpoints in {tmp_path / 'ck'}; full config {tmp_path / 'ck' / 'config.json'}; "
                         f"log file {tmp_path / 'train.log'}")
    assert "decoder_layers: 1" not in text and len(text.splitlines()) < 40
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["model"]["decoder_layers"] == 1
    printed = train(data_bin, tmp_path / "p", "--log-format", "none", "--max-update", "1", "--print-config")
    assert "config:" in printed and "decoder_layers: 1" in printed


@pytest.mark.parametrize("fmt", ["simple", "json"])
def test_a_long_stretch_without_a_line_gets_a_progress_line(fmt, caplog, monkeypatch):
    """Redirected output shows life within seconds: the first progress line after 10 s without
    a line, then every log_seconds; the per-interval lines are untouched."""
    import json
    import logging

    from fairseq.logging import progress_bar as pb

    now = [0.0]
    monkeypatch.setattr(pb.time, "monotonic", lambda: now[0])
    bar = pb.progress_bar(range(200), log_format=fmt, log_interval=1000, epoch=1, log_seconds=60)
    with caplog.at_level(logging.INFO):
        for i in bar:
            now[0] += 1.0  # one second an item
    lines = [r.getMessage() for r in caplog.records if r.name == "progress"]
    # after 10 s, then every 60 s: at items 10, 70, 130, 190
    assert len(lines) == 4, lines
    if fmt == "json":
        assert [json.loads(line)["progress"] for line in lines] == ["10/200", "70/200", "130/200", "190/200"]
    else:
        assert re.fullmatch(r"epoch 001:\s+10 / 200 \(10 s\)", lines[0]), lines[0]
    caplog.clear()
    now[0] = 0.0
    with caplog.at_level(logging.INFO):
        for i in pb.progress_bar(range(50), log_format=fmt, log_interval=1000, epoch=1, log_seconds=0):
            now[0] += 1.0
    assert not [r for r in caplog.records if r.name == "progress"]


def test_tqdm_off_a_terminal_writes_plain_lines(data_bin, tmp_path):
    text = train(data_bin, tmp_path, "--log-format", "tqdm", "--log-interval", "2", "--max-update", "4")
    assert "\r" not in text
    assert re.search(r"\| train_inner \| epoch 001:\s+4 / \d+ loss=", text)


def test_tensorboard_events_per_split(data_bin, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(data_bin, tmp_path, "--log-format", "json", "--log-interval", "1", "--max-update", "5",
          "--tensorboard-logdir", tmp_path / "tb")
    inner = EventAccumulator(str(tmp_path / "tb" / "train_inner")).Reload()
    assert [e.step for e in inner.Scalars("loss")] == [1, 2, 3, 4, 5]
    records = [r for r in read_json_log(tmp_path / "train.log") if "update" in r]
    assert [round(e.value, 4) for e in inner.Scalars("loss")] == [round(r["loss"], 4) for r in records]
    assert [e.value for e in inner.Scalars("num_updates")] == [1, 2, 3, 4, 5]
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
    assert proc.wait(timeout=scaled_timeout(120)) == 0
    shown = b"".join(chunks).decode(errors="replace")
    # tqdm redraws one line in place ("\r") with the running loss in its postfix
    assert "\r" in shown and "epoch 001" in shown and "loss=" in shown
