"""File access under fairseq's ``PathManager`` interface, on the local file system only.

fairseq routes paths through ``iopath`` so that remote stores can plug in; this project reads
and writes local files, so every method is a thin, standard-library operation. Scripts that call
``PathManager.open(...)``, ``PathManager.exists(...)`` etc. keep working unchanged.

``opena`` gives a file whose contents are written by a background thread when it is closed;
``async_join`` waits for those writes and ``async_close`` also stops the thread.
"""
import errno
import io
import os
import tempfile
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, Callable, List, Optional

from fairseq.errors import DiskFullError

__all__ = ["PathManager", "atomic_write", "atomic_write_path", "fsync_dir", "temp_prefix", "umask"]


class _AsyncWrite:
    """A buffer whose content goes to ``path`` in the background once closed."""

    def __init__(self, path: str, mode: str, open_kwargs: dict):
        super().__init__()
        self._path = path
        self._mode = mode
        self._open_kwargs = open_kwargs

    def close(self) -> None:
        if not self.closed:
            PathManager._submit(self._path, self._mode, self.getvalue(), self._open_kwargs)
        super().close()


class _AsyncWriter(_AsyncWrite, io.StringIO):
    """Text mode."""


class _AsyncBinaryWriter(_AsyncWrite, io.BytesIO):
    """Binary mode."""


class PathManager:
    """Static file operations with fairseq's names and signatures (local paths)."""

    _executor: Optional[ThreadPoolExecutor] = None
    _pending: List[Future] = []
    _lock = threading.Lock()

    @staticmethod
    def open(path: str, mode: str = "r", buffering: int = -1, encoding: Optional[str] = None,
             errors: Optional[str] = None, newline: Optional[str] = None) -> IO[Any]:
        """The built-in :func:`open` with the same arguments."""
        return open(path, mode=mode, buffering=buffering, encoding=encoding, errors=errors,
                    newline=newline)

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        """Copy a file. Returns ``False`` (and copies nothing) when ``dst_path`` exists and
        ``overwrite`` is false, ``True`` after a copy."""
        if os.path.exists(dst_path) and not overwrite:
            return False
        shutil.copyfile(src_path, dst_path)
        return True

    @staticmethod
    def get_local_path(path: str, **kwargs: Any) -> str:
        """The path itself: every path is local here."""
        del kwargs
        return path

    @staticmethod
    def exists(path: str) -> bool:
        return os.path.exists(path)

    @staticmethod
    def isfile(path: str) -> bool:
        return os.path.isfile(path)

    @staticmethod
    def isdir(path: str) -> bool:
        return os.path.isdir(path)

    @staticmethod
    def ls(path: str) -> List[str]:
        """The names in directory ``path`` (not full paths), as :func:`os.listdir`."""
        return os.listdir(path)

    @staticmethod
    def mkdirs(path: str) -> None:
        """Create ``path`` and its parents; an existing directory is fine."""
        os.makedirs(path, exist_ok=True)

    @staticmethod
    def rm(path: str) -> None:
        """Remove the file ``path``."""
        os.remove(path)

    @staticmethod
    def chmod(path: str, mode: int) -> None:
        os.chmod(path, mode)

    @staticmethod
    def register_handler(handler: Any) -> None:
        """Accepted for compatibility; there are no remote handlers to register."""
        del handler

    @staticmethod
    def copy_from_local(local_path: str, dst_path: str, overwrite: bool = False, **kwargs: Any) -> bool:
        """Same as :meth:`copy` (the destination is local too)."""
        del kwargs
        return PathManager.copy(local_path, dst_path, overwrite=overwrite)

    @staticmethod
    def path_requires_pathmanager(path: str) -> bool:
        """Always ``False``: plain file operations reach every path."""
        del path
        return False

    @staticmethod
    def supports_rename(path: str) -> bool:
        del path
        return True

    @staticmethod
    def rename(src: str, dst: str) -> None:
        os.rename(src, dst)

    # -- asynchronous writes ---------------------------------------------------------------
    @staticmethod
    def opena(path: str, mode: str = "w", buffering: int = -1, encoding: Optional[str] = None,
              errors: Optional[str] = None, newline: Optional[str] = None) -> IO[Any]:
        """A file for writing whose content is written in the background when it is closed.

        Only write modes (``w``, ``a``, with ``b`` for bytes) make sense here. Call
        :meth:`async_join` (or :meth:`async_close`) before relying on the file's content.
        """
        if not any(flag in mode for flag in "wa"):
            raise ValueError(f"opena is for writing; got mode {mode!r}")
        kwargs = dict(buffering=buffering, encoding=encoding, errors=errors, newline=newline)
        if "b" in mode:
            return _AsyncBinaryWriter(path, mode, {"buffering": buffering})
        return _AsyncWriter(path, mode, kwargs)

    @classmethod
    def _submit(cls, path: str, mode: str, data: Any, open_kwargs: dict) -> None:
        def write() -> None:
            with open(path, mode, **open_kwargs) as f:
                f.write(data)

        with cls._lock:
            if cls._executor is None:
                cls._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairseq-opena")
            cls._pending.append(cls._executor.submit(write))

    @classmethod
    def async_join(cls) -> bool:
        """Wait for every background write; re-raise the first error. ``True`` if any waited."""
        with cls._lock:
            pending, cls._pending = cls._pending, []
        for future in pending:
            future.result()
        return bool(pending)

    @classmethod
    def async_close(cls) -> bool:
        """Wait for the background writes and stop the writer thread."""
        waited = cls.async_join()
        with cls._lock:
            executor, cls._executor = cls._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        return waited


# -- atomic writes ------------------------------------------------------------------------------
# The one home of the atomic-write helpers: checkpoints, Hugging Face exports, config.json and
# converted configs all go through these, so every file this project writes is whole or absent.
def umask() -> int:
    """The process's umask, without changing it.

    Read from ``/proc/self/status`` where possible, because setting the umask to read it (the
    only portable way) is not thread-safe; elsewhere it is set and restored at once.
    """
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


def temp_prefix(path: str) -> str:
    """The name prefix of a temporary file written for ``path``: ``.tmp_<name>.<pid>.``.

    The PID lets start-up cleanup (``fairseq.checkpoint.resume.remove_partial_writes``) tell a
    dead writer's leftover from a file a live process is still writing.
    """
    return f".tmp_{os.path.basename(path)}.{os.getpid()}."


def atomic_write_path(path: str, write_path: Callable[[str], Any]) -> None:
    """Write ``path`` atomically through a writer that takes a file name.

    ``write_path(tmp)`` is called with a temporary file beside ``path`` (e.g. safetensors'
    ``save_file``); the file is then fsynced and renamed over ``path``, so readers see the old
    file or the complete new one, never a partial write. The file gets the mode the umask gives
    (0644 by default), as ``open`` would, not ``mkstemp``'s 0600.

    Raises:
        DiskFullError: the device filled up (the temporary file is removed).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        os.close(fd)
        fd = -1
        write_path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise DiskFullError(f"no space left on device while writing {path}; free space there "
                                  "or give another checkpoint.save_dir (--save-dir)") from None
        raise
    fsync_dir(directory)


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` atomically: ``write(file)`` fills a temporary binary file beside it,
    which is then fsynced and renamed over ``path`` (see :func:`atomic_write_path`)."""
    def write_path(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_write_path(path, write_path)


def fsync_dir(directory: str) -> None:
    """Flush ``directory``'s entries to disk, so a rename in it survives a crash; a file system
    that cannot open or fsync a directory is left as it is."""
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
