#!/usr/bin/env python3
"""Run fairseq 0.12.2's own unit tests for the language-modeling scope against this package.

fairseq's tests are its code, so they are not part of this repository: point this script at a
fairseq 0.12.2 source tree (a checkout, or ``git archive v0.12.2 tests`` unpacked) and it copies
the in-scope test files into a scratch directory, puts this package first on ``sys.path`` and
runs pytest there::

    python scripts/run_fairseq_tests.py /path/to/fairseq-0.12.2 [-- extra pytest args]

Tests that need another task or model (translation, dummy tasks, LSTM, ...) are deselected and
listed with the reason. fairseq's ``tests/utils.py`` imports a few modules of those other tasks
at import time; where this package lacks one of them, a placeholder module is installed that
fails loudly when used, and the script prints which placeholders it needed, so a test that
depends on one fails rather than passes.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IN_SCOPE_FILES = [
    "test_dataclass_utils.py", "test_checkpoint_utils.py", "test_train.py", "test_iterators.py",
    "test_token_block_dataset.py", "test_dictionary.py", "test_lm_context_window.py",
    "test_data_utils.py", "test_valid_subset_checks.py", "test_utils.py", "test_metrics.py",
    "test_binaries.py",
]

# test_binaries.py: only its transformer_lm tests are in scope.
BINARIES_IN_SCOPE = ["test_transformer_lm", "test_normformer_lm",
                     "test_transformer_lm_with_adaptive_softmax"]

OUT_OF_SCOPE = {
    "test_checkpoint_utils.py::TestCheckpointUtils::test_load_model_ensemble_and_task":
        "trains a translation transformer",
    "test_checkpoint_utils.py::TestCheckpointUtils::test_prune_state_dict":
        "trains a translation transformer",
    "test_valid_subset_checks.py::TestValidSubsetsErrors::test_dummy_task": "dummy_lm task",
    "test_valid_subset_checks.py::TestValidSubsetsErrors::test_masked_dummy_task":
        "dummy_masked_lm task",
}

# fairseq 0.12's own test files that cannot run on Python >= 3.11 as written: a dataclass
# instance as a field default ("mutable default ... use default_factory"; fairseq issue #5012).
# The fix changes nothing else: ``field(default=X())`` becomes ``field(default_factory=X)``.
PY311_DEFAULT_FIX = {"test_dataclass_utils.py"}

# Modules fairseq's tests/utils.py imports at module level, and what they are for.
PLACEHOLDERS = {
    "fairseq_cli.generate": "generation (the notebook-door issue)",
    "fairseq_cli.interactive": "interactive generation (the notebook-door issue)",
}

CONFTEST = '''
import importlib
import sys
import types

sys.path.insert(0, {root!r})
_NEEDED = []
for _name, _why in {placeholders!r}.items():
    try:
        importlib.import_module(_name)
    except ImportError:
        _module = types.ModuleType(_name)

        def _missing(*args, _name=_name, _why=_why, **kwargs):
            raise NotImplementedError(f"{{_name}} is not in this package yet: {{_why}}")

        _module.main = _missing
        _module.cli_main = _missing
        sys.modules[_name] = _module
        _NEEDED.append(_name)


def pytest_report_header(config):
    import fairseq
    lines = ["fairseq package under test: " + fairseq.__file__]
    if _NEEDED:
        lines.append("placeholders (fail when used): " + ", ".join(_NEEDED))
    return lines
'''


def selected_ids(tests_dir: Path) -> list:
    ids = []
    for name in IN_SCOPE_FILES:
        if name == "test_binaries.py":
            ids += [f"tests/{name}::TestLanguageModeling::{t}" for t in BINARIES_IN_SCOPE]
        else:
            ids.append(f"tests/{name}")
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fairseq_src", help="a fairseq 0.12.2 source tree (with tests/)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()

    source = Path(args.fairseq_src) / "tests"
    if not (source / "utils.py").is_file():
        parser.error(f"{source} is not fairseq's tests directory (no utils.py there)")
    scratch = Path(tempfile.mkdtemp(prefix="fairseq_tests_"))
    tests = scratch / "tests"
    tests.mkdir()
    for name in ["__init__.py", "utils.py"] + IN_SCOPE_FILES:
        shutil.copy(source / name, tests / name)
    for name in PY311_DEFAULT_FIX:
        path = tests / name
        text = path.read_text()
        fixed = re.sub(r"field\(default=(\w+)\(\)\)", r"field(default_factory=\1)", text)
        if fixed != text:
            print(f"{name}: dataclass-instance defaults changed to default_factory (Python 3.11)")
            path.write_text(fixed)
    (scratch / "conftest.py").write_text(CONFTEST.format(root=str(ROOT), placeholders=PLACEHOLDERS))
    deselect = []
    for node, reason in OUT_OF_SCOPE.items():
        print(f"deselected (out of scope: {reason}): {node}")
        deselect += ["--deselect", f"tests/{node}"]
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE",
               *selected_ids(tests), *deselect, *args.pytest_args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        return subprocess.call(command, cwd=scratch, env=env)
    finally:
        if args.keep:
            print(f"scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
