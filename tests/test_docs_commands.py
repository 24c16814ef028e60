"""Every command in README.md and docs/*.md runs as written, on a small stand-in of the demo's data.

The shell commands of the fenced code blocks (``bash``, ``sh``, ``console`` or unlabeled) and the
``python`` blocks are extracted and classified by their command prefix:

* run: the console scripts of setup.cfg (``fairseq-train``, ``fairseq-hydra-train``, ...),
  ``python -m MODULE``, ``python PATH.py`` and the ``python`` snippets. Each runs with its own
  arguments plus ADDED ones that only scale it down (``SCALE_DOWN``: a tiny model, 2 updates),
  in one working directory that holds ``demo/data-bin`` (what ``scripts/demo.sh`` builds), also
  reachable as ``data-bin`` and ``data-bin/wiki``, the names the docs use. Commands run in the
  order the docs give them (README.md first), so a documented evaluation finds the checkpoint
  the documented training wrote. They run in-process, in one worker process
  (``python tests/test_docs_commands.py PLAN``): one interpreter start for all. A command with
  a pipe or a redirection runs through ``bash``.
* file: a ``python`` block whose first line is ``# file: PATH`` is a file the reader writes (a
  plugin's module): it is written to ``PATH`` in the working directory, not run. A command that
  imports a plugin (``--user-dir``, ``common.user_dir=``) is scaled down by the run's size only
  (``PLUGIN_SCALE_DOWN``), since the plugin's model has fields of its own.
* not run (``NOT_RUN_PREFIXES``, ``NOT_RUN_IF_CONTAINS``, sbatch script blocks), each with its
  reason: clusters, several machines or GPUs, installs, the whole test suite.

A command no rule covers fails ``test_every_documented_command_is_classified``, so a command
added to the docs is either run here or listed with the reason it cannot be. A command followed
in its block by a line starting with ``error:`` is documented as failing: it must exit non-zero
with that line on stderr.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from configparser import ConfigParser
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}
PYTHON_LANGS = {"python", "py", "python3"}

# prefix (first words, after VAR=value assignments) -> why the command is not run here
NOT_RUN_PREFIXES: Dict[str, str] = {
    "torchrun": "starts 8 processes per machine (GPUs) or spans machines; 2 gloo processes on "
                "one machine are tested in tests/test_distributed.py and tests/test_multinode.py",
    "srun": "runs inside a SLURM allocation on a cluster",
    "sbatch": "submits to a SLURM cluster",
    "pip install": "installs packages (network); the test environment has them installed",
    "python -m pip": "installs packages (network); the test environment has them installed",
    "bash scripts/install.sh": "installs the package (pip)",
    "bash scripts/demo.sh": "runs scripts/install.sh (pip) and trains the demo for ~2 minutes; "
                            "its steps are documented commands of the same forms run here",
    "bash scripts/test.sh": "installs and runs the whole test suite, this file included",
    "python benchmarks/": "a timing benchmark (benchmarks/*.py): it measures for minutes by design, "
                          "beyond this test's 60 s; docs/benchmarks.md records its output",
    "bash benchmarks/": "GPU benchmarks (benchmarks/*.sh): they need CUDA (exit 2 without it)",
    "python scripts/run_fairseq_tests.py": "needs fairseq 0.12.2's source tree (FAIRSEQ_SRC) and "
                                           "runs its unit tests for minutes",
}
# a command containing this text -> why it is not run here (checked before everything else)
NOT_RUN_IF_CONTAINS: Dict[str, str] = {
    "hydra/launcher=submitit_slurm": "submits SLURM jobs (sbatch) to a cluster; the same sweep with "
                                     "hydra/launcher=submitit_local is tested in tests/test_hydra_plugins.py",
}
SBATCH_SCRIPT = "a SLURM batch script (#SBATCH lines), submitted with sbatch on a cluster"

# ADDED arguments that scale a command down (prefix -> arguments appended to the command)
TINY_HYDRA = ["task.tokens_per_sample=64", "model.decoder_layers=1", "model.decoder_embed_dim=16",
              "model.decoder_input_dim=16", "model.decoder_output_dim=16", "model.decoder_ffn_embed_dim=32",
              "model.decoder_attention_heads=2", "dataset.num_workers=0", "optimization.max_update=2",
              "common.log_format=none"]
TINY_LEGACY = ["--tokens-per-sample", "64", "--decoder-layers", "1", "--decoder-embed-dim", "16",
               "--decoder-input-dim", "16", "--decoder-output-dim", "16", "--decoder-ffn-embed-dim", "32",
               "--decoder-attention-heads", "2", "--num-workers", "0", "--max-update", "2",
               "--log-format", "none"]
# a plugin's model has its own fields: only the run is scaled down, not the transformer
PLUGIN_HYDRA = ["task.tokens_per_sample=64", "dataset.num_workers=0", "optimization.max_update=2",
                "common.log_format=none"]
PLUGIN_LEGACY = ["--tokens-per-sample", "64", "--num-workers", "0", "--max-update", "2", "--log-format", "none"]
PLUGIN_SCALE_DOWN: Dict[str, List[str]] = {
    "fairseq-hydra-train": PLUGIN_HYDRA,
    "fairseq-train": PLUGIN_LEGACY,
}
FILE_BLOCK = re.compile(r"\A# file: (\S+)\s*$", re.MULTILINE)
SCALE_DOWN: Dict[str, List[str]] = {
    "fairseq-hydra-train": TINY_HYDRA,
    "python -m fairseq_cli.train_hydra": TINY_HYDRA,
    "fairseq-train": TINY_LEGACY,
    "python -m fairseq_cli.train": TINY_LEGACY,
}



@dataclass
class DocCommand:
    source: str  # FILE:LINE
    lang: str  # "shell" or "python"
    text: str  # the command (continuations joined) or the python block
    expected_error: Optional[str] = None
    block_is_sbatch_script: bool = False


@dataclass
class Plan:
    source: str
    kind: str  # entry | module | script | python | bash
    text: str
    target: str = ""  # "module:function", a module name or a script path
    argv: List[str] = field(default_factory=list)
    expected_error: Optional[str] = None


def extract_commands(path: Path, root: Path = ROOT) -> List[DocCommand]:
    """The shell commands and python snippets of the fenced code blocks of a markdown file."""
    commands: List[DocCommand] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(root).as_posix()
    i = 0
    while i < len(lines):
        opening = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2).lower()
        start = i + 1
        i += 1
        body: List[Tuple[int, str]] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1  # the closing fence
        if lang in PYTHON_LANGS:
            commands.append(DocCommand(f"{name}:{start}", "python", "\n".join(t for _, t in body)))
        elif lang in SHELL_LANGS:
            commands.extend(_shell_commands(name, body))
    return commands


def _shell_commands(name: str, body: List[Tuple[int, str]]) -> List[DocCommand]:
    sbatch = any(text.lstrip().startswith("#SBATCH") for _, text in body)
    found: List[DocCommand] = []
    pending, first = "", 0
    for number, raw in body:
        text = raw.strip()
        if not pending:
            if not text or text.startswith("#"):
                continue
            if text.startswith("error:") and found:  # the documented output of the command above
                found[-1].expected_error = text
                continue
            if text[0].isdigit():  # program output (a log line), not a command
                continue
            first = number
            if text.startswith("$ "):
                text = text[2:]
        pending = f"{pending} {text}".strip() if pending else text
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        found.append(DocCommand(f"{name}:{first}", "shell", pending, block_is_sbatch_script=sbatch))
        pending = ""
    if pending:
        found.append(DocCommand(f"{name}:{first}", "shell", pending, block_is_sbatch_script=sbatch))
    return found


def console_scripts() -> Dict[str, str]:
    """``fairseq-train`` -> ``fairseq_cli.train:cli_main``, from setup.cfg."""
    parser = ConfigParser()
    parser.read(ROOT / "setup.cfg")
    scripts = {}
    for line in parser["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (part.strip() for part in line.split("=", 1))
        scripts[name] = target
    return scripts


def _words(text: str) -> List[str]:
    words = shlex.split(text, comments=True)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # VAR=value cmd ...
        words.pop(0)
    return words


def _needs_a_shell(text: str) -> bool:
    """Whether a command uses what only a shell does: pipes, redirections, lists, ``$``
    expansions, command substitution (comments aside)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    return any(set(t) <= set("();<>|&") for t in tokens) or any("$" in t or "`" in t for t in tokens)


def _starts_with(words: List[str], prefix: str) -> bool:
    """Whether ``words`` begin with the words of ``prefix``; a last prefix word ending in ``/``
    matches any path under that directory (``python benchmarks/``)."""
    parts = prefix.split()
    if len(words) < len(parts) or words[:len(parts) - 1] != parts[:-1]:
        return False
    last = parts[-1]
    return words[len(parts) - 1].startswith(last) if last.endswith("/") else words[len(parts) - 1] == last


def _scale_down(words: List[str]) -> List[str]:
    plugin = any(w == "--user-dir" or w.startswith(("--user-dir=", "common.user_dir=")) for w in words)
    for prefix, extra in (PLUGIN_SCALE_DOWN if plugin else SCALE_DOWN).items():
        if _starts_with(words, prefix):
            return list(extra)
    return []


def classify(cmd: DocCommand) -> Tuple[str, object]:
    """``("skip", reason)``, ``("run", Plan)`` or ``("unclassified", why)``."""
    if cmd.lang == "python":
        written = FILE_BLOCK.match(cmd.text)
        if written:
            return "run", Plan(cmd.source, "file", cmd.text, written.group(1))
        return "run", Plan(cmd.source, "python", cmd.text, expected_error=cmd.expected_error)
    if cmd.block_is_sbatch_script:
        return "skip", SBATCH_SCRIPT
    for text, reason in NOT_RUN_IF_CONTAINS.items():
        if text in cmd.text:
            return "skip", reason
    try:
        words = _words(cmd.text)
    except ValueError as e:
        return "unclassified", f"not a shell command ({e})"
    if not words:
        return "unclassified", "a variable assignment with no command"
    for prefix, reason in NOT_RUN_PREFIXES.items():
        if _starts_with(words, prefix):
            return "skip", reason
    if "..." in words:
        return "unclassified", "'...' stands for arguments left out: not runnable as written"
    extra = _scale_down(words)
    if _needs_a_shell(cmd.text):
        if words[0] in ("echo", "printf", "cat") or words[0] in console_scripts() or words[0].startswith("python"):
            return "run", Plan(cmd.source, "bash", cmd.text, argv=extra, expected_error=cmd.expected_error)
        return "unclassified", "a shell pipeline of an unknown command"
    scripts = console_scripts()
    if words[0] in scripts:
        return "run", Plan(cmd.source, "entry", cmd.text, scripts[words[0]], words[1:] + extra, cmd.expected_error)
    if words[0] in ("python", "python3"):
        if len(words) >= 3 and words[1] == "-m" and words[2].split(".")[0] in ("fairseq", "fairseq_cli"):
            return "run", Plan(cmd.source, "module", cmd.text, words[2], words[3:] + extra, cmd.expected_error)
        if len(words) >= 2 and words[1].endswith(".py") and words[1].split("/")[0] in (
                "scripts", "benchmarks", "fairseq_cli", "examples"):
            if not (ROOT / words[1]).is_file():
                return "unclassified", f"{words[1]} does not exist"
            return "run", Plan(cmd.source, "script", cmd.text, str(ROOT / words[1]), words[2:] + extra,
                               cmd.expected_error)
    return "unclassified", f"no rule for the command {words[0]!r}"


def documented_commands() -> List[DocCommand]:
    return [cmd for path in DOCS for cmd in extract_commands(path)]


# -- tests ---------------------------------------------------------------------------------------


def test_extractor_reads_blocks_continuations_comments_and_outputs(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n```bash\n# a comment\nfairseq-train demo/data-bin \\\n    --arch transformer_lm  # note\n"
                   "fairseq-hydra-train task.data=x optimization.lr=9\nerror: optimization.lr=[9] is out of range\n"
                   "```\n```\n2026-11-28 09:41:37 | INFO | train | {}\n```\n```yaml\nkey: value\n```\n"
                   "```python\nprint(1)\n```\n```bash\n#SBATCH --nodes=2\nsrun python -m x\n```\n", encoding="utf-8")
    cmds = extract_commands(doc, tmp_path)
    assert [(c.source, c.lang) for c in cmds] == [("x.md:4", "shell"), ("x.md:6", "shell"), ("x.md:15", "python"),
                                                  ("x.md:20", "shell")]
    assert cmds[0].text == "fairseq-train demo/data-bin --arch transformer_lm  # note"
    assert cmds[1].expected_error == "error: optimization.lr=[9] is out of range"
    assert cmds[3].block_is_sbatch_script and classify(cmds[3]) == ("skip", SBATCH_SCRIPT)
    kind, plan = classify(cmds[0])
    assert kind == "run" and plan.kind == "entry" and plan.target == "fairseq_cli.train:cli_main"
    assert plan.argv[:3] == ["demo/data-bin", "--arch", "transformer_lm"] and plan.argv[3:] == TINY_LEGACY
    assert classify(DocCommand("x", "shell", "accelerate launch train.py"))[0] == "unclassified"
    assert classify(DocCommand("x", "shell", "fairseq-train data-bin/wiki ..."))[0] == "unclassified"
    assert classify(DocCommand("x", "shell", "NODE_RANK=0 torchrun -m fairseq_cli.train"))[0] == "skip"
    piped = classify(DocCommand("x", "shell", "echo 'The function' | fairseq-interactive demo/data-bin --path a.pt"))
    assert piped[0] == "run" and piped[1].kind == "bash"
    assert classify(DocCommand("x", "shell", "fairseq-eval-lm d --path a.pt  # a.pt:b.pt > ensembles"))[1].kind == "entry"


def test_worker_reports_exit_codes_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the worker runs in (and returns to) its workdir; restored after
    def run(kind, text, **extra):
        return _run_one(dict(asdict(Plan("x.md:1", kind, text)), **extra), str(tmp_path))

    assert run("bash", "echo hi | grep -q hi")["rc"] == 0
    result = run("bash", "echo 'error: bad value' >&2; exit 3")
    assert result["rc"] == 3 and "error: bad value" in result["stderr"]
    assert run("python", "raise SystemExit(2)")["rc"] == 2
    result = run("python", "import sys\nprint('error: one line', file=sys.stderr)\nraise ValueError('boom')")
    assert result["rc"] == 1 and "error: one line" in result["stderr"] and "ValueError: boom" in result["stderr"]


def test_every_documented_command_is_classified():
    """A command added to the docs is run by the test below or listed here with its reason."""
    problems = [f"{cmd.source}: {cmd.text[:100]!r}: {why}" for cmd in documented_commands()
                for kind, why in [classify(cmd)] if kind == "unclassified"]
    assert not problems, ("commands in the docs that this test neither runs nor lists as not runnable "
                          "(make them runnable as written, or add a rule with the reason to "
                          "tests/test_docs_commands.py):\n" + "\n".join(problems))
    # every rule that skips something still matches a documented command
    texts = [cmd.text for cmd in documented_commands() if cmd.lang == "shell"]
    for text in NOT_RUN_IF_CONTAINS:
        assert any(text in t for t in texts), f"NOT_RUN_IF_CONTAINS[{text!r}] matches no documented command"


def test_defaults_table_of_the_two_doors_is_what_they_do():
    """docs/training.md, "Defaults of the two doors": each row's legacy and Hydra defaults."""
    from fairseq import options
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.overrides import DEFAULT_MAX_TOKENS, check_overrides

    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = text.split("## Defaults of the two doors", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        keys = re.findall(r"`([^`]+)`", cells[0]) if len(cells) == 3 else []
        if len(keys) == 2 and keys[0].startswith("--"):
            rows[keys[1]] = (cells[1], cells[2])
    group_of = {"task": "task", "model": "model", "criterion": "criterion", "optimizer": "optimizer",
                "lr_scheduler": "lr_scheduler"}
    assert set(group_of) | {"dataset.max_tokens"} <= set(rows), rows
    hydra = compose_config(["task.data=x"])
    legacy = options.default_choices()

    def first_name(cell):
        return None if cell.startswith("none") else re.match(r"`([^`]+)`", cell).group(1)

    for key, group in group_of.items():
        legacy_cell, hydra_cell = rows[key]
        assert first_name(legacy_cell) == legacy[group], (key, legacy_cell)
        assert first_name(hydra_cell) == hydra[group]._name, (key, hydra_cell)
    legacy_cell, hydra_cell = rows["dataset.max_tokens"]
    args = options.parse_args_and_arch(options.get_training_parser(), ["x", "--arch", "transformer_lm",
                                                                       "--optimizer", "adam"])
    assert legacy_cell.startswith("none") and args.max_tokens is None and args.batch_size is None
    assert first_name(hydra_cell) == str(DEFAULT_MAX_TOKENS) and hydra.dataset.max_tokens is None
    assert check_overrides(["task.data=x"], default_max_tokens=DEFAULT_MAX_TOKENS)[-1] == \
        f"dataset.max_tokens={DEFAULT_MAX_TOKENS}"


def _workdir(base: Path, data_bin: str) -> Path:
    """A launch directory as the docs assume it: demo/data-bin and demo/text (scripts/demo.sh's
    outputs), data-bin/ (the README's from_pretrained example) and data-bin/wiki (the docs' name)."""
    import shutil

    work = base / "work"
    shutil.copytree(data_bin, work / "demo" / "data-bin")
    text = Path(data_bin).parent / "text"
    if text.is_dir():
        shutil.copytree(text, work / "demo" / "text")
    (work / "data-bin").mkdir()
    for item in (work / "demo" / "data-bin").iterdir():
        (work / "data-bin" / item.name).symlink_to(item)
    (work / "data-bin" / "wiki").symlink_to(work / "demo" / "data-bin")
    return work


@pytest.mark.slow
def test_documented_commands_run_as_written(data_bin, tmp_path):
    from conftest import slowdown

    plans = [plan for cmd in documented_commands() for kind, plan in [classify(cmd)] if kind == "run"]
    assert plans, "no documented command found"
    work = _workdir(tmp_path, data_bin)
    plan_file, results_file = tmp_path / "plan.json", tmp_path / "results.json"
    plan_file.write_text(json.dumps({"workdir": str(work), "results": str(results_file),
                                     "plans": [asdict(p) for p in plans]}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               HYDRA_FULL_ERROR="0", TESTS_SLOWDOWN=str(slowdown()))
    proc = subprocess.run([sys.executable, __file__, str(plan_file)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600 * float(env["TESTS_SLOWDOWN"]))
    assert results_file.is_file(), f"the worker died (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    results = json.loads(results_file.read_text())
    assert len(results) == len(plans), proc.stderr[-3000:]
    failures = []
    for plan, result in zip(plans, results):
        if plan.expected_error:
            ok = result["rc"] != 0 and plan.expected_error in result["stderr"]
        else:  # and no traceback, even from a job a sweeper or launcher ran
            ok = result["rc"] == 0 and "Traceback (most recent call last)" not in result["stderr"]
        if not ok:
            added = " ".join(_scale_down(_words(plan.text))) or "-"
            failures.append(f"{plan.source}: exit {result['rc']} ({result['seconds']:.1f} s): {plan.text[:160]!r}\n"
                            f"    added: {added}\n    stderr tail: {result['stderr'][-1500:]}")
    timing = ", ".join(f"{p.source} {r['seconds']:.1f}s" for p, r in zip(plans, results))
    assert not failures, "documented commands that fail as written:\n" + "\n".join(failures) + f"\n({timing})"


# -- the worker: runs a plan's commands in one process -----------------------------------------


class _Tee:
    """A text stream writing to a buffer and to the real stream."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, text):
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _run_one(plan: Dict, workdir: str) -> Dict:
    import contextlib
    import importlib
    import logging
    import runpy
    import time
    import traceback

    os.chdir(workdir)
    saved_argv, saved_path = list(sys.argv), list(sys.path)
    root_handlers = list(logging.getLogger().handlers)
    err = _Tee(sys.stderr)
    start = time.perf_counter()
    rc = 0
    print(f"\n===== {plan['source']}: {plan['text'][:200]}", file=sys.stderr, flush=True)
    try:
        with contextlib.redirect_stderr(err):
            if plan["kind"] == "file":
                Path(plan["target"]).parent.mkdir(parents=True, exist_ok=True)
                Path(plan["target"]).write_text(plan["text"] + "\n", encoding="utf-8")
            elif plan["kind"] == "entry":
                module, function = plan["target"].split(":")
                sys.argv = [plan["text"].split()[0]] + plan["argv"]
                getattr(importlib.import_module(module), function)(plan["argv"])
            elif plan["kind"] == "module":
                sys.argv = [plan["target"]] + plan["argv"]
                runpy.run_module(plan["target"], run_name="__main__", alter_sys=True)
            elif plan["kind"] == "script":
                sys.argv = [plan["target"]] + plan["argv"]
                sys.path.insert(0, os.path.dirname(plan["target"]))
                runpy.run_path(plan["target"], run_name="__main__")
            elif plan["kind"] == "python":
                exec(compile(plan["text"], plan["source"], "exec"), {"__name__": "__docs__"})  # noqa: S102 -- our own docs' code, the test's subject
            elif plan["kind"] == "bash":
                command = plan["text"] + "".join(" " + shlex.quote(a) for a in plan["argv"])
                # the test passed its measured slowdown (conftest.slowdown) down to this worker
                limit = 300 * float(os.environ.get("TESTS_SLOWDOWN", "1"))
                proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=limit)
                err.write(proc.stderr)
                rc = proc.returncode
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            err.write(e.code + "\n")
    except BaseException:  # noqa: BLE001 -- a documented command must not end in a traceback
        err.write(traceback.format_exc())
        rc = 1
    finally:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        root = logging.getLogger()
        for handler in list(root.handlers):
            if handler not in root_handlers:
                root.removeHandler(handler)
        # a plugin a command imported stays registered in this process, and its directory stays
        # at the end of sys.path (import_user_module puts it there for launcher workers)
        appended = [p for p in sys.path[len(saved_path):] if p not in saved_path] if sys.path[:len(saved_path)] == saved_path else []
        sys.argv, sys.path[:] = saved_argv, saved_path + appended
        os.chdir(workdir)
    return {"rc": rc, "stderr": "".join(err.parts), "seconds": time.perf_counter() - start}


def _worker(plan_path: str) -> None:
    spec = json.loads(Path(plan_path).read_text())
    results = [_run_one(plan, spec["workdir"]) for plan in spec["plans"]]
    Path(spec["results"]).write_text(json.dumps(results))


if __name__ == "__main__":
    _worker(sys.argv[1])
