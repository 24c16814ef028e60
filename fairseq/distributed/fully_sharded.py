"""Fully sharded data parallel training (``distributed_training.ddp_backend=fully_sharded``):
the import path of everything about it.

* the sharding itself, with PyTorch's FSDP2 (:func:`shard_model`, :func:`full_state`, ...),
  lives in :mod:`fairseq.distributed.fsdp`;
* the sharded checkpoints (``torch.distributed.checkpoint`` directories: :func:`save_sharded`,
  :func:`load_sharded`, :func:`consolidate`, ...) live in :mod:`fairseq.checkpoint.sharded`,
  a layer above; they were defined here before, and code written then imports them from here.

``python -m fairseq.distributed.fully_sharded consolidate DIR OUT.pt`` runs that module's
command, as ``python -m fairseq.checkpoint.sharded consolidate`` does.
"""
import sys

# the one import of this package that goes up a layer (listed under ignore_imports in setup.cfg):
# fairseq.checkpoint.sharded imports fairseq.distributed.fsdp, never this module, so no cycle
from fairseq.checkpoint.sharded import (
    EXTRA_FILE, METADATA_FILE, check_metadata, consolidate, is_sharded_checkpoint, link_dir, load_sharded,
    main, read_extra, recover_old_dirs, remove_path, replace_dir, same_dir, save_sharded,
)
from fairseq.distributed.fsdp import (
    BACKEND, full_state, is_fully_sharded, load_full_model, load_full_optimizer, local_parameter_bytes,
    local_tensor, parameter_names, replicated_value, saves_sharded, shard_model, state_dict_options,
)

__all__ = [
    "BACKEND", "EXTRA_FILE", "METADATA_FILE", "check_metadata", "consolidate", "full_state",
    "is_fully_sharded", "is_sharded_checkpoint", "link_dir", "load_full_model", "load_full_optimizer",
    "load_sharded", "local_parameter_bytes", "local_tensor", "main", "parameter_names", "read_extra",
    "recover_old_dirs", "remove_path", "replace_dir", "replicated_value", "same_dir", "save_sharded",
    "saves_sharded", "shard_model", "state_dict_options",
]

if __name__ == "__main__":
    sys.exit(main())
