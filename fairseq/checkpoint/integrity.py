"""A SHA-256 of a checkpoint's tensors, stored in the checkpoint and checked when it is read.

``torch.load`` does not check the CRC-32 of the zip members it reads, so a checkpoint whose
tensor bytes were flipped on disk (a bad sector, a half-synced copy, a broken transfer) loads
silently and can evaluate to a NaN perplexity. Every checkpoint this package writes carries

    state["integrity"] = {"sha256": HEX, "covers": "tensors"}

a digest over every tensor reachable from the checkpoint's other entries (``model``,
``optimizer``, ``lr_scheduler``, ``extra_state``, ...), visited in the order the dicts hold them:
for each tensor its key path, dtype and shape, then its raw bytes (hashed through a
``memoryview``, no copy for contiguous CPU tensors). fairseq ignores the extra top-level entry.
Loading recomputes the digest before anything else reads the state.
"""
import hashlib
import logging
import os
from typing import Any, Dict, Optional, Tuple

import torch

__all__ = ["tensor_digest", "verify_integrity", "with_integrity"]

logger = logging.getLogger("fairseq.checkpoint_integrity")  # its name before the move

INTEGRITY_KEY = "integrity"
COVERS = "tensors"


def tensor_digest(state: Dict[str, Any]) -> str:
    """The SHA-256 (hex) of the tensors of ``state``, its ``integrity`` entry left out."""
    return _digests(state)[0]


def _digests(state: Dict[str, Any]) -> Tuple[str, str]:
    """``(tensors, layout)``: the SHA-256 of the tensors (key path, dtype, shape, bytes) and
    that of their key paths, dtypes and shapes only (what an edit changes, and flipped bytes
    in the payload do not)."""
    h = hashlib.sha256()
    layout = hashlib.sha256()

    def visit(obj: Any, path: str) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach()
            line = f"{path}\0{t.dtype}\0{tuple(t.shape)}\n".encode()
            h.update(line)
            layout.update(line)
            if t.layout != torch.strided or t.is_quantized:
                h.update(repr(t).encode())  # never in this package's checkpoints
                return
            if t.numel() == 0:
                return
            if t.device.type != "cpu":
                t = t.cpu()
            t = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
            h.update(memoryview(t.view(torch.uint8).numpy()))
        elif isinstance(obj, dict):
            for key, value in obj.items():
                if path or key != INTEGRITY_KEY:
                    visit(value, f"{path}/{key}")
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                visit(value, f"{path}/{i}")

    visit(state, "")
    return h.hexdigest(), layout.hexdigest()


def with_integrity(state: Dict[str, Any]) -> Dict[str, Any]:
    """``state`` (a shallow copy) with the digest of its tensors under ``integrity``."""
    state = {k: v for k, v in state.items() if k != INTEGRITY_KEY}
    tensors, layout = _digests(state)
    state[INTEGRITY_KEY] = {"sha256": tensors, "covers": COVERS, "layout_sha256": layout}
    return state


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


def verify_integrity(state: Any, path: str) -> Optional[bool]:
    """Check the digest a checkpoint was written with against its tensors.

    The entry is removed from ``state`` once checked: a state loaded, edited and saved again
    (``torch.save``) carries no stale digest.

    Returns:
        ``True`` when it matches, ``None`` when the checkpoint carries none (fairseq 0.12's,
        older versions of this package's): one warning says it loads unverified.

    Raises:
        fairseq.checkpoint_utils.CheckpointError: the tensors do not match the stored digest
            (flipped bytes; or tensors added, removed or reshaped by a script that saved it
            with plain ``torch.save``), or the ``integrity`` entry is malformed.
    """
    from fairseq.errors import CheckpointError

    entry = state.get(INTEGRITY_KEY) if isinstance(state, dict) else None
    if entry is None:
        logger.warning("%s carries no SHA-256 of its tensors (written by fairseq or an older "
                       "version of this package): it loads unverified", path)
        return None
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(expected, str) or entry.get("covers") != COVERS:
        raise CheckpointError(f"{path} is corrupt: its '{INTEGRITY_KEY}' entry is not the "
                              "{'sha256': ..., 'covers': 'tensors'} this package writes; use "
                              "another checkpoint" + _other_checkpoints(path))
    tensors, layout = _digests(state)
    if tensors != expected and entry.get("layout_sha256") not in (None, layout):
        raise CheckpointError(
            f"{path} was changed after it was written: its tensors are no longer those (names, "
            "dtypes, shapes) its SHA-256 was stored for. A script that edits a checkpoint must "
            "save it with fairseq.checkpoint_utils.torch_persistent_save (which stores a new "
            f"digest) or drop its '{INTEGRITY_KEY}' entry; else use another checkpoint"
            + _other_checkpoints(path))
    if tensors != expected:
        raise CheckpointError(
            f"{path} is corrupt: its tensors do not match the SHA-256 stored when it was written; "
            "use another checkpoint (checkpoint_last.pt / checkpoint_best.pt / an interval one)"
            + _other_checkpoints(path))
    del state[INTEGRITY_KEY]
    return True
