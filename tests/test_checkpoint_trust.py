"""Loading a checkpoint runs no code it names, and refuses tensors flipped on disk.

* the ``common.user_dir`` a checkpoint records is never imported: only the user's ``--user-dir``
  (``common.user_dir=``, ``from_pretrained(..., user_dir=...)``) is;
* every checkpoint carries the SHA-256 of its tensors; a mismatch is one line, exit code 1.
"""
import logging
import os
import sys
import zipfile

import pytest
import torch

from conftest import ROOT, run_in, run_forked

MARKER = "PLUGIN_RAN"
PLUGIN = f'''
import os
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "{MARKER}"), "w").close()
from fairseq.models import register_model
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig

@register_model("archive_lm", dataclass=TransformerLanguageModelConfig)
class ArchiveLM(TransformerLanguageModel):
    pass
'''


def _archive(tiny_checkpoint, data_bin, directory, model_name="transformer_lm"):
    """A model archive: ``model.pt`` (trained with ``--user-dir helpers``), ``dict.txt`` and
    ``helpers/__init__.py``, which creates ``MARKER`` in the archive when imported."""
    from fairseq.checkpoint.integrity import with_integrity

    directory.mkdir()
    state = torch.load(tiny_checkpoint / "checkpoint_last.pt", weights_only=True)
    state["cfg"]["common"]["user_dir"] = "helpers"  # relative: resolved against the cwd
    state["cfg"]["model"]["_name"] = model_name
    torch.save(with_integrity(state), directory / "model.pt")
    (directory / "dict.txt").write_text(open(os.path.join(data_bin, "dict.txt")).read())
    helpers = directory / "helpers"
    helpers.mkdir()
    (helpers / "__init__.py").write_text(PLUGIN)
    return directory


def _eval_lm(cwd, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return run_forked("module", "fairseq_cli.eval_lm", args, cwd, env=env, base_timeout=180)


def test_a_checkpoints_own_user_dir_is_never_imported(tiny_checkpoint, data_bin, tmp_path, monkeypatch):
    from fairseq import hub_utils
    from fairseq_cli import eval_lm

    archive = _archive(tiny_checkpoint, data_bin, tmp_path / "archive")
    monkeypatch.chdir(archive)  # where "helpers" would resolve
    results = eval_lm.main([data_bin, "--path", "model.pt", "--num-workers", "0", "--max-tokens", "512"])
    assert results["perplexity"] > 1
    loaded = hub_utils.from_pretrained(str(archive), "model.pt", tokens_per_sample=32)
    assert loaded["models"] and loaded["cfg"].common.user_dir == "helpers"
    assert not (archive / MARKER).exists() and "helpers" not in sys.modules


def test_a_plugin_model_needs_the_user_dir_given_explicitly(tiny_checkpoint, data_bin, tmp_path):
    archive = _archive(tiny_checkpoint, data_bin, tmp_path / "archive", model_name="archive_lm")
    refused = _eval_lm(archive, data_bin, "--path", "model.pt", "--num-workers", "0")
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert "'archive_lm'" in line and "--user-dir helpers" in line and "explicitly" in line
    assert not (archive / MARKER).exists()
    loaded = _eval_lm(archive, data_bin, "--path", "model.pt", "--num-workers", "0", "--user-dir", "helpers",
                      "--max-tokens", "512")
    assert loaded.returncode == 0, loaded.stderr
    assert "Perplexity" in loaded.stderr + loaded.stdout and (archive / MARKER).exists()


def test_a_plugin_dir_named_like_another_module_is_refused(tmp_path):
    from fairseq.dataclass.initialize import import_user_module
    from fairseq.dataclass.overrides import ConfigError

    for name in ("json", "fairseq", "csv"):  # imported (json, fairseq) or only importable (csv)
        plugin = tmp_path / name
        plugin.mkdir()
        (plugin / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
        with pytest.raises(ConfigError, match=f"directory name '{name}' is already the name of the module"):
            import_user_module(str(plugin))
    assert not (tmp_path / "ran").exists()
    import json

    assert json.dumps([1]) == "[1]"


def _flip_tensor_bytes(path, tensor):
    """Change one float of ``tensor`` inside the checkpoint file at ``path``, in place."""
    raw = tensor.detach().contiguous().numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw[:64])
    assert at > 0 and data.find(raw[:64], at + 1) == -1, "the tensor's bytes are not unique"
    data[at + 5] ^= 0x40
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as z:  # still a well-formed zip: only its payload changed
        assert any(n.endswith("data.pkl") for n in z.namelist())


@pytest.fixture
def corrupt_run(tiny_checkpoint, tmp_path):
    """A copy of the tiny run whose checkpoint_last.pt has one flipped byte in a weight."""
    import shutil

    save_dir = tmp_path / "run"
    save_dir.mkdir()
    shutil.copy(tiny_checkpoint / "checkpoint_last.pt", save_dir / "checkpoint_last.pt")
    shutil.copy(tiny_checkpoint / "checkpoint_best.pt", save_dir / "checkpoint_best.pt")
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    assert state["integrity"]["covers"] == "checkpoint" and len(state["integrity"]["sha256"]) == 64
    _flip_tensor_bytes(save_dir / "checkpoint_last.pt", state["model"]["decoder.layers.0.fc1.weight"])
    flipped = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)  # torch does not notice
    assert not torch.equal(flipped["model"]["decoder.layers.0.fc1.weight"],
                           state["model"]["decoder.layers.0.fc1.weight"])
    return save_dir


def test_flipped_bytes_are_refused_by_eval_lm_and_restore(corrupt_run, data_bin, capsys):
    from fairseq_cli import eval_lm

    path = corrupt_run / "checkpoint_last.pt"
    evaluated = run_in(corrupt_run, eval_lm.cli_main, [data_bin, "--path", str(path), "--num-workers", "0"], capsys)
    assert evaluated.returncode == 1, evaluated.stderr
    lines = evaluated.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in evaluated.stderr
    assert (f"{path} is corrupt: its tensors do not match the SHA-256 stored when it was written; "
            "use another checkpoint") in lines[0]
    assert "checkpoint_best.pt" in lines[0]  # the other file beside it is named

    from fairseq_cli import train

    with pytest.raises(SystemExit) as stop:
        train.cli_main([data_bin, "--task", "language_modeling", "--arch", "transformer_lm",
                        "--decoder-layers", "1", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
                        "--decoder-attention-heads", "2", "--tokens-per-sample", "32", "--max-tokens", "512",
                        "--optimizer", "adam", "--lr", "0.005", "--max-update", "31", "--save-dir",
                        str(corrupt_run), "--no-epoch-checkpoints", "--log-format", "none", "--seed", "1",
                        "--share-decoder-input-output-embed"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {path} is corrupt: its tensors do not match the SHA-256"), err
    assert path.stat().st_size > 0  # refused before anything was written over it


def test_every_loader_verifies_and_saves_carry_the_digest(corrupt_run, tiny_checkpoint, tmp_path, caplog):
    from fairseq import checkpoint_utils
    from fairseq.checkpoint.integrity import tensor_digest

    path = str(corrupt_run / "checkpoint_last.pt")
    for load in (checkpoint_utils.load_checkpoint_to_cpu, checkpoint_utils.load_ema_from_checkpoint):
        with pytest.raises(checkpoint_utils.CheckpointError, match="is corrupt: its tensors do not match"):
            load(path)
    raw = torch.load(tiny_checkpoint / "checkpoint_last.pt", weights_only=True)
    good = checkpoint_utils.load_checkpoint_to_cpu(str(tiny_checkpoint / "checkpoint_last.pt"))
    # the record covers the file's tensors (weights in fairseq's key layout, given our keys back on load)
    assert raw["integrity"]["tensors_sha256"] == tensor_digest(raw) and "integrity" not in good  # checked, then dropped
    # a script that drops the optimizer state and saves with torch.save: named as an edit
    edited = torch.load(tiny_checkpoint / "checkpoint_last.pt", weights_only=True)
    del edited["optimizer"]
    torch.save(edited, tmp_path / "edited.pt")
    with pytest.raises(checkpoint_utils.CheckpointError, match="was changed after it was written.*"
                       "torch_persistent_save"):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "edited.pt"))
    # fairseq's torch_persistent_save writes the digest too; a file without one loads with a warning
    checkpoint_utils.torch_persistent_save({"model": good["model"], "cfg": good["cfg"]}, str(tmp_path / "p.pt"))
    assert "integrity" in torch.load(tmp_path / "p.pt", weights_only=True)
    # loaded through the loader, then saved again: no stale digest left, loads with the warning
    torch.save(good, tmp_path / "bare.pt")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "bare.pt"))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"{tmp_path / 'bare.pt'} carries no SHA-256 of its tensors (written by fairseq or an older "
        "version of this package): it loads unverified"]
