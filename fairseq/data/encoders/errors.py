"""The error of a subword model or tokenizer that cannot be set up from the user's settings."""
from fairseq.errors import DataError


class EncoderSetupError(DataError):
    """A missing or unreadable BPE file, a URL given where a local path is needed, a missing
    optional package."""


def local_file(key: str, path: str) -> str:
    """``path`` if it is a readable local file; otherwise a clear :class:`EncoderSetupError`."""
    import os

    if path in (None, "", "???"):
        raise EncoderSetupError(f"{key} is not set: give the path of the file")
    if "://" in str(path):
        raise EncoderSetupError(
            f"{key}={path!r} is a URL, and nothing is downloaded here: fetch the file yourself "
            f"and set {key} to its local path")
    if not os.path.isfile(path):
        raise EncoderSetupError(f"{key}={path!r}: no such file")
    return str(path)


def require(package: str, pip_name: str, what: str):
    """Import an optional package or explain how to install it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise EncoderSetupError(f"{what} needs the {pip_name!r} package: pip install {pip_name}") from e
