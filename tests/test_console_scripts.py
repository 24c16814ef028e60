"""Every console script, run as the user runs it, in its own process: exit 0 on success, 2 on a
usage error, 1 on a failed run, 128 + the signal when stopped, and never a traceback. The
in-process tests elsewhere never see the exit status.

The processes are forked from one that has imported torch and the commands once
(``tests/forked.py``) and call the entry point setup.cfg names, as the installed wrapper does;
``--help`` of two of them and the stop signals run the installed scripts themselves, as found
on ``PATH``."""
import configparser
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_forked, scaled_timeout


def console_scripts():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(line.split("=", 1)[0].strip().split(None, 1)[:1] + [line.split("=", 1)[1].strip()]
                for line in lines)


SCRIPTS = console_scripts()


def command(name):
    """The installed script, or (in a checkout not installed) its entry point through Python."""
    found = shutil.which(name)
    if found:
        return [found]
    module, func = SCRIPTS[name].split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def run(name, args, cwd, stdin=None, timeout=180, installed=False):
    """Console script ``name`` with ``args`` in its own process: forked from the tests' zygote,
    which calls the entry point setup.cfg names as the installed wrapper does (the start costs
    milliseconds, not the 2.5 s of importing torch), or with ``installed`` the script itself."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    if installed:
        return subprocess.run(command(name) + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                              input=stdin, timeout=scaled_timeout(timeout))
    return run_forked("entry", SCRIPTS[name], args, cwd, env=env, stdin=stdin, base_timeout=timeout, argv0=name)


def no_traceback(result):
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_the_table_covers_every_console_script():
    assert set(SCRIPTS) == {"fairseq-preprocess", "fairseq-train", "fairseq-hydra-train", "fairseq-eval-lm",
                            "fairseq-validate", "fairseq-generate", "fairseq-interactive",
                            "fairseq-hydra-eval-lm", "fairseq-hydra-validate", "fairseq-hydra-generate",
                            "fairseq-hydra-interactive", "fairseq-hydra-convert", "fairseq-export-hf",
                            "fairseq-import-hf"}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_exits_0(name, tmp_path):
    # two of them through the installed wrapper itself: the same entry points, a real start
    result = run(name, ["--help"], tmp_path, installed=name in ("fairseq-train", "fairseq-hydra-eval-lm"))
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower() or "fairseq" in result.stdout.lower()
    no_traceback(result)


@pytest.mark.parametrize("name, args", [
    ("fairseq-preprocess", ["--only-source", "--trainpref", "/nonexistent/train.txt", "--destdir", "out"]),
    ("fairseq-train", ["/nonexistent/data-bin", "--arch", "transformer_lm", "--lrr", "1"]),
    ("fairseq-hydra-train", ["task.data=x", "optimization.lrr=1"]),
    ("fairseq-eval-lm", ["/nonexistent/data-bin"]),
    ("fairseq-validate", ["/nonexistent/data-bin"]),
    ("fairseq-generate", ["/nonexistent/data-bin"]),
    ("fairseq-interactive", ["/nonexistent/data-bin"]),
    ("fairseq-hydra-eval-lm", ["task.data=x"]),
    ("fairseq-hydra-validate", ["common_eval.path=x.pt", "dataset.no_such_key=1"]),
    ("fairseq-hydra-generate", ["common_eval.path=x.pt", "--multirun"]),
    ("fairseq-hydra-interactive", ["common_eval.path=x.pt", "--max-tokens", "5"]),
    ("fairseq-hydra-convert", ["--to", "nothing"]),
    ("fairseq-export-hf", ["--path", "x.pt", "--no-such-flag"]),
    ("fairseq-import-hf", ["hf_dir", "--no-such-flag"]),
])
def test_a_usage_error_exits_2_with_one_line(name, args, tmp_path):
    result = run(name, args, tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("usage")]
    assert lines and lines[-1].strip(), result.stderr


@pytest.mark.slow
def test_the_evaluation_commands_exit_0_on_success(tiny_checkpoint, data_bin, tmp_path):
    path = str(tiny_checkpoint / "checkpoint_last.pt")
    common = [f"common_eval.path={path}", f"task.data={data_bin}", "dataset.max_tokens=1024"]
    legacy = [data_bin, "--path", path, "--max-tokens", "1024"]
    generation = ["--gen-subset", "valid", "--max-len-b", "2", "--sample-break-mode", "eos",
                  "--tokens-per-sample", "128", "--batch-size", "8", "--skip-invalid-size-inputs-valid-test"]
    runs = [
        ("fairseq-eval-lm", legacy + ["--tokens-per-sample", "32"], None),
        ("fairseq-hydra-eval-lm", common + ["task.tokens_per_sample=32"], None),
        ("fairseq-validate", legacy + ["--valid-subset", "valid"], None),
        ("fairseq-hydra-validate", common + ["dataset.valid_subset=valid"], None),
        ("fairseq-generate", legacy + generation, None),
        ("fairseq-hydra-generate", common + ["dataset.gen_subset=valid", "generation.max_len_b=2",
                                             "task.sample_break_mode=eos", "task.tokens_per_sample=128",
                                             "dataset.batch_size=8",
                                             "dataset.skip_invalid_size_inputs_valid_test=true"], None),
        ("fairseq-interactive", [data_bin, "--path", path, "--max-len-b", "2"], "the value\n"),
        ("fairseq-hydra-interactive", common[:2] + ["generation.max_len_b=2"], "the value\n"),
    ]
    for name, args, stdin in runs:
        result = run(name, args, tmp_path, stdin=stdin)
        assert result.returncode == 0, (name, result.stderr[-2000:])
        no_traceback(result)
        assert "{" not in result.stderr.splitlines()[-1] if result.stderr.strip() else True, result.stderr


def test_a_failed_run_exits_1(tmp_path, data_bin):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    for name, args in (("fairseq-eval-lm", [data_bin, "--path", str(corrupt)]),
                       ("fairseq-hydra-eval-lm", [f"common_eval.path={corrupt}", f"task.data={data_bin}"])):
        result = run(name, args, tmp_path)
        assert result.returncode in (1, 2), (name, result.returncode, result.stderr)
        no_traceback(result)
        assert str(corrupt) in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_during_an_evaluation_ends_with_one_line_and_128_plus_the_signal(signum, tiny_checkpoint,
                                                                                     data_bin, tmp_path):
    """fairseq-interactive waiting for input: SIGTERM/SIGHUP end it as Ctrl-C does."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    path = str(tiny_checkpoint / "checkpoint_last.pt")
    proc = subprocess.Popen(command("fairseq-interactive") + [data_bin, "--path", path], cwd=tmp_path, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + scaled_timeout(300)
        seen = b""
        # read the pipe's bytes as they come (os.read, no Python buffer: a buffered readline
        # could hold the prompt's line while select() waits on the empty pipe)
        while b"Type the input sentence" not in seen:  # logged on stdout once the model is loaded
            assert proc.poll() is None and time.time() < deadline, seen.decode(errors="replace")
            if select.select([proc.stdout], [], [], 1.0)[0]:
                seen += os.read(proc.stdout.fileno(), 65536)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=scaled_timeout(60))
        err = err.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("stopped by SIG"), err
