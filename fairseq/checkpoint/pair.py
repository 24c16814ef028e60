"""The safetensors checkpoint pair: its one home (naming, writing, reading, completing, pruning).

With ``checkpoint.save_format=safetensors`` a checkpoint is a pair of files:

* ``NAME.safetensors``: the model weights (the ``model`` entry), in the safetensors format (a
  JSON header and raw little-endian tensor bytes: no pickle, mmap-loadable, read by other tools).
  A tensor that is another one's exact alias (tied input/output embeddings) is stored once; the
  header's ``__metadata__`` names the aliases (``{"format": "pt", "fairseq_checkpoint":
  "NAME.pt", "aliases": JSON}``).
* ``NAME.pt``: the checkpoint above without ``model`` and with ``model_safetensors`` instead
  (:data:`WEIGHTS_KEY`): ``{"version": 1, "file": "NAME.safetensors", "sha256": HEX, "bytes": N,
  "keys": [model keys in order], "aliases": {key: key it is stored under}, "metadata": the state
  dict's ``_metadata``}``. Its integrity record covers that entry, so it covers the weights file
  through their SHA-256: the pair is verified as one checkpoint.

The weights are always looked up as the ``.safetensors`` of the name the ``.pt`` was opened
under, so every name of a save (``checkpoint_last``, ``checkpoint_best``, ...) is a pair of its
own; a loader given ``NAME.safetensors`` reads ``NAME.pt`` (:func:`state_file_path`).

A save writes both files to temporaries, fsyncs them, renames the ``.pt`` into place (the commit)
and then the weights (:func:`write_pair`). A kill between those two renames leaves the new ``.pt``
and the complete weights under their temporary name, which the next load finds by their SHA-256
and renames (:func:`interrupted_save_weights`). Further names of a save link the weights first
and the ``.pt`` second; a name linked to ``checkpoint_last.pt`` without its weights (a kill
between links) gets them at the next save or start (:func:`tidy_pairs`). Removing a checkpoint
removes both files, ``.pt`` first (:func:`remove_checkpoint`).
"""
import errno
import json
import logging
import os
import re
import tempfile
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from fairseq.checkpoint.files import atomic_link, pid_alive, remove_path, torch_save_checkpoint
from fairseq.checkpoint.integrity import (
    check_weights_record, file_sha256, verify_weights_file, weights_file_matches, with_integrity,
)
from fairseq.checkpoint.state import safe_torch_load
from fairseq.errors import CheckpointError, ConfigError, DiskFullError
from fairseq.file_io import fsync_dir, temp_prefix, umask

logger = logging.getLogger("fairseq.checkpoint_utils")  # the name fairseq logs checkpoints under

# -- naming and layout -------------------------------------------------------------------------
# the entry of a pair's NAME.pt that stands for its model weights (see the module docstring)
WEIGHTS_KEY = "model_safetensors"
WEIGHTS_SUFFIX = ".safetensors"
WEIGHTS_VERSION = 1
SAVE_FORMATS = ("pt", "safetensors")
# ``.tmp_NAME.safetensors.<pid>.<random>``: the temporary weights file of a save in progress
_WEIGHTS_TEMP = re.compile(r"\.tmp_(checkpoint[\w.\-]*" + re.escape(WEIGHTS_SUFFIX) + r")\.(\d+)\.([A-Za-z0-9_]+)")


def weights_path(path: str) -> str:
    """``NAME.safetensors`` for the checkpoint ``NAME.pt`` (the weights file of a pair)."""
    return (path[:-3] if path.endswith(".pt") else path) + WEIGHTS_SUFFIX


def state_file_path(path: str) -> str:
    """The ``.pt`` a loader reads for ``path``: ``NAME.pt`` for ``NAME.safetensors``, else ``path``."""
    return path[: -len(WEIGHTS_SUFFIX)] + ".pt" if str(path).endswith(WEIGHTS_SUFFIX) else path


def import_safetensors(purpose: str) -> Any:
    """``safetensors.torch``, or one line saying how to install it (``purpose``: what needs it).

    Raises:
        fairseq.errors.ConfigError: the package is not installed.
    """
    try:
        import safetensors.torch as st
    except ImportError:
        raise ConfigError(f"{purpose} needs the safetensors package, which is not installed: "
                          "pip install safetensors (or pip install -e '.[hf]')") from None
    return st


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            and a.storage_offset() == b.storage_offset() and a.device == b.device)


def split_model_state(model_state: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """A model state dict as ``(tensors, record)``: the tensors to write to a safetensors file
    (on the CPU, contiguous, each storage once) and the part of the :data:`WEIGHTS_KEY` record
    that rebuilds the state dict from them (``keys``, ``aliases``, ``metadata``; the writer adds
    ``file``, ``sha256`` and ``bytes``).

    An entry that is an exact alias of an earlier one (same storage, offset, shape, strides and
    dtype, as tied embeddings are) is stored once and listed in ``aliases``; one that overlaps
    another's storage otherwise is stored as a copy (safetensors refuses shared memory).
    """
    tensors: Dict[str, torch.Tensor] = {}
    aliases: Dict[str, str] = {}
    other: Dict[str, Any] = {}
    seen: Dict[Any, List[Tuple[str, torch.Tensor]]] = {}
    for key, value in model_state.items():
        if not torch.is_tensor(value):
            other[key] = value
            continue
        value = value.detach()
        storage = (value.device, value.untyped_storage().data_ptr()) if value.numel() else None
        twins = seen.setdefault(storage, []) if storage is not None else []
        target = next((k for k, t in twins if _same_view(t, value)), None)
        if target is not None:
            aliases[key] = target
            continue
        shared = bool(twins)
        twins.append((key, value))
        value = value.cpu()
        value = value.clone() if shared or not value.is_contiguous() else value
        tensors[key] = value.contiguous()
    record: Dict[str, Any] = {"version": WEIGHTS_VERSION, "keys": list(model_state.keys()),
                              "aliases": aliases,
                              "metadata": dict(getattr(model_state, "_metadata", None) or {})}
    if other:
        record["other"] = other
    return tensors, record


def safetensors_metadata(state_name: str, record: Dict[str, Any]) -> Dict[str, str]:
    """The ``__metadata__`` of a pair's weights file (strings only, as the format requires)."""
    return {"format": "pt", "fairseq_checkpoint": state_name,
            "aliases": json.dumps(record.get("aliases") or {}, sort_keys=True)}


def join_model_state(tensors: Dict[str, torch.Tensor], record: Dict[str, Any]) -> "OrderedDict[str, Any]":
    """The model state dict that :func:`split_model_state` split: ``record``'s keys in order, an
    alias as the very tensor it names, the ``_metadata`` restored.

    Raises:
        KeyError: a key neither in ``tensors`` nor an alias of one (the caller names the file).
    """
    aliases = record.get("aliases") or {}
    other = record.get("other") or {}
    state: "OrderedDict[str, Any]" = OrderedDict()
    for key in record["keys"]:
        if key in tensors:
            state[key] = tensors[key]
        elif key in aliases:
            state[key] = tensors[aliases[key]]
        elif key in other:
            state[key] = other[key]
        else:
            raise KeyError(key)
    metadata = record.get("metadata")
    if metadata:
        state._metadata = OrderedDict(metadata)  # type: ignore[attr-defined]
    return state


# -- writing ---------------------------------------------------------------------------------------
def save_pair(state: Dict[str, Any], path: str) -> None:
    """Write a checkpoint dict (with its ``model``, as ``load_checkpoint_to_cpu`` returns it) as
    the safetensors pair ``path`` (``NAME.pt``) and ``NAME.safetensors``, atomically: e.g. to
    turn a single ``.pt`` into a pair. (The other way: ``torch_persistent_save`` of the loaded
    pair writes one ``.pt``.)

    Raises:
        ConfigError: ``path`` does not end in ``.pt``, or safetensors is not installed.
        CheckpointError: ``state`` holds no ``model`` state dict.
    """
    if not str(path).endswith(".pt"):
        raise ConfigError(f"save_pair: {path} does not end in .pt; the pair is NAME.pt and NAME.safetensors")
    model = state.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"save_pair: the state to write as {path} has no 'model' state dict")
    st = import_safetensors("writing a safetensors pair")
    rest = {k: v for k, v in state.items() if k not in ("model", WEIGHTS_KEY)}
    tensors, record = split_model_state(model)
    metadata = safetensors_metadata(os.path.basename(path), record)
    record["file"] = os.path.basename(weights_path(path))
    directory = os.path.dirname(os.path.abspath(path))

    def write_state(f: Any, sha: str, size: int) -> None:
        state_file = with_integrity({**rest, WEIGHTS_KEY: dict(record, sha256=sha, bytes=size)})
        torch_save_checkpoint(state_file, f, directory, path)

    write_pair(path, lambda p: st.save_file(tensors, p, metadata=metadata), write_state)


def _new_temp(path: str) -> Tuple[int, str]:
    """A new temporary file beside ``path`` (``.tmp_<name>.<pid>.<random>``), with the mode the
    umask gives: ``(fd, its path)``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=directory)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, tmp


def _full_disk(error: BaseException) -> bool:
    text = str(error)
    return ((isinstance(error, OSError) and error.errno == errno.ENOSPC)
            or "No space left" in text or "StorageFull" in text)


def write_pair(first: str, write_weights: Callable[[str], Optional[Tuple[str, int]]],
                write_state: Callable[[Any, str, int], Any]) -> None:
    """Write the pair ``first`` (``NAME.pt``) and ``NAME.safetensors`` atomically as a pair.

    ``write_weights(path)`` writes the weights file at the temporary ``path`` (returning its
    SHA-256 and size when it knows them); ``write_state(file, sha256, size)`` writes the ``.pt``
    that names them. Both are fsynced as temporaries, then the ``.pt`` is renamed into place (the
    commit: from then on it names the new weights) and the weights after it. An error before the
    commit removes both temporaries and leaves the previous pair whole.

    Raises:
        DiskFullError: the device filled up (nothing of this save is left).
    """
    weights = weights_path(first)
    directory = os.path.dirname(os.path.abspath(first))
    if os.path.isdir(first):  # a sharded checkpoint of the same name (save_consolidated changed)
        remove_path(first)
    weights_tmp: Optional[str] = None
    state_tmp: Optional[str] = None
    committed = False
    try:
        fd, weights_tmp = _new_temp(weights)
        os.close(fd)
        known = write_weights(weights_tmp)
        os.chmod(weights_tmp, 0o666 & ~umask())  # safetensors creates the file anew (mode 0600)
        fd = os.open(weights_tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        sha, size = known if known is not None else file_sha256(weights_tmp)
        fd, state_tmp = _new_temp(first)
        with os.fdopen(fd, "wb") as f:
            write_state(f, sha, size)
            f.flush()
            os.fsync(f.fileno())
        os.replace(state_tmp, first)
        committed = True
        os.replace(weights_tmp, weights)
    except BaseException as e:
        if committed and weights_tmp is not None and os.path.exists(weights_tmp):
            try:  # the .pt names these weights now: complete the pair rather than drop them
                os.replace(weights_tmp, weights)
            except OSError:
                pass  # the next load completes it (interrupted_save_weights)
        else:
            for tmp in (weights_tmp, state_tmp):
                if tmp is not None and os.path.exists(tmp):
                    os.remove(tmp)
        if _full_disk(e) and not isinstance(e, DiskFullError):
            raise DiskFullError(f"no space left on device while writing {weights} and {first}; free "
                                "space there or give another checkpoint.save_dir (--save-dir); the "
                                "previous checkpoints are untouched") from None
        raise
    fsync_dir(directory)


# -- completing and pruning --------------------------------------------------------------------
def remove_stale_weights(save_dir: str, names: List[str]) -> None:
    """Remove the ``.safetensors`` of ``names`` just written as single ``.pt`` files: weights
    of an earlier save in the other format, which no ``.pt`` names any more."""
    for name in names:
        stale = weights_path(os.path.join(save_dir, name))
        if os.path.lexists(stale) and not os.path.isdir(stale):
            os.remove(stale)


def tidy_pairs(save_dir: str) -> None:
    """Finish what interrupted saves left in ``save_dir``: names linked to ``checkpoint_last.pt``
    get its weights (:func:`_complete_pairs`), and temporary weights files of dead writers are
    renamed into place when their ``.pt`` names them, else removed (:func:`_remove_weight_temps`).
    Called before pruning, on the first process, holding the save_dir lock."""
    _complete_pairs(save_dir)
    _remove_weight_temps(save_dir)


def _pair_record(path: str) -> Optional[Dict[str, Any]]:
    """The ``model_safetensors`` entry of the ``.pt`` ``path``; None when it is no pair's (or
    cannot be read)."""
    try:
        state = safe_torch_load(path)
    except Exception:  # noqa: BLE001 -- unreadable: no pair to complete (its loader says why)
        return None
    record = state.get(WEIGHTS_KEY) if isinstance(state, dict) else None
    return record if isinstance(record, dict) else None


def _complete_pairs(save_dir: str) -> None:
    """Give every name hard-linked to ``checkpoint_last.pt`` the same weights file.

    A save links the weights of each further name before its ``.pt``; a run killed between those
    links leaves names whose ``.pt`` the rerun links to ``checkpoint_last.pt``
    (``restore_save_names``) while their ``.safetensors`` is missing or older. Those get
    ``checkpoint_last.safetensors`` now, when ``checkpoint_last.pt`` is a pair's (read only
    then); when it is a single file, their leftover weights are removed. Cheap otherwise: stats.
    """
    last = os.path.join(save_dir, "checkpoint_last.pt")
    try:
        own = os.stat(last)
    except OSError:
        return
    if not os.path.isfile(last):
        return
    last_weights = weights_path(last)
    try:
        reference = os.stat(last_weights)
    except OSError:
        reference = None
    behind = []
    for name in sorted(os.listdir(save_dir)):
        if name == "checkpoint_last.pt" or not re.fullmatch(r"checkpoint[\w.\-]*\.pt", name):
            continue
        path = os.path.join(save_dir, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_ino, st.st_dev) != (own.st_ino, own.st_dev):
            continue
        try:
            partner = os.stat(weights_path(path))
        except OSError:
            partner = None
        if reference is None and partner is None:
            continue
        if reference is not None and partner is not None and (
                (partner.st_ino, partner.st_dev) == (reference.st_ino, reference.st_dev)
                or (partner.st_size == reference.st_size
                    and file_sha256(weights_path(path)) == file_sha256(last_weights))):
            continue
        behind.append(path)
    if not behind:
        return
    record = _pair_record(last)
    for path in behind:
        if record is not None and reference is not None:
            atomic_link(last_weights, weights_path(path))
        elif record is None and os.path.lexists(weights_path(path)):
            os.remove(weights_path(path))
    if record is not None and reference is not None:
        logger.warning("completed the save that was interrupted: %s now %s the weights of "
                       "checkpoint_last.pt", ", ".join(os.path.basename(weights_path(p)) for p in behind),
                       "holds" if len(behind) == 1 else "hold")


def _remove_weight_temps(save_dir: str) -> None:
    """Remove the temporary weights files (``.tmp_NAME.safetensors.<pid>.*``) of saves that are no
    longer running, unless one holds the weights its ``NAME.pt`` names: that one completes its
    save (renamed into place). A live writer's (another process's) are kept."""
    try:
        names = sorted(os.listdir(save_dir))
    except OSError:
        return
    for name in names:
        m = _WEIGHTS_TEMP.fullmatch(name)
        if not m:
            continue
        pid = int(m.group(2))
        if pid != os.getpid() and pid_alive(pid):
            continue
        temp = os.path.join(save_dir, name)
        weights = os.path.join(save_dir, m.group(1))
        pt = state_file_path(weights)
        record = _pair_record(pt) if os.path.isfile(pt) else None
        if (record is not None and isinstance(record.get("bytes"), int)
                and os.path.getsize(temp) == record["bytes"] and not weights_file_matches(weights, record)
                and interrupted_save_weights(weights, record) == weights):
            continue
        if os.path.lexists(temp):
            os.remove(temp)
            logger.warning("removed %s, left by a save that was interrupted", name)


def remove_checkpoint(path: str) -> None:
    """Remove a checkpoint file, or a sharded checkpoint's directory; for ``NAME.pt`` also the
    ``NAME.safetensors`` of its pair (after it: a kill between leaves weights no .pt names, which
    the next pruning removes, never a .pt without its weights)."""
    remove_path(path)
    if path.endswith(".pt"):
        partner = weights_path(path)
        if os.path.lexists(partner) and not os.path.isdir(partner):
            os.remove(partner)


# -- reading ---------------------------------------------------------------------------------------
def read_weights(state: Dict[str, Any], path: str) -> None:
    """Replace the ``model_safetensors`` entry of the pair's ``.pt`` (``path``, verified) by the
    weights of its ``.safetensors``, checked against the SHA-256 that entry stores.

    Raises:
        CheckpointError: the weights file is missing, altered, of another save, or unreadable.
    """
    record = state.pop(WEIGHTS_KEY)
    check_weights_record(record, path)
    if "model" in state:
        raise CheckpointError(f"{path} holds both a 'model' entry and the 'model_safetensors' of a "
                              "safetensors pair, which no save writes; use another checkpoint")
    weights = weights_path(path)
    try:
        verify_weights_file(weights, record, path)
        source = weights
    except CheckpointError:
        source = interrupted_save_weights(weights, record)
        if source is None:
            raise
    st = import_safetensors(f"reading {weights} (a checkpoint saved with checkpoint.save_format=safetensors)")
    try:
        tensors = st.load_file(source)
    except Exception as e:  # noqa: BLE001 -- verified bytes that do not parse: one line
        raise CheckpointError(f"cannot read {weights}: {type(e).__name__}: "
                              f"{(str(e).splitlines() or [''])[0]}; use another checkpoint") from None
    try:
        state["model"] = join_model_state(tensors, record)
    except KeyError as e:
        raise CheckpointError(f"{weights} lacks the weight {e.args[0]!r} that {path} lists; "
                              "use another checkpoint") from None




def interrupted_save_weights(weights: str, record: Dict[str, Any]) -> Optional[str]:
    """The weights a pair's ``.pt`` names when they are still in the save's temporary file.

    A save renames the new ``NAME.pt`` into place first and its complete, fsynced
    ``.tmp_NAME.safetensors.<pid>.*`` second: a save killed between the two renames leaves the
    new ``.pt`` beside the previous ``NAME.safetensors``. When such a temporary file has the size
    and SHA-256 the ``.pt`` stores, the save is completed (the file renamed into place, with one
    warning) if its writer is dead, or read where it is if the writer is still renaming it.

    Returns:
        The path to read the weights from, or None when no temporary file matches.
    """
    directory = os.path.dirname(os.path.abspath(weights))
    name = os.path.basename(weights)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    matching = []  # (writer alive, name) of the temporary files holding these weights
    for candidate in names:
        m = _WEIGHTS_TEMP.fullmatch(candidate)
        if not m or m.group(1) != name:
            continue
        if not weights_file_matches(os.path.join(directory, candidate), record):
            continue
        pid = int(m.group(2))
        matching.append((pid == os.getpid() or pid_alive(pid), candidate))
    # a live writer's file first, whatever the order of the names: its writer renames it in a
    # moment, so the save is left to finish (a dead writer's file is only renamed when none is)
    for alive, candidate in sorted(matching, key=lambda item: not item[0]):
        temp = os.path.join(directory, candidate)
        if alive:
            return temp
        try:
            os.replace(temp, weights)
        except OSError:
            return temp if os.path.isfile(temp) else (weights if weights_file_matches(weights, record) else None)
        logger.warning("completed the save that was interrupted: %s now holds the weights its .pt "
                       "names (they were still in %s)", weights, candidate)
        return weights
    return None
