"""fairseq's checkpoint functions, at fairseq's import path.

The code lives in :mod:`fairseq.checkpoint`, one job per module (atomic writes, the state
format and its integrity record, save rules and pruning, upgrade of old layouts, loading,
resume, sharded directories); this module re-exports it under the names fairseq's scripts and
tests use (``save_checkpoint``, ``load_checkpoint``, ``load_checkpoint_to_cpu``,
``load_model_ensemble_and_task``, ``torch_persistent_save``, ...).
"""
import os  # noqa: F401 -- module attributes of fairseq's checkpoint_utils, which scripts patch
import torch  # noqa: F401

from fairseq.checkpoint.files import (  # noqa: F401
    _atomic_write, _fsync_dir, _temp_prefix, _umask, atomic_copy, atomic_link, atomic_save,
)
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
    SaveDirError, _torch_persistent_save, is_better, save_checkpoint, save_run_config,
    torch_persistent_save, verify_checkpoint_directory, wait_for_checkpoint_writes,
)
from fairseq.checkpoint.state import (  # noqa: F401
    CHECKPOINT_VERSION, SAFE_GLOBALS, get_rng_state, plain_config, set_rng_state,
)
from fairseq.checkpoint.upgrade import namespace_to_config_dict  # noqa: F401
from fairseq.errors import CheckpointError  # noqa: F401
from fairseq.file_io import PathManager  # noqa: F401
