"""The errors a user can cause, as one family (the bottom layer: it imports nothing of fairseq).

Every door (``fairseq-train``, ``fairseq-hydra-train``, the evaluation commands, preprocessing)
catches :class:`UserError` once and prints its message as one line, no traceback, exiting with
the error's :attr:`~UserError.exit_code`. A message names the key or file, the bad value and the
fix. Anything else that escapes is a bug and keeps its traceback.

Each class also derives from the built-in exception that code catching fairseq's errors
expects (``ValueError`` for a bad value, ``RuntimeError`` for an unusable checkpoint,
``OSError`` for a resource), so ``except ValueError`` keeps working.
"""

__all__ = ["CheckpointError", "CheckpointNotFoundError", "ConfigError", "DataError", "DiskFullError", "ResourceError", "UserError"]


class UserError(Exception):
    """Something the user gave (a config, a file, a directory) that the run cannot use."""

    #: the process's exit status when a door stops on this error
    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config the run cannot start with: an unknown key or choice, a value of the wrong type
    or out of range, a missing required value."""


class DataError(UserError, ValueError):
    """A data file (dictionary, index, binary data, BPE model) that cannot be used as it is."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the run; the message says which and why."""

    exit_code = 1


class CheckpointNotFoundError(CheckpointError):
    """A checkpoint path that names no file: a wrong argument, so bad input (exit 2), not a
    failed run."""

    exit_code = 2


class ResourceError(UserError, OSError):
    """A directory or device the run needs and cannot have: a save_dir that another run holds,
    that cannot be written, a full disk."""


class DiskFullError(ResourceError):
    """A device filled up while the run wrote to it: the run failed (what was written before is
    whole; the partial file is removed)."""

    exit_code = 1
