"""One home per helper (issue 26, part G).

* no module of ``fairseq``/``fairseq_cli`` imports another module's ``_private`` name;
* the safetensors pair has one module (``fairseq.checkpoint.pair``), which saving uses without
  importing loading, and no checkpoint module is over 600 lines;
* every command's error wrapper is ``fairseq_cli.common``'s, fairseq-preprocess included;
* shims are gone (``fairseq.checkpoint_integrity``, PID-less temporaries), and an argument kept
  for fairseq's signatures that changes nothing warns once.
"""
import ast
import logging
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules(*packages):
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path


def _private_imports(path: Path):
    """``(line, module, name)`` of every ``from fairseq... import _name`` in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("fairseq", "fairseq_cli"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield node.lineno, node.module, alias.name


def test_no_module_imports_another_modules_private_name():
    found = [f"{path.relative_to(ROOT)}:{line}: from {module} import {name}"
             for path in _modules("fairseq", "fairseq_cli") for line, module, name in _private_imports(path)]
    assert found == []


def test_the_scan_sees_a_private_import(tmp_path):
    # the test above would pass on a scan that finds nothing
    sample = tmp_path / "sample.py"
    sample.write_text("from fairseq.file_io import atomic_write, _hidden\nfrom os import _exit\n")
    assert list(_private_imports(sample)) == [(1, "fairseq.file_io", "_hidden")]


def _imported_modules(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_saving_does_not_import_loading_and_checkpoint_modules_stay_small():
    checkpoint = ROOT / "fairseq" / "checkpoint"
    assert "fairseq.checkpoint.loading" not in set(_imported_modules(checkpoint / "saving.py"))
    sizes = {p.name: len(p.read_text().splitlines()) for p in checkpoint.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 600} == {}
    assert "pair.py" in sizes


def test_the_pair_format_has_one_home():
    from fairseq.checkpoint import pair

    for name in ("weights_path", "state_file_path", "write_pair", "save_pair", "read_weights",
                 "interrupted_save_weights", "tidy_pairs", "remove_checkpoint"):
        assert callable(getattr(pair, name)), name
    # defined there and nowhere else among the checkpoint modules
    for path in (ROOT / "fairseq" / "checkpoint").glob("*.py"):
        if path.name != "pair.py":
            defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
            assert not defined & {"weights_path", "write_pair", "_write_pair", "read_weights", "_read_weights",
                                  "interrupted_save_weights", "_complete_pairs"}, path.name
    # the documented import path of save_pair still works
    from fairseq.checkpoint.saving import save_pair

    assert save_pair is pair.save_pair


def test_atomic_writes_have_one_public_home(tmp_path):
    from fairseq import file_io

    target = tmp_path / "out.bin"
    file_io.atomic_write(str(target), lambda f: f.write(b"abc"))
    file_io.atomic_write_path(str(tmp_path / "other.bin"), lambda tmp: Path(tmp).write_bytes(b"xyz"))
    assert target.read_bytes() == b"abc" and (tmp_path / "other.bin").read_bytes() == b"xyz"
    assert file_io.temp_prefix(str(target)) == f".tmp_out.bin.{os.getpid()}."
    assert 0 <= file_io.umask() <= 0o777
    assert sorted(os.listdir(tmp_path)) == ["other.bin", "out.bin"]  # no temporary left
    for old in ("_atomic_write", "_atomic_write_path", "_fsync_dir", "_temp_prefix", "_umask"):
        assert not hasattr(file_io, old), old


def test_checkpoint_utils_keeps_fairseqs_names_and_no_private_ones():
    from fairseq import checkpoint_utils

    for name in ("load_checkpoint_to_cpu", "load_model_ensemble", "load_model_ensemble_and_task",
                 "save_checkpoint", "load_checkpoint", "torch_persistent_save", "prune_state_dict",
                 "verify_checkpoint_directory", "load_ema_from_checkpoint"):
        assert callable(getattr(checkpoint_utils, name)), name
    for old in ("_atomic_write", "_fsync_dir", "_temp_prefix", "_umask"):
        assert not hasattr(checkpoint_utils, old), old


def test_the_shims_are_gone():
    with pytest.raises(ModuleNotFoundError):
        __import__("fairseq.checkpoint_integrity")
    from fairseq.distributed import utils

    assert not hasattr(utils, "_export_slurm_env") and callable(utils.export_slurm_env)


# -- the error wrapper of every command ------------------------------------------------------------
def test_every_command_takes_the_wrapper_from_common():
    users = []
    for path in _modules("fairseq_cli"):
        imported = set(_imported_modules(path))
        assert "fairseq_cli.train.run_with_clear_errors" not in imported, path.name
        assert not {m for m in imported if m.startswith("fairseq_cli.eval_lm.")} - {"fairseq_cli.eval_lm.eval_lm"}, path.name
        if {"fairseq_cli.common.run_with_clear_errors", "fairseq_cli.common.run_as_command"} & imported:
            users.append(path.name)
    assert {"train.py", "eval_lm.py", "validate.py", "generate.py", "interactive.py", "preprocess.py",
            "export_hf.py", "import_hf.py", "hydra_convert.py", "hydra_eval.py", "train_hydra.py"} <= set(users)


@pytest.mark.parametrize("prog, prefix", [(None, ""), ("fairseq-preprocess", "fairseq-preprocess: ")])
def test_the_wrapper_ends_a_user_error_in_one_line(prog, prefix, capsys):
    from fairseq.errors import ConfigError, DiskFullError
    from fairseq_cli.common import run_as_command, run_with_clear_errors

    def run(fn, *args):
        return run_with_clear_errors(fn, *args) if prog is None else run_as_command(prog, fn, *args)

    def fail(error):
        raise error

    assert run(lambda x: x + 1, 1) == 2
    for error, code in ((ConfigError("task.data='x' (--data) does not exist; give a directory"), 2),
                        (DiskFullError("no space left on device while writing x.pt"), 1), (KeyboardInterrupt(), 130)):
        with pytest.raises(SystemExit) as info:
            run(fail, error)
        err = capsys.readouterr().err
        assert info.value.code == code and err.count("\n") == 1 and err.startswith(prefix), err
        assert "Traceback" not in err


def test_preprocess_keeps_its_message_and_exit_code(tmp_path, capsys):
    from fairseq_cli import preprocess

    with pytest.raises(SystemExit) as info:
        preprocess.cli_main(["--only-source", "--trainpref", str(tmp_path / "missing"),
                             "--destdir", str(tmp_path / "bin")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("fairseq-preprocess: error: ") and err.count("\n") == 1


# -- arguments that change nothing warn once -------------------------------------------------------
def test_symbols_to_strip_from_output_warns_once(caplog):
    import torch

    from fairseq import sequence_generator
    from fairseq.data import Dictionary

    class Tiny(torch.nn.Module):
        def max_decoder_positions(self):
            return 8

    sequence_generator._warned_no_effect.discard("SequenceGenerator(symbols_to_strip_from_output=...)")
    with caplog.at_level(logging.WARNING, logger="fairseq.sequence_generator"):
        sequence_generator.SequenceGenerator([Tiny()], Dictionary())
        assert not caplog.records  # the default: nothing to say
        for _ in range(2):
            sequence_generator.SequenceGenerator([Tiny()], Dictionary(), symbols_to_strip_from_output={3})
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "symbols_to_strip_from_output" in messages[0] and "no effect" in messages[0]


def test_ignored_get_train_iterator_arguments_warn_once(monkeypatch, caplog):
    from fairseq import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "get_train_iterator", lambda cfg, task, epoch: ("itr", epoch))
    monkeypatch.setattr(trainer_module, "_warned_no_effect", set())

    class Fake:
        cfg, task = None, None

    with caplog.at_level(logging.WARNING, logger="fairseq.trainer"):
        assert trainer_module.Trainer.get_train_iterator(Fake(), 2, load_dataset=True) == ("itr", 2)
        assert not caplog.records  # fairseq's own default values: nothing to say
        for _ in range(2):
            trainer_module.Trainer.get_train_iterator(Fake(), 3, combine=False, disable_iterator_cache=True)
    messages = sorted(r.getMessage() for r in caplog.records)
    assert len(messages) == 2 and "combine=" in messages[0] and "disable_iterator_cache=" in messages[1]
