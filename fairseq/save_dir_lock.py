"""One training run per ``checkpoint.save_dir``: an exclusive lock held for the whole run.

The first process (the only one that writes checkpoints) takes ``fcntl.flock`` on
``save_dir/.lock`` and writes its PID and host into it. The operating system releases the lock
when the process ends, however it ends (SIGKILL included), so a lock file left by a dead run
never blocks the next one; a second live run into the same directory stops at start-up with
one line naming the holder. A run that ends normally removes the file.
"""
import contextlib
import errno
import logging
import os
import socket
import time
from typing import Iterator, Optional

from fairseq.dataclass.overrides import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX: no lock (see save_dir_lock)
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class SaveDirBusyError(ConfigError):
    """Another live run holds the lock of this save_dir (a user error: exit code 2)."""


def _holder(fd: int) -> str:
    """``PID <pid> on <host>`` as the holder wrote it (it writes just after locking: wait a bit)."""
    text = ""
    for _ in range(50):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if text:
            break
        time.sleep(0.02)
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    if "pid" not in fields:
        return "a process that did not record its PID"
    return f"PID {fields['pid']} on host {fields.get('host', '?')}"


@contextlib.contextmanager
def save_dir_lock(save_dir: str) -> Iterator[Optional[str]]:
    """Hold the exclusive lock of ``save_dir`` for the ``with`` block.

    Yields:
        The lock file's path (``None`` where ``fcntl`` does not exist: no locking there).

    Raises:
        SaveDirBusyError: another live process holds it; the message names its PID and host
            and the fix.
    """
    if fcntl is None:
        logger.warning("no fcntl on this platform: %s is not locked against a second run", save_dir)
        yield None
        return
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _holder(fd)
            os.close(fd)
            raise SaveDirBusyError(
                f"checkpoint.save_dir {save_dir} is in use by another training run ({holder}, "
                f"lock file {path}); two runs would overwrite each other's checkpoints. Give this "
                "run another save_dir (--save-dir DIR / checkpoint.save_dir=DIR), or wait until "
                "that run ends") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        # the previous holder removed this file as it ended, after we opened it: lock the new one
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid={os.getpid()} host={socket.gethostname()}\n".encode())
        os.fsync(fd)
        yield path
    finally:
        # a clean end removes the file (still locked, so a run waiting on it retries on a new
        # one); a killed run leaves it, unlocked, and the next run simply takes it
        try:
            os.remove(path)
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
