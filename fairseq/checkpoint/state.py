"""What a checkpoint holds, and how it is read without running code.

A checkpoint is a dict of tensors and plain containers only:

* ``cfg``: the full resolved run config (plain dicts, enums as strings);
* ``model``, ``optimizer``, ``lr_scheduler``, ``num_updates`` (the trainer's state);
* ``extra_state``: epoch, data-iterator position, best validation metric, RNG states, the names
  its save gives it and the number of data shards that wrote it;
* ``checkpoint_format``: ``"fairseq.checkpoint"``, the marker of this package's checkpoints
  (fairseq writes none): with it, a missing or malformed ``integrity`` record is an error, not
  a checkpoint of fairseq's to load unverified;
* ``integrity``: the SHA-256 of all of the above, tensors and the rest
  (:mod:`fairseq.checkpoint.integrity`). The marker and the record are added by every writer
  (``with_integrity``) and removed once a load has checked them.

It is read with ``torch.load(weights_only=True)``; the only class allowed besides tensors and
containers is the ``argparse.Namespace`` of checkpoints written before fairseq 0.10.

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
"""
import argparse
import json
import random
from collections import OrderedDict
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

CHECKPOINT_VERSION = 1

# The marker of this package's checkpoints, its own top-level entry (covered by the digest);
# fairseq's checkpoints have no such entry.
FORMAT_KEY = "checkpoint_format"
FORMAT = "fairseq.checkpoint"


def plain_config(cfg: Any) -> Dict[str, Any]:
    """The resolved config as plain containers (safe to load weights-only)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return dict(cfg)


# -- RNG ---------------------------------------------------------------------------------------
def get_rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2]),
             "python": list(random.getstate()[1]), "python_version": random.getstate()[0]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "python" in state:
        random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _is_full_config(cfg: Any) -> bool:
    """Whether ``cfg`` is the whole run config (else it is its ``checkpoint`` node, as fairseq's
    functions take it)."""
    if isinstance(cfg, (DictConfig, dict)):
        return "checkpoint" in cfg
    return hasattr(cfg, "checkpoint")


# -- loading -----------------------------------------------------------------------------------
# The only classes a checkpoint may hold besides tensors and plain containers: the ``args``
# Namespace of checkpoints written before fairseq 0.10. Anything else is refused unread.
SAFE_GLOBALS: List[type] = [argparse.Namespace]


def _torch_load(path: str) -> Any:
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)




# -- the safetensors pair ----------------------------------------------------------------------
# the entry of a pair's NAME.pt that stands for its model weights (see the module docstring)
WEIGHTS_KEY = "model_safetensors"
WEIGHTS_SUFFIX = ".safetensors"
WEIGHTS_VERSION = 1
SAVE_FORMATS = ("pt", "safetensors")


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
        from fairseq.errors import ConfigError

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
