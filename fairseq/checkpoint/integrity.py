"""A SHA-256 of a whole checkpoint, stored in the checkpoint and checked when it is read.

``torch.load`` does not check the CRC-32 of the zip members it reads, so a checkpoint whose
bytes were flipped on disk (a bad sector, a half-synced copy, a broken transfer) loads silently:
flipped weights can evaluate to a NaN perplexity, a flipped learning rate, RNG state or data
position silently changes the resumed run. Every checkpoint this package writes carries

    state["checkpoint_format"] = "fairseq.checkpoint"     (the marker, see below)
    state["integrity"] = {"version": 2, "covers": "checkpoint", "sha256": HEX,
                          "tensors_sha256": HEX, "state_sha256": HEX, "layout_sha256": HEX,
                          "entries": {top-level key: HEX, ...}}

``sha256`` is the digest that decides: the SHA-256 of the version and the two parts' digests,

* ``tensors_sha256``: every tensor reachable from the checkpoint's entries, in the order the
  containers hold them: its key path, dtype and shape, then its raw bytes (hashed through a
  ``memoryview``, no copy for contiguous CPU tensors).
* ``state_sha256``: a canonical encoding of everything else, entry by entry (``entries`` holds
  each top-level entry's digest, to name the one that changed): every container and scalar as a
  type tag and its value (ints as decimal text, floats as their 8 IEEE bytes, strings as UTF-8,
  each with its length; dicts in their order, with their keys; an ``OrderedDict``'s
  ``_metadata``; an ``argparse.Namespace``'s attributes), every tensor as a placeholder of its
  dtype, shape and ``requires_grad``. The config, the optimizer's non-tensor state, the lr
  scheduler, the RNG states, ``extra_state``, the marker: all of it. The encoding depends only
  on what ``torch.save`` stores and ``torch.load`` gives back, so it is the same on both sides.

``layout_sha256`` (key paths, dtypes and shapes only) tells an edit from flipped bytes.

The marker tells this package's checkpoints from fairseq's by their contents, not by the absence
of the record: a checkpoint with the marker (or an entry that looks like a renamed or damaged
record) but no well-formed record is refused, while fairseq's (which has neither) loads with one
warning. The marker sits in its own entry, inside the digest: one flipped bit can remove the
record or change the marker, never both unnoticed.

Version 1 records (``{"sha256", "covers": "tensors", "layout_sha256"}``, tensors only, no
marker), written by early versions of this package only, are no longer read: such a file is
refused with one line saying how to give it a current record.

Loading recomputes the digest before anything else reads the state; the record and the marker
are then removed from the loaded state, so a state loaded and saved again with plain
``torch.save`` carries no stale digest.

A checkpoint saved as a safetensors pair (:mod:`fairseq.checkpoint.state`) keeps its weights in
``NAME.safetensors`` and, in ``NAME.pt``, the entry ``model_safetensors`` with that file's size
and SHA-256 (of its bytes, header included). The digest above covers the entry, so a flipped
byte in either file is refused: in ``NAME.pt`` by the record, in ``NAME.safetensors`` by
:func:`verify_weights_file`, which hashes the file before it is read.
"""
import argparse
import hashlib
import logging
import os
import struct
from typing import Any, Dict, List, Optional, Tuple

import torch

from fairseq.checkpoint.state import FORMAT, FORMAT_KEY

__all__ = ["checkpoint_digests", "file_sha256", "tensor_digest", "verify_integrity",
           "verify_weights_file", "with_integrity"]

logger = logging.getLogger("fairseq.checkpoint.integrity")

INTEGRITY_KEY = "integrity"
VERSION = 2
COVERS = "checkpoint"
_RECORD_KEYS = ("sha256", "covers", "tensors_sha256", "state_sha256", "layout_sha256", "entries")


# -- digests ---------------------------------------------------------------------------------------
def _len(n: int) -> bytes:
    return struct.pack("<Q", n)


def _type_name(obj: Any) -> bytes:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}".encode()


class _Walk:
    """One pass over a checkpoint: the tensor digest, the layout digest and the canonical
    encoding of each top-level entry (:meth:`encode`; :meth:`tensors_only` visits the tensors
    alone)."""

    def __init__(self) -> None:
        self.tensors = hashlib.sha256()
        self.layout = hashlib.sha256()
        self.out: Any = None  # the digest of the entry being encoded (None: tensors only)

    # the tensors, in the same order whichever walk visits them
    def _tensor_bytes(self, t: torch.Tensor, path: str) -> None:
        t = t.detach()
        line = f"{path}\0{t.dtype}\0{tuple(t.shape)}\n".encode()
        self.tensors.update(line)
        self.layout.update(line)
        if t.layout != torch.strided or t.is_quantized:
            self.tensors.update(repr(t).encode())  # never in this package's checkpoints
            return
        if t.numel() == 0:
            return
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
        self.tensors.update(memoryview(t.view(torch.uint8).numpy()))

    def tensors_only(self, obj: Any, path: str) -> None:
        """The tensors alone, in dicts, lists and tuples (as :meth:`encode` meets them)."""
        if isinstance(obj, torch.Tensor):
            self._tensor_bytes(obj, path)
        elif isinstance(obj, dict):
            for key, value in obj.items():
                if path or key != INTEGRITY_KEY:
                    self.tensors_only(value, f"{path}/{key}")
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                self.tensors_only(value, f"{path}/{i}")

    def encode(self, obj: Any, path: str, active: set) -> None:
        """Feed the canonical encoding of ``obj`` to ``self.out`` (its tensors' bytes to
        ``self.tensors``); ``active`` holds the containers being encoded (a cycle is a tag)."""
        put = self.out.update
        if obj is None:
            put(b"N")
        elif isinstance(obj, bool):
            put(b"B1" if obj else b"B0")
        elif isinstance(obj, int):
            text = str(int(obj)).encode()
            put(b"I" + _len(len(text)) + text)
        elif isinstance(obj, float):
            put(b"F" + struct.pack("<d", float(obj)))
        elif isinstance(obj, str):
            data = obj.encode("utf-8", "surrogatepass")
            put(b"S" + _len(len(data)) + data)
        elif isinstance(obj, torch.Tensor):
            head = f"{obj.dtype}\0{tuple(obj.shape)}\0{int(obj.requires_grad)}".encode()
            put(b"T" + _len(len(head)) + head)
            self._tensor_bytes(obj, path)
        elif isinstance(obj, (dict, list, tuple, argparse.Namespace)):
            if id(obj) in active:
                put(b"R")  # a container holding itself (never written by this package)
                return
            active.add(id(obj))
            name = _type_name(obj)
            if isinstance(obj, argparse.Namespace):
                put(b"O" + _len(len(name)) + name)
                self.encode(dict(vars(obj)), f"{path}/", active)
            elif isinstance(obj, dict):
                put(b"D" + _len(len(name)) + name + _len(len(obj)))
                for key, value in obj.items():
                    self.encode(key, path, active)
                    self.encode(value, f"{path}/{key}", active)
                attrs = getattr(obj, "__dict__", None)  # an OrderedDict's _metadata
                if attrs:
                    put(b"A")
                    self.encode(dict(attrs), f"{path}/", active)
            else:
                put(b"L" + _len(len(name)) + name + _len(len(obj)))
                for i, value in enumerate(obj):
                    self.encode(value, f"{path}/{i}", active)
            active.discard(id(obj))
        elif isinstance(obj, (bytes, bytearray)):
            put(b"Y" + _len(len(obj)) + bytes(obj))
        elif isinstance(obj, complex):
            put(b"C" + struct.pack("<dd", obj.real, obj.imag))
        elif isinstance(obj, (set, frozenset)):
            # unordered: the elements' own encodings, sorted (no tensors in a set)
            parts = []
            saved = self.out
            for value in obj:
                self.out = hashlib.sha256()
                self.encode(value, path, active)
                parts.append(self.out.digest())
            self.out = saved
            name = _type_name(obj)
            put(b"E" + _len(len(name)) + name + _len(len(parts)) + b"".join(sorted(parts)))
        else:  # dtypes, devices and the like (torch.Size is a tuple): their type and text
            name = _type_name(obj)
            text = repr(obj).encode("utf-8", "backslashreplace")
            put(b"X" + _len(len(name)) + name + _len(len(text)) + text)


def checkpoint_digests(state: Dict[str, Any]) -> Dict[str, Any]:
    """The version-2 digests of ``state`` (its ``integrity`` entry left out): ``sha256``,
    ``tensors_sha256``, ``state_sha256``, ``layout_sha256`` and ``entries``."""
    walk = _Walk()
    entries: Dict[Any, str] = {}
    total = hashlib.sha256(b"fairseq checkpoint state v2\0")
    for key, value in state.items():
        if key == INTEGRITY_KEY:
            continue
        walk.out = hashlib.sha256()
        walk.encode(key, "", set())
        walk.encode(value, f"/{key}", set())
        digest = walk.out.digest()
        entries[key] = digest.hex()
        total.update(digest)
    state_hex = total.hexdigest()
    tensors_hex = walk.tensors.hexdigest()
    whole = hashlib.sha256(f"fairseq checkpoint v2\0{tensors_hex}\0{state_hex}".encode()).hexdigest()
    return {"sha256": whole, "tensors_sha256": tensors_hex, "state_sha256": state_hex,
            "layout_sha256": walk.layout.hexdigest(), "entries": entries}


def tensor_digest(state: Dict[str, Any]) -> str:
    """The SHA-256 (hex) of the tensors of ``state``, its ``integrity`` entry left out: the
    record's ``tensors_sha256``."""
    walk = _Walk()
    walk.tensors_only(state, "")
    return walk.tensors.hexdigest()


def with_integrity(state: Dict[str, Any]) -> Dict[str, Any]:
    """``state`` (a shallow copy) with this package's marker first and the digest of all of it
    under ``integrity``."""
    state = {FORMAT_KEY: FORMAT,
             **{k: v for k, v in state.items() if k not in (INTEGRITY_KEY, FORMAT_KEY)}}
    record: Dict[str, Any] = {"version": VERSION, "covers": COVERS}
    record.update(checkpoint_digests(state))
    state[INTEGRITY_KEY] = record
    return state


# -- verification ----------------------------------------------------------------------------------
def _other_checkpoints(path: str) -> str:
    """`` (others in DIR: a.pt, b.pt)``: the checkpoints beside ``path`` that are other files."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        own = os.stat(path)
        names = sorted(n for n in os.listdir(directory) if n.endswith(".pt"))
    except OSError:
        return ""
    others = []
    for name in names:
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            continue
        if (st.st_ino, st.st_dev) != (own.st_ino, own.st_dev):
            others.append(name)
    if not others:
        return f" (no other checkpoint in {directory})"
    shown = ", ".join(others[:4]) + (f", ... ({len(others)} in all)" if len(others) > 4 else "")
    return f" (other files in {directory}: {shown})"


def _near(key: Any, name: str) -> bool:
    """Whether ``key`` is ``name`` with one or two characters changed (a flipped bit)."""
    return (isinstance(key, str) and key != name and len(key) == len(name)
            and sum(a != b for a, b in zip(key, name)) <= 2)


def _marks(state: Dict[str, Any]) -> Optional[str]:
    """Why ``state`` (which has no ``integrity`` entry) is one of this package's checkpoints, or
    ``None`` when nothing says so."""
    if FORMAT_KEY in state:
        return f"it carries this package's '{FORMAT_KEY}' marker"
    for key, value in state.items():
        if _near(key, INTEGRITY_KEY):
            return f"its entry {key!r} looks like a damaged '{INTEGRITY_KEY}' key"
        if _near(key, FORMAT_KEY):
            return f"its entry {key!r} looks like a damaged '{FORMAT_KEY}' marker"
        if isinstance(value, dict) and any(k in value for k in _RECORD_KEYS):
            return f"its entry {key!r} holds what looks like the record"
    return None


def _is_hex64(value: Any) -> bool:
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))


def _refuse(path: str, what: str) -> None:
    from fairseq.errors import CheckpointError

    raise CheckpointError(
        f"{path}: integrity record {what}: the file was altered or truncated; restore it from a "
        "copy (or use another checkpoint), or re-save an intended edit with "
        "fairseq.checkpoint_utils.torch_persistent_save" + _other_checkpoints(path))


def _changed_entries(stored: Any, now: Dict[Any, str]) -> List[str]:
    if not isinstance(stored, dict):
        return []
    names = [_name(k) for k, v in now.items() if stored.get(k) != v]
    names += [f"{_name(k)} (gone)" for k in stored if k not in now]
    return names


def _name(value: Any, limit: int = 60) -> str:
    """``value`` for a one-line message: a printable string as it is, anything else as its
    ``repr``, shortened."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _tensors_changed(path: str, edited: bool) -> None:
    from fairseq.errors import CheckpointError

    if edited:
        raise CheckpointError(
            f"{path} was changed after it was written: its tensors are no longer those (names, "
            "dtypes, shapes) its SHA-256 was stored for. A script that edits a checkpoint must "
            "save it with fairseq.checkpoint_utils.torch_persistent_save (which stores a new "
            "digest); else use another checkpoint" + _other_checkpoints(path))
    raise CheckpointError(
        f"{path} is corrupt: its tensors do not match the SHA-256 stored when it was written; "
        "use another checkpoint (checkpoint_last.pt / checkpoint_best.pt / an interval one)"
        + _other_checkpoints(path))


def verify_integrity(state: Any, path: str) -> Optional[bool]:
    """Check the digest a checkpoint was written with against its contents.

    The record and the marker are removed from ``state`` once checked: a state loaded, edited
    and saved again (``torch.save``) carries no stale digest.

    Returns:
        ``True`` when it matches, ``None`` when the checkpoint carries no record and nothing
        marks it as this package's (fairseq's): one warning says it loads unverified.

    Raises:
        fairseq.checkpoint_utils.CheckpointError: the contents do not match the stored digest
            (flipped bytes; or an edit saved with plain ``torch.save``), or the record is
            missing from a checkpoint of this package's format, or malformed.
    """
    from fairseq.errors import CheckpointError

    if not isinstance(state, dict):
        return None
    if INTEGRITY_KEY not in state:
        why = _marks(state)
        if why is not None:
            _refuse(path, f"missing ({why})")
        logger.warning("%s carries no SHA-256 of its tensors (written by fairseq or an older "
                       "version of this package): it loads unverified", path)
        return None
    record = state[INTEGRITY_KEY]
    if not isinstance(record, dict):
        _refuse(path, f"malformed (a {type(record).__name__}, not a dict)")
    version = record.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        version = None  # not a version number: malformed
    if version == 1 and record.get("covers") == "tensors":
        if FORMAT_KEY in state:
            _refuse(path, f"malformed (a version-1 record in a file with the '{FORMAT_KEY}' "
                          "marker, which version 1 never wrote)")
        # only early versions of this package wrote version 1: no reader is kept for it
        raise CheckpointError(
            f"{path}: its integrity record is version 1 (tensors only), written by an early version of "
            "this package and no longer read; to keep it, torch.load it (weights_only=True), delete its "
            "'integrity' entry and save it with fairseq.checkpoint_utils.torch_persistent_save, which "
            "gives it a current record")
    elif version == VERSION and record.get("covers") == COVERS:
        missing = [k for k in ("sha256", "tensors_sha256", "state_sha256", "layout_sha256")
                   if not _is_hex64(record.get(k))]
        if missing:
            _refuse(path, f"malformed (no {', '.join(missing)} of 64 hex digits)")
        if state.get(FORMAT_KEY) != FORMAT:
            # the marker is part of the digest: a changed one fails it below; say so plainly
            _refuse(path, f"malformed (the '{FORMAT_KEY}' marker is missing or changed)")
        now = checkpoint_digests(state)
        tensors, layout = now["tensors_sha256"], now["layout_sha256"]
        if now["sha256"] != record["sha256"]:
            if tensors != record["tensors_sha256"]:
                _tensors_changed(path, layout != record["layout_sha256"])
            if now["state_sha256"] == record["state_sha256"]:
                _refuse(path, "malformed (its digests disagree with each other)")
            changed = _changed_entries(record.get("entries"), now["entries"])
            raise CheckpointError(
                f"{path} is corrupt or was edited: its non-tensor state ("
                + (", ".join(changed) if changed else "config, optimizer or scheduler state, RNG, extra_state")
                + ") no longer matches the SHA-256 stored when it was written; restore it from a copy "
                "or use another checkpoint, or re-save an intended edit with "
                "fairseq.checkpoint_utils.torch_persistent_save" + _other_checkpoints(path))
    else:
        _refuse(path, f"malformed (version {_name(record.get('version'))}, covers "
                      f"{_name(record.get('covers'))}: not the "
                      f"record this package writes, version {VERSION} covering the checkpoint)")
    del state[INTEGRITY_KEY]
    state.pop(FORMAT_KEY, None)
    return True


# -- the weights file of a safetensors pair ------------------------------------------------------
_CHUNK = 1 << 24


def file_sha256(path: str) -> Tuple[str, int]:
    """The SHA-256 (hex) of the bytes of ``path`` and their number, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            piece = f.read(_CHUNK)
            if not piece:
                break
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size


def check_weights_record(record: Any, path: str) -> None:
    """Refuse a ``model_safetensors`` entry of ``path`` that is not the one this package writes
    (verified already by the checkpoint's own record: only a writer's bug or a hand edit re-saved
    with ``torch_persistent_save`` can make it malformed)."""
    from fairseq.errors import CheckpointError

    ok = (isinstance(record, dict) and record.get("version") == 1 and _is_hex64(record.get("sha256"))
          and isinstance(record.get("bytes"), int) and isinstance(record.get("keys"), list)
          and isinstance(record.get("aliases", {}), dict))
    if not ok:
        raise CheckpointError(f"{path}: its 'model_safetensors' entry is malformed (not the version-1 "
                              "record of a safetensors pair: sha256, bytes, keys, aliases); use "
                              "another checkpoint" + _other_checkpoints(path))


def weights_file_matches(weights: str, record: Dict[str, Any]) -> bool:
    """Whether the file ``weights`` has the size and SHA-256 that ``record`` stores."""
    try:
        if os.path.getsize(weights) != record["bytes"]:
            return False
    except OSError:
        return False
    return file_sha256(weights)[0] == record["sha256"]


def verify_weights_file(weights: str, record: Dict[str, Any], path: str) -> None:
    """Check the weights file ``weights`` of the pair whose ``.pt`` is ``path`` against the size
    and SHA-256 ``record`` (its ``model_safetensors`` entry) stores.

    Raises:
        fairseq.errors.CheckpointError: the file is missing, or its bytes are not those written
            with ``path`` (flipped or truncated, or the weights of another save).
    """
    from fairseq.errors import CheckpointError

    if not os.path.isfile(weights):
        raise CheckpointError(
            f"{path} keeps its model weights in {os.path.basename(weights)} beside it (checkpoint."
            "save_format=safetensors), which does not exist: the two files of a pair go together "
            "(copy, move or rename both), or use another checkpoint" + _other_checkpoints(path))
    size = os.path.getsize(weights)
    if size != record["bytes"]:
        why = f"{size} bytes, not the {record['bytes']} written"
    elif file_sha256(weights)[0] != record["sha256"]:
        why = "its SHA-256 is not the one stored in the .pt"
    else:
        return
    raise CheckpointError(
        f"{weights} is corrupt or not the weights saved with {os.path.basename(path)} ({why}): its "
        "bytes were altered, truncated or replaced by another save's; copy the pair of files together "
        "or use another checkpoint" + _other_checkpoints(path))
