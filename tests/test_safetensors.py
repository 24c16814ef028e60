"""``checkpoint.save_format=safetensors``: each checkpoint is a pair, ``NAME.pt`` (training state,
no weights) and ``NAME.safetensors`` (the weights), and every loader reads it.

* both doors write pairs (``--save-format safetensors``, ``checkpoint.save_format=safetensors``);
  the ``.pt`` holds no model and names the weights' SHA-256, the ``.safetensors`` is a plain
  weights file other tools read (tied embeddings stored once, named in its metadata);
* a run resumed from a pair (written in the background with ``--save-async``) logs the losses
  of an uninterrupted run; pruning (``keep_interval_updates``) removes both files of a name;
* ``fairseq-eval-lm`` on a pair (by its ``.pt`` or its ``.safetensors``) equals it on a single
  ``.pt`` of the same weights; ``from_pretrained`` reads the pair;
* a flipped byte in the weights, a missing or swapped weights file, a ``.safetensors`` without
  its ``.pt``: one line each, exit code 1 from the command;
* a save killed between its two renames, or between the links of its names, is completed by the
  next load or save; a save in the other format removes the weights its names no longer use.
"""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import train_losses, run_forked

pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parent.parent


def tiny_args(data, save_dir, log_file, max_update, extra=()):
    return [
        data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "32",
        "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
        "--share-decoder-input-output-embed", "--optimizer", "adam", "--lr", "0.003",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5", "--tokens-per-sample", "32",
        "--max-tokens", "128", "--max-update", str(max_update), "--log-format", "json",
        "--log-interval", "1", "--num-workers", "0", "--save-dir", save_dir, "--log-file", log_file,
        "--save-interval-updates", "2", "--keep-interval-updates", "2", "--seed", "7",
        "--save-format", "safetensors",
    ] + list(extra)


def train(argv):
    from fairseq_cli import train as train_cli

    train_cli.cli_main(argv)


def names(directory):
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def same_file(a, b):
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)


@pytest.fixture(scope="module")
def runs(data_bin, tmp_path_factory):
    """An uninterrupted run of 8 updates and one stopped at 5 and resumed to 8 (its second part
    writing in the background), both saving safetensors pairs."""
    base = tmp_path_factory.mktemp("safetensors_runs")
    full, part = str(base / "full"), str(base / "part")
    train(tiny_args(data_bin, full, str(base / "full.log"), 8))
    train(tiny_args(data_bin, part, str(base / "part.log"), 5))
    state = torch.load(os.path.join(part, "checkpoint_last.pt"), weights_only=True)
    assert state["num_updates"] == 5
    train(tiny_args(data_bin, part, str(base / "part.log"), 8, ["--save-async"]))
    return {"base": base, "full": Path(full), "part": Path(part), "data": data_bin,
            "full_log": str(base / "full.log"), "part_log": str(base / "part.log")}


def test_pairs_are_written_and_pruned_together(runs):
    from safetensors import safe_open

    full = runs["full"]
    assert names(full) == ["checkpoint_1_6.pt", "checkpoint_1_6.safetensors", "checkpoint_1_8.pt",
                           "checkpoint_1_8.safetensors", "checkpoint_best.pt", "checkpoint_best.safetensors",
                           "checkpoint_last.pt", "checkpoint_last.safetensors", "config.json"]
    assert names(runs["part"]) == names(full)  # the resumed run pruned 1_2 and 1_4 as pairs
    state = torch.load(full / "checkpoint_last.pt", weights_only=True)
    assert "model" not in state and {"optimizer", "lr_scheduler", "extra_state", "cfg"} <= set(state)
    record = state["model_safetensors"]
    assert record["file"] == "checkpoint_last.safetensors" and len(record["sha256"]) == 64
    assert record["bytes"] == os.path.getsize(full / "checkpoint_last.safetensors")
    assert record["aliases"] == {"decoder.output_projection.weight": "decoder.embed_tokens.weight"}
    # every name of one save is a link to the same two files
    assert same_file(full / "checkpoint_1_8.pt", full / "checkpoint_last.pt")
    assert same_file(full / "checkpoint_1_8.safetensors", full / "checkpoint_last.safetensors")
    assert os.stat(full / "checkpoint_last.safetensors").st_mode & 0o777 == 0o666 & ~_umask()
    # a plain weights file for other tools: the tied embedding once, the alias in the metadata
    with safe_open(str(full / "checkpoint_last.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.metadata()["fairseq_checkpoint"] == "checkpoint_last.pt"
        assert "decoder.output_projection.weight" in f.metadata()["aliases"]
    assert "decoder.embed_tokens.weight" in keys and "decoder.output_projection.weight" not in keys


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_resume_from_a_pair_logs_the_uninterrupted_losses(runs):
    full, part = train_losses(runs["full_log"]), train_losses(runs["part_log"])
    assert len(full) == 8 and part == full


def test_every_loader_reads_the_pair_and_eval_lm_equals_the_pt_of_the_same_weights(runs, tmp_path):
    from fairseq import checkpoint_utils
    from fairseq.models.transformer_lm import TransformerLanguageModel
    from fairseq_cli import eval_lm

    pair = runs["full"] / "checkpoint_best.pt"
    state = checkpoint_utils.load_checkpoint_to_cpu(str(pair))
    assert "model_safetensors" not in state
    model = state["model"]
    assert model["decoder.output_projection.weight"] is model["decoder.embed_tokens.weight"]
    assert "decoder.layers.0" in model._metadata
    single = tmp_path / "single.pt"  # the same weights and state as one .pt
    checkpoint_utils.torch_persistent_save(state, str(single))
    again = checkpoint_utils.load_checkpoint_to_cpu(str(single))
    assert all(torch.equal(again["model"][k], v) for k, v in model.items())
    by_name = checkpoint_utils.load_checkpoint_to_cpu(str(runs["full"] / "checkpoint_best.safetensors"))
    assert all(torch.equal(by_name["model"][k], v) for k, v in model.items())

    def score(path, *extra):
        return eval_lm.main([runs["data"], "--path", str(path), "--log-format", "none", *extra])

    reference = score(single)
    assert score(pair) == reference
    assert score(runs["full"] / "checkpoint_best.safetensors") == reference
    assert score(pair, "--context-window", "8") == score(single, "--context-window", "8")
    from fairseq.checkpoint.saving import save_pair  # and a single .pt written as a pair again

    save_pair(checkpoint_utils.load_checkpoint_to_cpu(str(single)), str(tmp_path / "again.pt"))
    from safetensors.torch import load_file

    written, original = load_file(tmp_path / "again.safetensors"), load_file(pair.with_suffix(".safetensors"))
    assert written.keys() == original.keys() and all(torch.equal(written[k], original[k]) for k in written)
    assert score(tmp_path / "again.pt") == reference
    assert reference["ntokens"] > 500 and math.isfinite(reference["loss"])

    lm = TransformerLanguageModel.from_pretrained(str(runs["full"]), "checkpoint_best.safetensors",
                                                  data_name_or_path=runs["data"])
    ref = TransformerLanguageModel.from_pretrained(str(tmp_path), "single.pt", data_name_or_path=runs["data"])
    text = "The function returns a value ."
    assert torch.equal(lm.score(text)["positional_scores"], ref.score(text)["positional_scores"])


def _copy_pair(src_dir, name, dst_dir, as_name=None):
    as_name = as_name or name
    dst_dir.mkdir(exist_ok=True)
    for ext in (".pt", ".safetensors"):
        shutil.copy(src_dir / (name + ext), dst_dir / (as_name + ext))
    return dst_dir / (as_name + ".pt")


def _eval_lm_cli(data, path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return run_forked("module", "fairseq_cli.eval_lm", [data, "--path", str(path)], os.getcwd(), env=env,
                      base_timeout=120)


def test_a_flipped_byte_in_the_weights_is_refused_in_one_line(runs, tmp_path):
    from fairseq import checkpoint_utils
    from fairseq.errors import CheckpointError

    pt = _copy_pair(runs["full"], "checkpoint_best", tmp_path / "ck")
    weights = pt.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[len(data) - 17] ^= 0x01  # inside the last tensor's bytes: the header still parses
    weights.write_bytes(bytes(data))
    for given in (pt, weights):
        with pytest.raises(CheckpointError) as e:
            checkpoint_utils.load_checkpoint_to_cpu(str(given))
        text = str(e.value)
        assert "\n" not in text and "is corrupt or not the weights saved with checkpoint_best.pt" in text
    result = _eval_lm_cli(runs["data"], pt)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "SHA-256" in error[0], result.stderr


@pytest.mark.parametrize("case, expected", [
    ("missing", "keeps its model weights in checkpoint_best.safetensors beside it"),
    ("swapped", "is corrupt or not the weights saved with checkpoint_best.pt"),
    ("weights_alone", "holds model weights only"),
    ("single_pt", "is a checkpoint of its own"),
])
def test_an_incomplete_or_mixed_pair_is_one_line(runs, tmp_path, case, expected):
    from fairseq import checkpoint_utils
    from fairseq.errors import CheckpointError

    pt = _copy_pair(runs["full"], "checkpoint_best", tmp_path / "ck")
    weights = pt.with_suffix(".safetensors")
    given = pt
    if case == "missing":
        weights.unlink()
    elif case == "swapped":  # the weights of another save of the same run
        shutil.copy(runs["part"] / "checkpoint_1_6.safetensors", weights)
    elif case == "weights_alone":
        pt.unlink()
        given = weights
    else:  # a single .pt written over a pair's name, its old weights left beside it
        state = checkpoint_utils.load_checkpoint_to_cpu(str(pt))
        checkpoint_utils.torch_persistent_save(state, str(pt))
        given = weights
    with pytest.raises(CheckpointError) as e:
        checkpoint_utils.load_checkpoint_to_cpu(str(given))
    assert "\n" not in str(e.value) and expected in str(e.value), str(e.value)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_save_killed_between_its_two_renames_is_completed_by_the_next_load(runs, tmp_path, caplog):
    """The new .pt is in place, its weights still under their temporary name, the old weights
    under the final one: the load finds the weights by their SHA-256 and completes the save."""
    from fairseq import checkpoint_utils

    ck = tmp_path / "ck"
    new = _copy_pair(runs["full"], "checkpoint_1_8", ck, "checkpoint_last")
    weights = new.with_suffix(".safetensors")
    temp = ck / f".tmp_checkpoint_last.safetensors.{_dead_pid()}.k1ll3d"
    os.replace(weights, temp)
    shutil.copy(runs["full"] / "checkpoint_1_6.safetensors", weights)  # the previous save's weights
    expected = (runs["full"] / "checkpoint_1_8.safetensors").read_bytes()

    live = ck / f".tmp_checkpoint_last.safetensors.{os.getpid()}.wr1t1ng"
    shutil.copy(temp, live)  # a writer still renaming (this process): read where it is
    state = checkpoint_utils.load_checkpoint_to_cpu(str(new))
    assert live.exists() and weights.read_bytes() != expected and "model" in state
    live.unlink()

    with caplog.at_level("WARNING"):
        state = checkpoint_utils.load_checkpoint_to_cpu(str(new))
    assert "completed the save that was interrupted" in caplog.text
    assert weights.read_bytes() == expected and not temp.exists()
    reference = checkpoint_utils.load_checkpoint_to_cpu(str(runs["full"] / "checkpoint_1_8.pt"))
    assert all(torch.equal(state["model"][k], v) for k, v in reference["model"].items())


def test_a_live_writers_temporary_wins_whatever_the_order_of_the_names(runs, tmp_path):
    """A dead writer's temporary whose name sorts first (pid 0999999999: no such process) and
    a live writer's with the same weights: the load reads the live one and renames nothing."""
    from fairseq import checkpoint_utils

    ck = tmp_path / "ck"
    new = _copy_pair(runs["full"], "checkpoint_1_8", ck, "checkpoint_last")
    weights = new.with_suffix(".safetensors")
    dead = ck / ".tmp_checkpoint_last.safetensors.0999999999.k1ll3d"
    os.replace(weights, dead)
    shutil.copy(runs["full"] / "checkpoint_1_6.safetensors", weights)
    previous = weights.read_bytes()
    live = ck / f".tmp_checkpoint_last.safetensors.{os.getpid()}.wr1t1ng"
    shutil.copy(dead, live)
    assert sorted([dead.name, live.name])[0] == dead.name
    state = checkpoint_utils.load_checkpoint_to_cpu(str(new))
    assert "model" in state and dead.exists() and live.exists() and weights.read_bytes() == previous


def test_a_save_killed_between_the_links_of_its_names_is_completed_at_the_rerun(runs, tmp_path):
    """``checkpoint_last`` is the new pair, ``checkpoint_best`` still the previous save's: the rerun
    links the .pt (restore_save_names) and the weights follow it (pruning completes pairs)."""
    from omegaconf import OmegaConf

    from fairseq import checkpoint_utils
    from fairseq.dataclass.configs import CheckpointConfig

    ck = tmp_path / "ck"
    last = _copy_pair(runs["full"], "checkpoint_last", ck)
    _copy_pair(runs["part"], "checkpoint_1_6", ck, "checkpoint_best")  # an older, whole pair
    stray = ck / f".tmp_checkpoint_best.safetensors.{_dead_pid()}.l1nk"
    stray.write_bytes(b"partial")
    extra = torch.load(last, weights_only=True)["extra_state"]
    assert "checkpoint_best.pt" in extra["saved_as"]
    done = checkpoint_utils.restore_save_names(str(last), extra, OmegaConf.structured(CheckpointConfig))
    assert "checkpoint_best.pt" in done
    assert same_file(ck / "checkpoint_best.pt", last)
    assert same_file(ck / "checkpoint_best.safetensors", last.with_suffix(".safetensors"))
    assert not stray.exists()  # a dead writer's temporary weights no .pt names
    checkpoint_utils.load_checkpoint_to_cpu(str(ck / "checkpoint_best.pt"))


def test_both_doors_save_pairs_and_a_pt_save_drops_the_pairs_weights(data_bin, tmp_path, monkeypatch):
    import warnings

    from fairseq import checkpoint_utils
    from fairseq_cli import train_hydra

    hydra_dir = tmp_path / "h"
    hydra_dir.mkdir()
    monkeypatch.chdir(hydra_dir)
    monkeypatch.setattr(sys, "argv", ["fairseq-hydra-train"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_hydra.cli_main([
            f"task.data={data_bin}", "task.tokens_per_sample=32", "model=transformer_lm",
            "model.decoder_layers=1", "model.decoder_embed_dim=32", "model.decoder_ffn_embed_dim=64",
            "model.decoder_attention_heads=2", "optimizer=adam", "optimization.lr=[0.003]",
            "dataset.max_tokens=128", "dataset.num_workers=0", "optimization.max_update=2",
            "common.log_format=none", "checkpoint.save_dir=ck", "checkpoint.save_format=safetensors",
            f"hydra.run.dir={hydra_dir}/outputs"])
    ck = hydra_dir / "ck"
    assert {"checkpoint_last.pt", "checkpoint_last.safetensors"} <= set(names(ck))
    assert "model" in checkpoint_utils.load_checkpoint_to_cpu(str(ck / "checkpoint_last.safetensors"))

    legacy = tmp_path / "l"
    args = tiny_args(data_bin, str(legacy), str(tmp_path / "l.log"), 2, ["--log-format", "none"])
    train(args)
    assert {"checkpoint_last.pt", "checkpoint_last.safetensors", "checkpoint_1_2.safetensors"} <= set(names(legacy))
    # resumed in the other format: its names become single .pt files, their old weights removed
    pt_args = [a for a in tiny_args(data_bin, str(legacy), str(tmp_path / "l.log"), 4) if a != "safetensors"]
    pt_args.remove("--save-format")
    train(pt_args)
    state = torch.load(legacy / "checkpoint_last.pt", weights_only=True)
    assert "model" in state and "model_safetensors" not in state
    for name in state["extra_state"]["saved_as"]:  # checkpoint_last, checkpoint_1_4, maybe best
        assert not (legacy / name).with_suffix(".safetensors").exists(), name
    assert {"checkpoint_1_2.pt", "checkpoint_1_2.safetensors"} <= set(names(legacy))  # an older pair
