"""What a checkpoint holds, and how it is read without running code.

A checkpoint is a dict of tensors and plain containers only:

* ``cfg``: the full resolved run config (plain dicts, enums as strings);
* ``model``, ``optimizer``, ``lr_scheduler``, ``num_updates`` (the trainer's state);
* ``extra_state``: epoch, data-iterator position, best validation metric, RNG states, the names
  its save gives it and the number of data shards that wrote it;
* ``task_state``: what the task's ``get_checkpoint_dict`` returned (also merged into
  ``extra_state``; :mod:`fairseq.checkpoint.task_state`);
* ``args``, ``optimizer_history``, ``cfg_own`` and fairseq's weight names: what fairseq 0.12.2
  reads, undone when this package reads the file (:mod:`fairseq.checkpoint.fairseq_layout`);
* ``checkpoint_format``: ``"fairseq.checkpoint"``, the marker of this package's checkpoints
  (fairseq writes none): with it, a missing or malformed ``integrity`` record is an error, not
  a checkpoint of fairseq's to load unverified;
* ``integrity``: the SHA-256 of all of the above, tensors and the rest
  (:mod:`fairseq.checkpoint.integrity`). The marker and the record are added by every writer
  (``with_integrity``) and removed once a load has checked them.

It is read with ``torch.load(weights_only=True)``; the only class allowed besides tensors and
containers is the ``argparse.Namespace`` of checkpoints written before fairseq 0.10.

With ``checkpoint.save_format=safetensors`` a checkpoint is a pair of files, described and
handled in :mod:`fairseq.checkpoint.pair`.
"""
import argparse
import random
from typing import Any, Dict, List

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


def is_full_config(cfg: Any) -> bool:
    """Whether ``cfg`` is the whole run config (else it is its ``checkpoint`` node, as fairseq's
    functions take it)."""
    if isinstance(cfg, (DictConfig, dict)):
        return "checkpoint" in cfg
    return hasattr(cfg, "checkpoint")


# -- loading -----------------------------------------------------------------------------------
# The only classes a checkpoint may hold besides tensors and plain containers: the ``args``
# Namespace of checkpoints written before fairseq 0.10. Anything else is refused unread.
SAFE_GLOBALS: List[type] = [argparse.Namespace]


def safe_torch_load(path: str) -> Any:
    """``torch.load`` of ``path`` onto the CPU, weights only: tensors, plain containers and
    :data:`SAFE_GLOBALS`; anything else is refused unread (loading never runs code)."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)
