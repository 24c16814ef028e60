"""Atomic file writes for checkpoints: a temporary file beside the target, fsynced, renamed
over it, so a reader (or a run killed midway) sees the old file or the whole new one, never a
part. Temporary names carry the writer's PID, so start-up cleanup never deletes the file of a
live writer. Files get the mode the umask gives, as ``open`` would.
"""
import errno
import os
import re
import shutil
import tempfile
from typing import Any

import torch

from fairseq.errors import CheckpointError
from fairseq.save_dir_lock import pid_alive

__all__ = ["atomic_copy", "atomic_link", "atomic_save", "atomic_write", "pid_alive"]


def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: str) -> str:
    """``.tmp_<name>.<pid>.``: a temporary file names the process writing it, so start-up
    cleanup (:func:`remove_partial_writes`) never deletes one a live process still writes."""
    return f".tmp_{os.path.basename(path)}.{os.getpid()}."


_TEMP_NAME = re.compile(r"\.tmp_checkpoint.*?\.(\d+)\.[A-Za-z0-9_]+")


def _atomic_write(path: str, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``: readers see the old file or the complete new one, never a partial write. The file
    gets the mode the umask gives (0644 by default), as ``open`` would, not mkstemp's 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise CheckpointError(f"no space left on device while writing {path}; free space there "
                                  "or give another checkpoint.save_dir (--save-dir)") from None
        raise
    _fsync_dir(directory)


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


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)



atomic_write = _atomic_write
