"""fairseq's checkpoint functions, at fairseq's import path.

The code lives in :mod:`fairseq.checkpoint`, one job per module (atomic writes, the state
format and its integrity record, save rules and pruning, upgrade of old layouts, loading,
resume, sharded directories); this module re-exports it under the names fairseq's scripts and
tests use (``save_checkpoint``, ``load_checkpoint``, ``load_checkpoint_to_cpu``,
``load_model_ensemble_and_task``, ``torch_persistent_save``, ...).
"""
import os
from typing import Any

import torch

from fairseq.checkpoint.files import atomic_copy, atomic_link, atomic_save  # noqa: F401
from fairseq.checkpoint.integrity import verify_integrity, with_integrity  # noqa: F401
from fairseq.checkpoint.loading import (  # noqa: F401
    PluginRequiredError, config_from_checkpoint, load_checkpoint_to_cpu, load_ema_from_checkpoint,
    load_model_ensemble, load_model_ensemble_and_task, load_model_for_inference, prune_state_dict,
)
from fairseq.checkpoint.resume import (  # noqa: F401
    checkpoint_path_to_restore, load_checkpoint, remove_partial_writes, reshard_data_position,
    restore_save_names,
)
from fairseq.checkpoint.saving import (  # noqa: F401
    SaveDirError, is_better, save_checkpoint, save_run_config, verify_checkpoint_directory,
    wait_for_checkpoint_writes,
)
from fairseq.checkpoint.state import (  # noqa: F401
    CHECKPOINT_VERSION, SAFE_GLOBALS, get_rng_state, plain_config, set_rng_state,
)
from fairseq.checkpoint.upgrade import namespace_to_config_dict  # noqa: F401
from fairseq.errors import CheckpointError  # noqa: F401
from fairseq.file_io import PathManager, atomic_write  # noqa: F401


# fairseq's own write functions, defined here because fairseq's scripts and tests patch
# ``checkpoint_utils._torch_persistent_save`` and ``checkpoint_utils.PathManager``
def torch_persistent_save(obj: Any, filename: str, async_write: bool = False) -> None:
    """``torch.save`` ``obj`` to ``filename``: atomically (temporary file, fsync, rename), or
    through ``PathManager.opena`` with ``async_write`` (fairseq's signature). A checkpoint dict
    (one with a ``model`` entry) gets the SHA-256 record of its whole content (:mod:`fairseq.checkpoint.integrity`)."""
    if isinstance(obj, dict) and "model" in obj:
        obj = with_integrity(obj)
    if async_write:
        if os.path.isfile(filename) and os.stat(filename).st_nlink > 1:
            os.unlink(filename)  # written in place: never through a hard link into another name
        with PathManager.opena(filename, "wb") as f:
            _torch_persistent_save(obj, f)
    else:
        atomic_write(filename, lambda f: _torch_persistent_save(obj, f))


def _torch_persistent_save(obj: Any, f: Any) -> None:
    """``torch.save`` to a path or an open file."""
    if isinstance(f, str):
        with PathManager.open(f, "wb") as handle:
            torch.save(obj, handle)
        return
    torch.save(obj, f)
