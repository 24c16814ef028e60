"""The integrity record covers the whole checkpoint, not only its tensors.

* a changed value anywhere (RNG state, lr scheduler, config, extra_state, the optimizer's
  non-tensor state) fails the load with one line naming the file;
* this package's checkpoints carry a marker: without a well-formed record they are refused, so
  a flipped bit in the ``integrity`` key's name does not switch verification off; fairseq's
  checkpoints (no marker) still load with one warning;
* version-1 records (tensors only, written by early versions of this package) are refused in one
  line that says how to give the file a current record;
* a ``model`` that is no state dict, and an args-era ``adam_betas`` that is no literal, are one
  line each, never a traceback.
"""
import argparse
import hashlib
import io
import logging
import math
import random
import shutil
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fairseq_0_12"


def _copy(tiny_checkpoint, tmp_path, name="checkpoint_last.pt"):
    save_dir = tmp_path / "run"
    save_dir.mkdir(exist_ok=True)
    shutil.copy(tiny_checkpoint / "checkpoint_last.pt", save_dir / name)
    return save_dir / name


def _one_line(error, path):
    text = str(error)
    assert "\n" not in text and str(path) in text, text
    return text


def _flip_bit(value):
    """``value`` with its lowest bit flipped (floats: the last bit of the mantissa)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value ^ 1
    (bits,) = struct.unpack("<Q", struct.pack("<d", value))
    return struct.unpack("<d", struct.pack("<Q", bits ^ 1))[0]


def _pickle_range(data: bytes):
    """``(start, end)`` of the pickled (non-tensor) part, ``data.pkl``, inside the zip file."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data.pkl"))
    assert info.compress_type == zipfile.ZIP_STORED
    at = info.header_offset
    start = at + 30 + int.from_bytes(data[at + 26:at + 28], "little") + int.from_bytes(data[at + 28:at + 30], "little")
    return start, start + info.compress_size


def _same(a, b):
    """Whether two loaded checkpoints hold the same content: types, key order, values bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return (a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad
                and torch.equal(a.detach().contiguous().view(-1).view(torch.uint8),
                                b.detach().contiguous().view(-1).view(torch.uint8)))
    if isinstance(a, dict):
        attrs = getattr(a, "__dict__", None), getattr(b, "__dict__", None)  # an OrderedDict's _metadata
        return (list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
                and (attrs == (None, None) or _same(dict(attrs[0] or {}), dict(attrs[1] or {}))))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, argparse.Namespace):
        return _same(vars(a), vars(b))
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


# -- a changed value anywhere is refused -----------------------------------------------------------
def _set(path_keys, change):
    def apply(state):
        node = state
        for key in path_keys[:-1]:
            node = node[key]
        last = path_keys[-1]
        node[last] = change(node[last])
    return apply


def _tuple_item(i):
    return lambda t: tuple(_flip_bit(v) if j == i else v for j, v in enumerate(t))


CHANGES = {
    "rng_python": (_set(["extra_state", "rng", "python", 7], _flip_bit), "extra_state"),
    "rng_numpy_pos": (_set(["extra_state", "rng", "numpy_pos"], _flip_bit), "extra_state"),
    "lr_scheduler_lr": (_set(["lr_scheduler", "lr"], _flip_bit), "lr_scheduler"),
    "lr_scheduler_best": (_set(["lr_scheduler", "best"], _flip_bit), "lr_scheduler"),
    "cfg_lr": (_set(["cfg", "optimization", "lr", 0], _flip_bit), "cfg"),
    "cfg_seed": (_set(["cfg", "common", "seed"], _flip_bit), "cfg"),
    "extra_state_position": (_set(["extra_state", "train_iterator", "iterations_in_epoch"], _flip_bit),
                             "extra_state"),
    "extra_state_best": (_set(["extra_state", "best"], _flip_bit), "extra_state"),
    "optimizer_betas": (_set(["optimizer", "param_groups", 0, "betas"], _tuple_item(1)), "optimizer"),
    "optimizer_eps": (_set(["optimizer", "param_groups", 0, "eps"], _flip_bit), "optimizer"),
    "optimizer_param_ids": (_set(["optimizer", "param_groups", 0, "params"], lambda p: p[1:] + p[:1]),
                            "optimizer"),
    "num_updates": (_set(["num_updates"], _flip_bit), "num_updates"),
    "model_metadata": (lambda s: s["model"]._metadata[""].update(version=2), "model"),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_changed_non_tensor_value_is_refused_in_one_line(tiny_checkpoint, tmp_path, name):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu, load_ema_from_checkpoint

    change, entry = CHANGES[name]
    path = _copy(tiny_checkpoint, tmp_path)
    state = torch.load(path, weights_only=True)
    record = dict(state["integrity"])
    change(state)  # the stored record is kept: what a flipped bit on disk leaves
    assert state["integrity"] == record
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_to_cpu(str(path))
    text = _one_line(info.value, path)
    assert f"is corrupt or was edited: its non-tensor state ({entry})" in text, text
    assert "torch_persistent_save" in text
    with pytest.raises(CheckpointError, match="non-tensor state"):
        load_ema_from_checkpoint(str(path))


def test_a_flipped_bit_in_the_rng_tensor_is_refused(tiny_checkpoint, tmp_path):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu

    path = _copy(tiny_checkpoint, tmp_path)
    state = torch.load(path, weights_only=True)
    state["extra_state"]["rng"]["torch"][100] ^= 4
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_to_cpu(str(path))
    assert "is corrupt: its tensors do not match" in _one_line(info.value, path)


# -- the marker: a missing or malformed record is an error, not fairseq's compat -------------------
def test_a_renamed_integrity_key_is_an_error_not_the_compat_warning(tiny_checkpoint, tmp_path, caplog):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu

    path = _copy(tiny_checkpoint, tmp_path)
    data = bytearray(path.read_bytes())
    start, end = _pickle_range(bytes(data))
    at = data.find(b"integrity", start, end)
    assert at > 0 and data.find(b"integrity", at + 1, end) == -1
    for offset, bit in ((0, 1), (4, 2), (8, 0x20)):  # "jntegrity", "intecrity", "integritY"
        renamed = bytearray(data)
        renamed[at + offset] ^= bit
        path.write_bytes(bytes(renamed))
        caplog.clear()
        with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError) as info:
            load_checkpoint_to_cpu(str(path))
        text = _one_line(info.value, path)
        assert "integrity record missing" in text and "altered or truncated" in text, text
        assert "restore it from a copy" in text and "re-save" in text
        assert "loads unverified" not in caplog.text and "written by fairseq" not in text


@pytest.mark.parametrize("change, what", [
    (lambda s: s.pop("integrity"), "integrity record missing (it carries this package's"),
    (lambda s: s.__setitem__("integrity", None), "integrity record malformed (a NoneType"),
    (lambda s: s.__setitem__("integrity", [1]), "integrity record malformed (a list"),
    (lambda s: s["integrity"].__setitem__("sha256", "0" * 63), "integrity record malformed (no sha256"),
    (lambda s: s["integrity"].pop("state_sha256"), "integrity record malformed (no state_sha256"),
    (lambda s: s["integrity"].__setitem__("version", 3), "integrity record malformed (version 3"),
    (lambda s: s["integrity"].update(version=1, covers="tensors"), "integrity record malformed (a version-1"),
    (lambda s: s["integrity"].__setitem__("sha256", "0" * 64), "integrity record malformed (its digests"),
    (lambda s: s.__setitem__("checkpoint_format", "fairseq.checkpoinT"), "marker is missing or changed"),
    (lambda s: s.__setitem__("checkpoint_formas", s.pop("checkpoint_format")), "marker is missing or changed"),
])
def test_a_missing_or_malformed_record_is_one_line(tiny_checkpoint, tmp_path, change, what):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu

    path = _copy(tiny_checkpoint, tmp_path)
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_to_cpu(str(path))
    assert what in _one_line(info.value, path)


def test_the_fairseq_0_12_checkpoint_still_loads_with_one_warning(caplog):
    from fairseq.checkpoint_utils import config_from_checkpoint, load_checkpoint_to_cpu

    path = str(FIXTURES / "checkpoint_last.pt")
    with caplog.at_level(logging.WARNING):
        state = load_checkpoint_to_cpu(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"{path} carries no SHA-256 of its tensors (written by fairseq or an older "
                        "version of this package): it loads unverified"]
    assert state["num_updates"] == 40 and "checkpoint_format" not in state
    assert config_from_checkpoint(state, path).model.decoder_layers == 2


# -- unaltered: loads, resumes; version-1 records are refused ----------------------------------------
def test_an_unaltered_checkpoint_loads_and_resumes(tiny_checkpoint, data_bin, tmp_path, caplog):
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu, torch_persistent_save
    from fairseq_cli import train

    path = _copy(tiny_checkpoint, tmp_path)
    saved = torch.load(path, weights_only=True)
    assert saved["integrity"]["version"] == 2 and saved["integrity"]["covers"] == "checkpoint"
    assert saved["checkpoint_format"] == "fairseq.checkpoint"
    assert list(saved["integrity"]["entries"]) == [k for k in saved if k != "integrity"]
    with caplog.at_level(logging.WARNING):
        state = load_checkpoint_to_cpu(str(path))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "integrity" not in state and "checkpoint_format" not in state  # checked, then dropped
    # an intended edit, saved with torch_persistent_save, gets a new record and loads
    state["cfg"]["optimization"]["lr"] = [0.004]
    torch_persistent_save(state, str(tmp_path / "edited.pt"))
    assert load_checkpoint_to_cpu(str(tmp_path / "edited.pt"))["cfg"]["optimization"]["lr"] == [0.004]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fairseq.checkpoint_utils"):
        train.cli_main([data_bin, "--task", "language_modeling", "--arch", "transformer_lm",
                        "--decoder-layers", "1", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
                        "--decoder-attention-heads", "2", "--tokens-per-sample", "32", "--max-tokens", "512",
                        "--optimizer", "adam", "--lr", "0.005", "--max-update", "32", "--save-dir",
                        str(path.parent), "--no-epoch-checkpoints", "--log-format", "none", "--seed", "1",
                        "--share-decoder-input-output-embed"])
    assert f"loaded checkpoint {path} (epoch 2 @ 30 updates)" in caplog.text  # resumed, not restarted
    assert load_checkpoint_to_cpu(str(path))["num_updates"] == 32


def _version_1_record(state):
    """The record the previous version of this package wrote: the SHA-256 of the tensors only
    (key path, dtype, shape, bytes) and of their layout, built here as it built it."""
    tensors, layout = hashlib.sha256(), hashlib.sha256()

    def visit(obj, path):
        if isinstance(obj, torch.Tensor):
            line = f"{path}\0{obj.dtype}\0{tuple(obj.shape)}\n".encode()
            tensors.update(line)
            layout.update(line)
            if obj.numel():
                tensors.update(obj.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for key, value in obj.items():
                if path or key != "integrity":
                    visit(value, f"{path}/{key}")
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                visit(value, f"{path}/{i}")

    visit(state, "")
    return {"sha256": tensors.hexdigest(), "covers": "tensors", "layout_sha256": layout.hexdigest()}


def test_a_version_1_record_is_refused_in_one_line_naming_the_fix(tiny_checkpoint, tmp_path):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu, torch_persistent_save

    path = _copy(tiny_checkpoint, tmp_path, "old.pt")
    state = torch.load(path, weights_only=True)
    del state["integrity"], state["checkpoint_format"]  # as an early version wrote it
    state["integrity"] = _version_1_record(state)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_to_cpu(str(path))
    line = _one_line(info.value, path)
    assert "integrity record is version 1" in line and "torch_persistent_save" in line
    # the fix the message names works: the record dropped, the file re-saved, it loads verified
    del state["integrity"]
    torch_persistent_save(state, str(path))
    assert load_checkpoint_to_cpu(str(path))["num_updates"] == 30
    # and a renamed key of an old record is no compat case either
    state["integrjty"] = _version_1_record(state)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_to_cpu(str(path))
    assert "integrity record missing" in _one_line(info.value, path)


# -- random bit flips: refused, or the content is unchanged ----------------------------------------
def test_random_bit_flips_never_load_changed_content(tiny_checkpoint, tmp_path):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu

    source = tiny_checkpoint / "checkpoint_last.pt"
    original = load_checkpoint_to_cpu(str(source))
    data = source.read_bytes()
    start, end = _pickle_range(data)
    path = tmp_path / "flipped.pt"
    rng = random.Random(1234)
    refused = identical = non_tensor = 0
    for i in range(60):
        # half of them in the pickled, non-tensor part (config, RNG, scheduler, the record)
        at = rng.randrange(start, end) if i % 2 == 0 else rng.randrange(len(data))
        flipped = bytearray(data)
        flipped[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        try:
            state = load_checkpoint_to_cpu(str(path))
        except CheckpointError as e:
            text = _one_line(e, path)
            non_tensor += "non-tensor state" in text or "integrity record" in text
            refused += 1
            continue
        assert _same(state, original), f"a flipped bit at byte {at} loaded changed content"
        identical += 1
    assert refused + identical == 60 and refused >= 30 and non_tensor >= 5, (refused, identical, non_tensor)


# -- one line for a model that is no state dict, and for an args value that is no literal -----------
@pytest.mark.parametrize("model, what", [
    ([torch.zeros(2)], "its 'model' entry is a list, not the state dict"),
    (None, "its 'model' entry is a NoneType"),
    (OrderedDict(w=torch.zeros(2), v=3), "its 'model' entry holds a int under 'v', not a tensor"),
])
@pytest.mark.parametrize("save", ["ours", "plain"])
def test_a_model_that_is_no_state_dict_is_one_line(tmp_path, model, what, save):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu, torch_persistent_save

    cfg = torch.load(FIXTURES / "checkpoint_last.pt", weights_only=True)["cfg"]
    path = tmp_path / "bad.pt"
    if save == "ours":  # written with a record: it verifies, then the model is refused
        torch_persistent_save({"model": model, "cfg": cfg}, str(path))
    else:
        torch.save({"model": model, "cfg": cfg}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_to_cpu(str(path))
    assert what in _one_line(info.value, path)


def _args_era(path, **values):
    args = dict(arch="transformer_lm", task="language_modeling", data=[str(FIXTURES / "data-bin")],
                criterion="cross_entropy", optimizer="adam", lr_scheduler="inverse_sqrt", lr=0.0005,
                adam_betas="(0.9, 0.98)", warmup_updates=10, max_tokens=256, tokens_per_sample=16,
                decoder_layers=1, decoder_embed_dim=16, update_freq=[1])
    args.update(values)
    torch.save({"args": argparse.Namespace(**args), "model": {"decoder.version": torch.tensor([3.0])},
                "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "num_updates": 5}],
                "extra_state": {"epoch": 1}}, path)


@pytest.mark.parametrize("attr, value, field", [
    ("adam_betas", "__import__('os').system('touch {marker}')", "optimizer.adam_betas"),
    ("adam_betas", "(0.9, 0.98", "optimizer.adam_betas"),
    ("adam_betas", "0.9 0.98", "optimizer.adam_betas"),
    ("adam_betas", "('a', 'b')", "optimizer.adam_betas"),
    ("update_freq", "1,x", "optimization.update_freq"),
])
def test_an_args_value_that_is_no_literal_is_one_line(tmp_path, attr, value, field):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu

    marker = tmp_path / "ran"
    value = value.format(marker=marker)
    path = tmp_path / "old.pt"
    _args_era(path, **{attr: value})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_to_cpu(str(path))
    text = _one_line(info.value, path)
    assert f"args.{attr}={value!r}"[:60] in text and "is not a literal" in text and field in text, text
    assert not marker.exists()  # parsed as a literal, never evaluated
    _args_era(path)
    state = load_checkpoint_to_cpu(str(path))
    assert state["cfg"]["optimizer"]["adam_betas"] == [0.9, 0.98] and math.isclose(
        state["cfg"]["optimization"]["lr"][0], 0.0005)
