"""Atomic file writes for checkpoints: a temporary file beside the target, fsynced, renamed
over it, so a reader (or a run killed midway) sees the old file or the whole new one, never a
part. Temporary names carry the writer's PID, so start-up cleanup never deletes the file of a
live writer. Files get the mode the umask gives, as ``open`` would.
"""
import errno
import os
import re
import shutil
import stat
import tempfile
from typing import Any, Optional

import torch

from fairseq.file_io import _atomic_write, _fsync_dir, _temp_prefix, _umask, atomic_write  # noqa: F401
from fairseq.save_dir_lock import pid_alive

__all__ = ["atomic_copy", "atomic_link", "atomic_save", "atomic_write", "pid_alive"]


# The names the writers here (and sharded.py's temporary directories) give their temporaries:
# ``.tmp_<checkpoint name>.<writer pid>.<random>``; start-up cleanup deletes nothing else.
_TEMP_NAME = re.compile(r"\.tmp_(checkpoint[\w.\-]*\.pt)\.(\d+)\.([A-Za-z0-9_]+)")
# The same before names carried the PID: ``.tmp_<checkpoint name><random>`` (files only).
_PID_LESS_TEMP_NAME = re.compile(r"\.tmp_(checkpoint[\w.\-]*\.pt)([a-z0-9_]+)")


def temp_writer_pid(directory: str, name: str) -> Optional[int]:
    """The PID of the writer that left the temporary ``name`` in ``directory``: 0 for a file of
    the PID-less naming, None when ``name`` is no temporary of this project (a user's file,
    a symbolic link, a directory not named as sharded.py names its temporary directories)."""
    try:
        mode = os.lstat(os.path.join(directory, name)).st_mode
    except OSError:
        return None
    m = _TEMP_NAME.fullmatch(name)
    if m and (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return int(m.group(2))
    if _PID_LESS_TEMP_NAME.fullmatch(name) and stat.S_ISREG(mode):
        return 0
    return None


def writer_gone(pid: int) -> bool:
    """Whether the writer ``pid`` of a temporary is no longer writing it: dead, unknown (0), or
    this very process (start-up cleanup runs before this process writes anything)."""
    return pid <= 0 or pid == os.getpid() or not pid_alive(pid)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_copy(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically."""
    def copy(out) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 24)

    _atomic_write(dst, copy)


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
    tmp = os.path.join(directory, _temp_prefix(dst) + next(tempfile._get_candidate_names()))
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
    _fsync_dir(directory)
    return "link"

