"""One training run per ``checkpoint.save_dir``: an exclusive lock held for the whole run.

The first process (the only one that writes checkpoints) takes a POSIX record lock
(``fcntl.lockf``, F_SETLK) on ``save_dir/.lock`` and writes its PID and host into it.

Why a record lock and not ``flock``: a ``flock`` lock belongs to the open file description,
which every ``fork`` shares, so a DataLoader worker forked during the run kept the lock after
the trainer was killed (``kill -9``, a preemption) and refused the immediate rerun until the
worker noticed its parent was gone. A record lock belongs to the process that took it: a forked
child never holds it, and the operating system releases it the moment that process ends, however
it ends. On top of that, forked children close their copy of the descriptor at once
(``os.register_at_fork``), and an ``exec`` never inherits it (``O_CLOEXEC``). Record locks also
work on NFS, where ``flock`` is emulated by them anyway.

A record lock is per process, so a second lock taken by the same process would succeed (and
closing its descriptor would drop the first): this module refuses a second lock of the same file
in one process by itself, and never opens the lock file while holding it.

When the lock is taken by someone while the PID recorded in the file is dead on this host (a
process left behind by a killed run, say a data worker of an older version), the rerun waits up
to :data:`ORPHAN_WAIT_S` seconds for it to exit, then stops naming the holder's PID.

A second live run into the same directory stops at start-up with one line naming the holder.
A run that ends normally removes the file; a killed run leaves it, unlocked, and blocks nothing.
"""
import contextlib
import errno
import logging
import os
import socket
import struct
import sys
import threading
import time
from typing import Dict, Iterator, Optional, Tuple

from fairseq.errors import ConfigError, ResourceError

try:
    import fcntl
except ImportError:  # not POSIX: no lock (see save_dir_lock)
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# how long a rerun waits for processes left by a dead holder to let go of the lock
ORPHAN_WAIT_S = 10.0

# lock files this process holds: (st_dev, st_ino) -> descriptor
_held: Dict[Tuple[int, int], int] = {}
_guard = threading.Lock()


class SaveDirBusyError(ResourceError, ConfigError):
    """Another live run holds the lock of this save_dir (a user error: exit code 2)."""


def _close_in_child() -> None:
    """In a forked child: drop the copies of the lock descriptors (the lock stays the parent's)."""
    for fd in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, dead but not yet reaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _recorded(fd: int) -> Optional[Dict[str, str]]:
    """``{"pid", "host"}`` as the holder wrote them (it writes just after locking: wait a bit)."""
    text = ""
    for _ in range(50):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if text:
            break
        time.sleep(0.02)
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    if not fields.get("pid", "").isdigit():
        return None
    return fields


def _describe(fields: Optional[Dict[str, str]]) -> str:
    if fields is None:
        return "a process that did not record its PID"
    return f"PID {fields['pid']} on host {fields.get('host', '?')}"


def _lock_owner(fd: int) -> Optional[int]:
    """The PID holding a conflicting record lock on ``fd``'s file (Linux's F_GETLK), or None."""
    if not sys.platform.startswith("linux"):
        return None
    layout = "@hhqqi"  # struct flock: l_type, l_whence, l_start, l_len, l_pid
    query = struct.pack(layout, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0) + bytes(16)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return None
    l_type, _, _, _, pid = struct.unpack_from(layout, answer)
    return pid if l_type != fcntl.F_UNLCK and pid > 0 else None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SaveDirBusyError(
                f"the lock file {path} is a symbolic link; a training run never makes one, and "
                "following it could overwrite another file. Remove the link and rerun") from None
        raise


def _busy(save_dir: str, path: str, what: str) -> SaveDirBusyError:
    return SaveDirBusyError(
        f"checkpoint.save_dir {save_dir} is in use by {what}, lock file {path}); two runs would "
        "overwrite each other's checkpoints. Give this run another save_dir (--save-dir DIR / "
        "checkpoint.save_dir=DIR), or wait until that run ends")


def _acquire(save_dir: str, path: str) -> int:
    """Lock ``path`` and return its descriptor, or raise :class:`SaveDirBusyError`."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) in _held:
            raise _busy(save_dir, path, f"another training run in this process (PID {os.getpid()}")
    except FileNotFoundError:
        pass
    waited_since: Optional[float] = None
    while True:
        fd = _open(path)
        if _try_lock(fd):
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            # the previous holder removed this file as it ended, after we opened it: lock the
            # new one (closing ours releases the lock we took on the removed file)
            os.close(fd)
            continue
        fields = _recorded(fd)
        owner = _lock_owner(fd)
        os.close(fd)
        dead = (fields is not None and fields.get("host") == socket.gethostname()
                and not pid_alive(int(fields["pid"])))
        if not dead:
            raise _busy(save_dir, path, f"another training run ({_describe(fields)}")
        # the run that wrote the file is gone, yet something still holds the lock
        now = time.monotonic()
        if waited_since is None:
            waited_since = now
            logger.warning("%s: the run that locked it (%s) has exited but its lock is still held%s; "
                           "waiting up to %.0f s for it to be released", path, _describe(fields),
                           f" by PID {owner}" if owner else "", ORPHAN_WAIT_S)
        if now - waited_since < ORPHAN_WAIT_S:
            time.sleep(0.1)
            continue
        holder = (f"PID {owner} (a process the dead run left behind)" if owner else
                  "a process the dead run left behind (`fuser` on the lock file names it)")
        raise SaveDirBusyError(
            f"checkpoint.save_dir {save_dir} is still locked {ORPHAN_WAIT_S:.0f} s after the run "
            f"that took it ({_describe(fields)}) exited: {holder} holds the lock file {path}. End "
            f"that process{f' (kill {owner})' if owner else ''} and rerun, or give this run "
            "another save_dir (--save-dir DIR / checkpoint.save_dir=DIR)")


@contextlib.contextmanager
def save_dir_lock(save_dir: str) -> Iterator[Optional[str]]:
    """Hold the exclusive lock of ``save_dir`` for the ``with`` block (this process only: the
    processes it forks or spawns never hold it).

    Yields:
        The lock file's path (``None`` where ``fcntl`` does not exist: no locking there).

    Raises:
        SaveDirBusyError: another live process (or another run in this process) holds it; the
            message names its PID and host and the fix.
    """
    if fcntl is None:
        logger.warning("no fcntl on this platform: %s is not locked against a second run", save_dir)
        yield None
        return
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, LOCK_NAME)
    with _guard:
        fd = _acquire(save_dir, path)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        _held[key] = fd
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid={os.getpid()} host={socket.gethostname()}\n".encode())
        os.fsync(fd)
        yield path
    finally:
        # a clean end removes the file (still locked, so a run starting now retries on a new
        # one); a killed run leaves it, unlocked, and the next run simply takes it
        with _guard:
            try:
                os.remove(path)
            except OSError:
                pass
            _held.pop(key, None)
            os.close(fd)  # releases the record lock
