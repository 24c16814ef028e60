"""Shared fixtures: a tiny real-text corpus, preprocessed once per session."""
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import List

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # several pytest workers share the cores: one thread each (and in the processes a test
    # starts) instead of every worker's torch taking all of them
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# A runner started in the background (`bash scripts/test.sh &`, nohup) inherits SIGINT (and
# SIGHUP) ignored, and the commands the tests start would inherit that too: the tests of Ctrl-C,
# SIGTERM and SIGHUP must not depend on how the suite was started. A Python handler here makes
# every process started from now on begin with the default actions (exec resets handled signals).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
for _signum in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_signum) is signal.SIG_IGN:
        signal.signal(_signum, signal.SIG_DFL)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOKEN = re.compile(r"\w+|[^\w\s]")


def write_corpus(directory: Path, n_paragraphs: int = 400) -> Path:
    """A few thousand tokens of Python's help topics, split 18/1/1 into train/valid/test."""
    from pydoc_data.topics import topics

    directory.mkdir(parents=True, exist_ok=True)
    lines = {"train": [], "valid": [], "test": []}
    i = 0
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            words = TOKEN.findall(block)[:60]
            if not words:
                continue
            split = "valid" if i % 20 == 0 else "test" if i % 20 == 1 else "train"
            lines[split].append(" ".join(words))
            i += 1
            if i >= n_paragraphs:
                break
        if i >= n_paragraphs:
            break
    for split, rows in lines.items():
        (directory / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return directory


_PROCESS_GROUP_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _no_process_group_variables_leak():
    """A test that leaves RANK, WORLD_SIZE, ... in ``os.environ`` makes every later subprocess
    wait for a process group that never forms; fail the test that leaked instead."""
    before = {key: os.environ.get(key) for key in _PROCESS_GROUP_VARS}
    yield
    after = {key: os.environ.get(key) for key in _PROCESS_GROUP_VARS}
    changed = {key: value for key, value in after.items() if value != before[key]}
    for key in changed:  # restore, so one leak fails one test
        if before[key] is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before[key]
    assert not changed, f"the test left process-group variables in os.environ: {changed}"


@pytest.fixture(scope="session")
def data_bin(tmp_path_factory) -> str:
    """A preprocessed corpus directory (dict.txt, train/valid/test .bin/.idx)."""
    from fairseq_cli import preprocess

    base = tmp_path_factory.mktemp("corpus")
    text = write_corpus(base / "text")
    dest = base / "data-bin"
    preprocess.cli_main(["--only-source", "--trainpref", str(text / "train.txt"),
                         "--validpref", str(text / "valid.txt"), "--testpref", str(text / "test.txt"),
                         "--destdir", str(dest), "--workers", "1"])
    return str(dest)


def _number(value):
    """A json log value as a number when it is one (fairseq writes ``"10.172"``, ``"512"``)."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def read_json_log(path: str) -> List[dict]:
    """The JSON records of a training log file (``... | train_inner | {...}`` lines), numbers parsed."""
    records = []
    for line in Path(path).read_text().splitlines():
        start = line.find("{")
        if start < 0 or not line.rstrip().endswith("}") or (start and not line[:start].endswith("| ")):
            continue
        try:
            record = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        records.append({k: _number(v) for k, v in record.items()})
    return records


def train_losses(path: str) -> List[float]:
    """Per-update training losses (``log_interval=1``), in update order."""
    return [r["loss"] for r in read_json_log(path) if "update" in r and "loss" in r]


@pytest.fixture(scope="session")
def tiny_checkpoint(data_bin, tmp_path_factory) -> Path:
    """A 1-layer transformer_lm trained 30 updates on ``data_bin``: its save directory
    (``checkpoint_last.pt``, ``checkpoint_best.pt``)."""
    from fairseq_cli import train

    save_dir = tmp_path_factory.mktemp("tiny_ckpt")
    train.cli_main([data_bin, "--task", "language_modeling", "--arch", "transformer_lm",
                    "--decoder-layers", "1", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
                    "--decoder-attention-heads", "2", "--tokens-per-sample", "32", "--max-tokens", "512",
                    "--optimizer", "adam", "--lr", "0.005", "--max-update", "30", "--save-dir", str(save_dir),
                    "--no-epoch-checkpoints", "--log-format", "none", "--seed", "1",
                    "--share-decoder-input-output-embed"])
    return save_dir
