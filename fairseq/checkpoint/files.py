"""Atomic file writes for checkpoints: a temporary file beside the target, fsynced, renamed
over it, so a reader (or a run killed midway) sees the old file or the whole new one, never a
part. Temporary names carry the writer's PID, so start-up cleanup never deletes the file of a
live writer. Files get the mode the umask gives, as ``open`` would.

The writes themselves live in :mod:`fairseq.file_io` (``atomic_write``, ``atomic_write_path``);
this module adds what checkpoints need on top: links, copies, removal of a file or a sharded
directory, the writer PID of a leftover temporary, and the one-line error for a ``torch.save``
that ran out of space.
"""
import errno
import os
import re
import shutil
import stat
import tempfile
from typing import Any, Optional

import torch

from fairseq.errors import DiskFullError, ResourceError
from fairseq.file_io import atomic_write, fsync_dir, temp_prefix
from fairseq.save_dir_lock import pid_alive

__all__ = ["atomic_copy", "atomic_link", "atomic_save", "atomic_write", "checkpoint_write_error", "pid_alive",
           "remove_path", "temp_writer_pid", "torch_save_checkpoint", "writer_gone"]


# The names the writers here (and sharded.py's temporary directories) give their temporaries:
# ``.tmp_<checkpoint name>.<writer pid>.<random>``; start-up cleanup deletes nothing else.
_TEMP_NAME = re.compile(r"\.tmp_(checkpoint[\w.\-]*\.pt)\.(\d+)\.([A-Za-z0-9_]+)")


def temp_writer_pid(directory: str, name: str) -> Optional[int]:
    """The PID of the writer that left the temporary ``name`` in ``directory``; None when
    ``name`` is no temporary of this project (a user's file, a symbolic link, a directory not
    named as sharded.py names its temporary directories)."""
    try:
        mode = os.lstat(os.path.join(directory, name)).st_mode
    except OSError:
        return None
    m = _TEMP_NAME.fullmatch(name)
    if m and (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return int(m.group(2))
    return None


def writer_gone(pid: int) -> bool:
    """Whether the writer ``pid`` of a temporary is no longer writing it: dead, unknown (0), or
    this very process (start-up cleanup runs before this process writes anything)."""
    return pid <= 0 or pid == os.getpid() or not pid_alive(pid)


def remove_path(path: str) -> None:
    """Remove a checkpoint: a file, or a DCP directory with its files."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_copy(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically."""
    def copy(out) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 24)

    atomic_write(dst, copy)


# link() failures that mean "this filesystem cannot hard-link here": fall back to a copy
_NO_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
                   errno.ENOSYS, errno.EACCES}


def atomic_link(src: str, dst: str) -> str:
    """Make ``dst`` name the same file as ``src``, atomically: a hard link to a temporary name,
    renamed over ``dst``. Where hard links are impossible (another filesystem, EPERM, ...) ``dst``
    becomes an atomic copy instead.

    The names stay independent: every later write of either goes to a new file renamed over it,
    so rewriting one never changes the other's content.

    Returns:
        ``"link"`` or ``"copy"``.
    """
    directory = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(directory, temp_prefix(dst) + next(tempfile._get_candidate_names()))
    try:
        os.link(src, tmp)
    except (OSError, AttributeError, NotImplementedError) as e:
        if isinstance(e, OSError) and e.errno not in _NO_LINK_ERRNOS:
            raise
        atomic_copy(src, dst)
        return "copy"
    try:
        os.replace(tmp, dst)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(directory)
    return "link"


# -- torch.save failures ------------------------------------------------------------------------
# what torch.save raises when the file it writes takes no more bytes: its zip writer swallows the
# OSError (ENOSPC) of the write and fails on the position it expected, or on the write itself
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "inline_container")
# free space below which a failed checkpoint write is put down to a full device
FULL_BELOW_BYTES = 1 << 20


def _free_bytes(path: str) -> Optional[int]:
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def checkpoint_write_error(error: BaseException, save_dir: str, path: str) -> Optional[ResourceError]:
    """The one-line error for ``torch.save`` failing to write checkpoint ``path``: a
    ``RuntimeError`` of its zip writer (``unexpected pos``, ``file write failed``), which is how
    a full disk reaches it. With little space left on the device of ``save_dir`` (asked while
    the partial file still holds what it took) the error says so; otherwise it names the failed
    write. None for any other error.
    """
    text = str(error)
    if not isinstance(error, RuntimeError) or not any(m in text for m in _TORCH_WRITE_FAILED):
        return None
    free = _free_bytes(save_dir)
    fix = "free space or choose another --save-dir (checkpoint.save_dir); the previous checkpoints are untouched"
    if free is not None and free < FULL_BELOW_BYTES:
        return DiskFullError(f"no space left on the device holding save_dir {save_dir!r} while writing {path} "
                             f"({free} bytes free); {fix}")
    reason = " ".join(text.split())[:200]
    left = f"{free} bytes free there" if free is not None else "its free space unknown"
    return DiskFullError(f"cannot write {path}: torch.save failed ({reason}; {left}); check the device "
                         f"holding save_dir {save_dir!r}, {fix}")


def torch_save_checkpoint(obj: Any, f: Any, save_dir: str, path: str) -> None:
    """``torch.save(obj, f)`` into the temporary file ``f`` of checkpoint ``path``; a write
    that fails for lack of space ends in :func:`checkpoint_write_error`'s ResourceError.

    Raises:
        ResourceError: the write failed for lack of space (or a failed zip write), in one line."""
    try:
        torch.save(obj, f)
    except RuntimeError as e:
        error = checkpoint_write_error(e, save_dir, path)
        if error is None:
            raise
        # empty the partial file, so the buffered bytes flushed when it closes fit and its close
        # does not replace this error with another (the caller removes the file)
        try:
            os.ftruncate(f.fileno(), 0)
            f.seek(0)
            f.flush()
        except (OSError, ValueError):
            pass
        raise error from None
