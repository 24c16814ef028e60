"""Sharded checkpoints of ``ddp_backend=fully_sharded``: ``torch.distributed.checkpoint`` (DCP)
directories.

A directory holds ``__<rank>_0.distcp`` files with each process's shards, DCP's ``.metadata``
and ``extra.pt``, a weights-only file with everything that is no model or optimizer tensor
(config, data position, schedule, loss scaler, RNG) and its SHA-256. DCP reshards on load, so a
directory written by N processes loads on M (one process without a process group included).
Directories are written beside their name and renamed into place, so a kill never leaves half
of one under a checkpoint's name.

Run ``python -m fairseq.checkpoint.sharded consolidate DIR OUT.pt`` (or its older path,
``python -m fairseq.distributed.fully_sharded consolidate``) to turn such a directory into the
single-file checkpoint the evaluation tools read.
"""
import argparse
import io
import logging
import os
import pickle
import re
import shutil
import sys
import tempfile
import warnings
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from fairseq.checkpoint.files import remove_path, writer_gone  # noqa: F401 -- remove_path: fully_sharded's names
from fairseq.checkpoint.integrity import with_integrity
from fairseq.checkpoint.state import SAFE_GLOBALS
from fairseq.distributed.fsdp import state_dict_options
from fairseq.file_io import umask

logger = logging.getLogger("fairseq.distributed.fully_sharded")  # its name before the move

EXTRA_FILE = "extra.pt"
METADATA_FILE = ".metadata"


# -- sharded checkpoints (DCP directories) ------------------------------------------------------
# What DCP's pickled .metadata may name: its own dataclasses and torch's plain types. It is
# checked before DCP unpickles it, so loading a checkpoint never runs code from the file.
_METADATA_GLOBALS = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("torch", "Size"), ("torch.serialization", "_get_layout"), ("torch", "strided"),
    ("torch", "contiguous_format"), ("torch", "preserve_format"), ("torch", "channels_last"),
    ("torch._utils", "_rebuild_tensor_v2"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"),
}
_METADATA_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.planner",
                     "torch.distributed.checkpoint._nested_dict", "torch.distributed.checkpoint.filesystem",
                     "torch.distributed.checkpoint._extension", "torch.distributed.checkpoint._hf_utils")


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in _METADATA_GLOBALS or module in _METADATA_MODULES or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def _safe_load_planner() -> Any:
    """DCP's default load planner, except that the non-tensor values it saved (an optimizer's
    lr, betas, ...) are read with ``torch.load(weights_only=True)``, not unpickled freely."""
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class SafeLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                obj = torch.load(value, map_location="cpu", weights_only=True)
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element as set_nested

                set_nested(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return SafeLoadPlanner()


def is_sharded_checkpoint(path: str) -> bool:
    """Whether ``path`` is a DCP checkpoint directory written by :func:`save_sharded`."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, METADATA_FILE))


def check_metadata(path: str) -> None:
    """Refuse a DCP directory whose pickled ``.metadata`` names anything but DCP's own types.

    Raises:
        ValueError: naming the directory and the refused global.
    """
    with open(os.path.join(path, METADATA_FILE), "rb") as f:
        data = f.read()
    try:
        _MetadataUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}/{METADATA_FILE} names {e}, which a torch.distributed.checkpoint "
                         "metadata file never holds; refused unread (loading it could run code)") from None
    except Exception as e:  # noqa: BLE001 -- truncated or corrupt
        raise ValueError(f"{path}/{METADATA_FILE} cannot be read ({type(e).__name__}): the "
                         "directory is incomplete or corrupt; use another checkpoint") from None


def _fsync_tree(path: str) -> None:
    """fsync the files of ``path`` and itself; give it the mode the umask gives (mkdtemp's is 0700)."""
    os.chmod(path, 0o777 & ~umask())
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            with open(full, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp: str, path: str) -> None:
    """Put the complete directory ``tmp`` at ``path``, replacing what is there.

    A directory cannot be renamed over a non-empty one, so an existing ``path`` is first renamed
    to ``.old_<name>.<pid>.<random>`` and removed after the new one is in place; a kill between
    the two renames leaves that old copy, which :func:`recover_old_dirs` puts back.
    """
    directory = os.path.dirname(os.path.abspath(path))
    old = None
    if os.path.lexists(path):
        if os.path.isdir(path):
            old = tempfile.mkdtemp(prefix=f".old_{os.path.basename(path)}.{os.getpid()}.", dir=directory)
            os.rmdir(old)
            os.rename(path, old)
        else:
            os.remove(path)
    os.rename(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# What replace_dir names the directory it moves aside: ``.old_<checkpoint name>.<pid>.<random>``.
_OLD_DIR_NAME = re.compile(r"\.old_(checkpoint[\w.\-]*\.pt)\.(\d+)\.([A-Za-z0-9_]+)")


def _old_dir_target(save_dir: str, entry: str) -> Optional[str]:
    """The checkpoint name ``entry`` was moved aside from, when it is a directory named as
    :func:`replace_dir` names one and its writer is dead; None for anything else (a user's
    ``.old_checkpoint_backup/``, a file, a symbolic link, a live writer's directory)."""
    m = _OLD_DIR_NAME.fullmatch(entry)
    full = os.path.join(save_dir, entry)
    if m is None or os.path.islink(full) or not os.path.isdir(full):
        return None
    if not writer_gone(int(m.group(2))):
        logger.warning("kept %s: process %s, which moved it aside, is alive", entry, m.group(2))
        return None
    return m.group(1)


def recover_old_dirs(save_dir: str) -> List[str]:
    """After a kill inside :func:`replace_dir`: put a ``.old_<name>.<pid>.<random>`` directory
    back where ``<name>`` is missing; remove the others. Only directories of that exact name
    whose writer ``<pid>`` is dead are touched. Returns the names put back."""
    restored: List[str] = []
    if not os.path.isdir(save_dir):
        return restored
    for entry in sorted(os.listdir(save_dir)):
        name = _old_dir_target(save_dir, entry)
        if name is None:
            continue
        target, full = os.path.join(save_dir, name), os.path.join(save_dir, entry)
        if not os.path.lexists(target) and is_sharded_checkpoint(full):
            os.rename(full, target)
            restored.append(name)
            logger.warning("put back %s, moved aside by a save that was interrupted", target)
        else:
            shutil.rmtree(full, ignore_errors=True)
            logger.warning("removed %s, left by a save that was interrupted", entry)
    return restored


def link_dir(src: str, dst: str) -> None:
    """Make ``dst`` a DCP directory with the same files as ``src`` (hard links, copies where
    links are impossible), built aside and renamed into place."""
    directory = os.path.dirname(os.path.abspath(dst))
    tmp = tempfile.mkdtemp(prefix=f".tmp_{os.path.basename(dst)}.{os.getpid()}.", dir=directory)
    try:
        for name in os.listdir(src):
            try:
                os.link(os.path.join(src, name), os.path.join(tmp, name))
            except OSError:
                shutil.copy2(os.path.join(src, name), os.path.join(tmp, name))
        _fsync_tree(tmp)
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def same_dir(a: str, b: str) -> bool:
    """Whether two DCP directories hold the same files (their ``.metadata`` is one inode)."""
    try:
        sa, sb = os.stat(os.path.join(a, METADATA_FILE)), os.stat(os.path.join(b, METADATA_FILE))
    except OSError:
        return False
    return (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)


def save_sharded(path: str, model: nn.Module, optimizer: Optional[torch.optim.Optimizer],
                 extra: Dict[str, Any]) -> None:
    """Write a DCP checkpoint directory at ``path``, atomically; a collective.

    Every process writes its shards into one temporary directory beside ``path`` (named by the
    first process); the first process adds ``extra.pt`` (``extra`` with its SHA-256), fsyncs and
    renames the directory into place. Where there is no process group, this process writes all.

    Args:
        path: the checkpoint name in ``save_dir`` (e.g. ``checkpoint_last.pt``).
        optimizer: the torch optimizer, or ``None`` to leave its state out.
        extra: plain containers and tensors (config, schedule, data position, RNG, ...).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict


    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    directory = os.path.dirname(os.path.abspath(path))
    holder: List[Optional[str]] = [None]
    if rank == 0:
        os.makedirs(directory, exist_ok=True)
        holder[0] = tempfile.mkdtemp(prefix=f".tmp_{os.path.basename(path)}.{os.getpid()}.", dir=directory)
    if distributed:
        dist.broadcast_object_list(holder, src=0)
    tmp = holder[0]
    assert tmp is not None
    state: Dict[str, Any] = {"model": get_model_state_dict(model, options=state_dict_options(False))}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer, options=state_dict_options(False))
    try:
        dcp.save(state, checkpoint_id=tmp)
        if rank == 0:
            torch.save(with_integrity(dict(extra, model={})), os.path.join(tmp, EXTRA_FILE))
            _fsync_tree(tmp)
            replace_dir(tmp, path)
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if distributed:
            dist.barrier()


def read_extra(path: str) -> Dict[str, Any]:
    """The ``extra.pt`` of a DCP checkpoint directory, read weights-only and checked against its
    SHA-256 (a ``model`` entry, empty, marks it as a checkpoint part).

    Raises:
        ValueError: the directory is incomplete, or its ``.metadata`` is unsafe.
        fairseq.checkpoint_utils.CheckpointError: ``extra.pt`` is unreadable or corrupt.
    """
    from fairseq.checkpoint.loading import load_checkpoint_to_cpu

    extra_path = os.path.join(path, EXTRA_FILE)
    if not os.path.isfile(extra_path):
        raise ValueError(f"{path} has no {EXTRA_FILE}: the save that wrote it never completed")
    check_metadata(path)
    return load_checkpoint_to_cpu(extra_path)


def load_sharded(path: str, model: nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> None:
    """Fill ``model`` (sharded or not) and ``optimizer`` (unless ``None``) from the DCP directory
    ``path``, resharding to this run's processes; every process calls it.

    Raises:
        ValueError: the directory's ``.metadata`` is unsafe or unreadable.
        RuntimeError: the saved tensors do not fit the model (DCP names the key).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)

    check_metadata(path)
    state: Dict[str, Any] = {"model": get_model_state_dict(model, options=state_dict_options(False))}
    if optimizer is not None:
        # allocates the moments (a zero step) so that DCP has tensors to load into
        state["optimizer"] = get_optimizer_state_dict(model, optimizer, options=state_dict_options(False))
    with warnings.catch_warnings():  # one process without a process group is intended here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=path, planner=_safe_load_planner())
    set_model_state_dict(model, state["model"], options=state_dict_options(False))
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=state_dict_options(False))


# -- consolidation --------------------------------------------------------------------------------
def consolidate(path: str, out: str) -> str:
    """Write the DCP checkpoint directory ``path`` as one single-file checkpoint ``out``: the
    file ``fairseq-eval-lm``, ``fairseq-generate`` and ``from_pretrained`` read, and that a run of
    any backend resumes from. Runs in one process, without a process group.

    Returns:
        ``out``.
    """
    from fairseq import optim, tasks
    from fairseq.checkpoint.fairseq_layout import to_fairseq_layout, to_fairseq_weights
    from fairseq.checkpoint.files import atomic_save
    from fairseq.checkpoint.loading import config_from_checkpoint

    meta = read_extra(path)
    cfg = config_from_checkpoint(meta, path)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    has_optimizer = "optimizer" in {key.split(".")[0] for key in _dcp_keys(path)}
    optimizer = optim.build_optimizer(cfg.optimizer, list(model.parameters())).optimizer \
        if has_optimizer else None
    load_sharded(path, model, optimizer)
    state = {k: v for k, v in meta.items() if k not in ("model", "integrity")}
    state["model"] = model.state_dict()
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    state = to_fairseq_layout(state)
    to_fairseq_weights(state, model)
    atomic_save(with_integrity(state), out)
    return out


def _dcp_keys(path: str) -> Iterable[str]:
    from torch.distributed.checkpoint import FileSystemReader

    check_metadata(path)
    return FileSystemReader(path).read_metadata().state_dict_metadata.keys()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fairseq.checkpoint.sharded",
        description="Write a sharded (ddp_backend=fully_sharded) checkpoint directory as one file.")
    sub = parser.add_subparsers(dest="command", required=True)
    cons = sub.add_parser("consolidate", help="DIR OUT.pt: one single-file checkpoint")
    cons.add_argument("dir")
    cons.add_argument("out")
    args = parser.parse_args(argv)
    if not is_sharded_checkpoint(args.dir):
        parser.error(f"{args.dir} is not a sharded checkpoint directory (no {METADATA_FILE})")
    print(consolidate(args.dir, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
