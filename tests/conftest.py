"""Shared fixtures and helpers: a tiny real-text corpus preprocessed once per session, a tiny
model trained once per session, the tiny-model flags, in-process command calls, and timeouts for
the processes a test starts that scale with how loaded the machine is."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, List, Optional, Sequence, Tuple

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


# -- a tiny model ------------------------------------------------------------------------------
# One layer of width 16: each flag list is the model only; a test adds its own training flags.
TINY_MODEL: List[str] = ["--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
                         "--decoder-input-dim", "16", "--decoder-output-dim", "16",
                         "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2"]
TINY_MODEL_HYDRA: List[str] = ["model.decoder_layers=1", "model.decoder_embed_dim=16", "model.decoder_input_dim=16",
                               "model.decoder_output_dim=16", "model.decoder_ffn_embed_dim=32",
                               "model.decoder_attention_heads=2"]
# a run of 2 updates on short samples, small batches and no loader processes: the flags most
# refusal tests need to reach their check in both doors
TINY_LEGACY: List[str] = [*TINY_MODEL, "--optimizer", "adam", "--tokens-per-sample", "32", "--max-tokens", "256",
                          "--num-workers", "0", "--max-update", "2", "--no-epoch-checkpoints"]
TINY_HYDRA: List[str] = ["task.tokens_per_sample=32", *TINY_MODEL_HYDRA, "dataset.max_tokens=256",
                         "dataset.num_workers=0", "optimization.max_update=2"]


# -- calling a command -------------------------------------------------------------------------
def in_process(cli_main: Callable, argv: Sequence[str], capsys) -> Tuple[object, str]:
    """Run a command's ``cli_main`` in this process, expecting it to exit: (exit code, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli_main(list(argv))
    return exc.value.code, capsys.readouterr().err


def copy_data(data_bin: str, target: Path) -> Path:
    """A private copy of a (session-shared, read-only) data-bin that a test may damage."""
    shutil.copytree(data_bin, target)
    return target


def write_plugin(directory: Path, name: str, code: str) -> str:
    """A plugin directory (``--user-dir``) ``directory/name`` whose ``__init__.py`` is ``code``."""
    plugin = Path(directory) / name
    plugin.mkdir()
    (plugin / "__init__.py").write_text(code)
    return str(plugin)


def dead_pid() -> int:
    """The PID of a process that has ended and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def restore_root_log_handlers():
    """A Hydra run in-process leaves its console handler on the root logger, writing to the stream
    pytest captured for that test and closes after it: removed, so no later test logs into it."""
    import logging

    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


class TinyDictionary:
    """Just what a model reads from a Dictionary: its size and pad id."""

    def __init__(self, size: int, pad: int = 1) -> None:
        self.size, self.pad_index = size, pad

    def __len__(self) -> int:
        return self.size

    def pad(self) -> int:
        return self.pad_index


def tiny_task(vocab: int, pad: int = 1) -> SimpleNamespace:
    """A stand-in task for ``build_model``: a source and target dictionary of ``vocab`` symbols."""
    dictionary = TinyDictionary(vocab, pad)
    return SimpleNamespace(source_dictionary=dictionary, target_dictionary=dictionary)


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run the test from its own directory: a Hydra run in-process writes its run directory
    (``outputs/DATE/TIME``) under the working directory, never into the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_in(directory: Path, cli_main: Callable, argv: Sequence[str], capsys) -> SimpleNamespace:
    """A command's ``cli_main`` run in-process from ``directory`` (its relative paths land there),
    ended as its console script would end: ``returncode``, ``stdout`` and ``stderr``, as
    ``subprocess.run`` gives them."""
    previous = os.getcwd()
    capsys.readouterr()
    os.chdir(directory)
    try:
        cli_main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(previous)
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


# -- timeouts for the processes a test starts --------------------------------------------------
# How long ``python -c "import torch, fairseq"`` takes on an idle machine; a start measured slower
# than this means a loaded (or slower) machine, and every timeout grows by the same factor.
_IDLE_START_SECONDS = 3.0
_start_seconds: Optional[float] = None


def _measured_start_seconds() -> float:
    """Wall seconds of one interpreter start importing torch and fairseq, measured once per process."""
    global _start_seconds
    if _start_seconds is None:
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, fairseq"], cwd=ROOT, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), check=False)
        _start_seconds = time.perf_counter() - begin
    return _start_seconds


def slowdown() -> float:
    """How many times slower than an idle machine this one is now (at least 1): the larger of the
    measured start time's ratio and the load per core, read again at each call because the load
    can rise after the measurement."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return max(1.0, _measured_start_seconds() / _IDLE_START_SECONDS, load)


def scaled_timeout(base_seconds: float) -> float:
    """A timeout for a started process: ``base_seconds`` is generous on an idle machine and is
    scaled by ``slowdown()``, so a loaded machine makes a test slower, never a failure."""
    return base_seconds * slowdown()


def python_env(**extra: str) -> dict:
    """The environment of a Python process a test starts: this checkout importable first."""
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


def run_module(module: str, args: Sequence[str], cwd, env: Optional[dict] = None,
               base_timeout: float = 180) -> SimpleNamespace:
    """``python -m MODULE ARGS`` in its own process (forked, :func:`run_forked`), ``env`` added to
    the environment: for a run whose process is the point (a sweep's launcher, a plugin import
    that must not stay here)."""
    return run_forked("module", module, args, cwd, env=python_env(**(env or {})), base_timeout=base_timeout)


_zygote = None


def run_forked(kind: str, target: str, args: Sequence[str], cwd, *, env: Optional[dict] = None,
               stdin: Optional[str] = None, base_timeout: float = 180,
               argv0: Optional[str] = None) -> SimpleNamespace:
    """A command in its own process, forked from this worker's zygote (``tests/forked.py``),
    which has imported torch, fairseq and the commands once: ``kind`` ``"entry"`` runs
    ``target`` = ``"module:function"`` as its console script does (``argv0`` the script's name),
    ``"module"`` is ``python -m target``, ``"code"`` is ``python -c target``. ``returncode``,
    ``stdout`` and ``stderr`` as ``subprocess.run`` gives them, with a scaled timeout."""
    global _zygote
    from forked import Zygote

    if _zygote is None:
        _zygote = Zygote(str(ROOT))
    return _zygote.run(kind, target, args, cwd, env if env is not None else python_env(), stdin=stdin,
                       timeout=scaled_timeout(base_timeout), argv0=argv0)


# -- components a test registers ---------------------------------------------------------------
@contextlib.contextmanager
def registrations_forgotten():
    """Within the block a test may register components (a plugin, a task class); afterwards they
    are removed from the registries, Hydra's ConfigStore and ``sys.modules`` (``*_plugin``
    packages), so later tests in the same worker (``--help``, docs/components.md) never see them."""
    from hydra.core.config_store import ConfigStore

    from fairseq.dataclass import compose
    from fairseq.registry import ALL_REGISTRIES, import_builtin_components

    import_builtin_components()
    before = {group: set(r.entries) for group, r in ALL_REGISTRIES.items()}
    modules = set(sys.modules)
    try:
        yield
    finally:
        repo = ConfigStore.instance().repo
        for group, registry in ALL_REGISTRIES.items():
            for name in set(registry.entries) - before[group]:
                del registry.entries[name]
                compose._stored.discard((group, name))
                for node in (repo.get("schema", {}).get(group, {}), repo.get(group, {})):
                    node.pop(f"{name}.yaml", None)
        for name in set(sys.modules) - modules:
            if name.split(".")[0].endswith("_plugin"):
                del sys.modules[name]


def perturbed_model(cfg, data_bin: str, seed: int = 0):
    """``(model, cfg, task)``: the model ``cfg`` describes on data_bin's dictionary, every weight
    (norms included) moved at random so that its outputs are far from uniform."""
    import torch

    from fairseq.data import Dictionary
    from fairseq.tasks.language_modeling import LanguageModelingTask

    task = LanguageModelingTask(cfg.task, Dictionary.load(os.path.join(data_bin, "dict.txt")))
    torch.manual_seed(seed)
    model = task.build_model(cfg.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "norm" in name else 0.1))
    return model.eval(), cfg, task
