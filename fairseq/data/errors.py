"""The error raised for unusable data files (its class lives in :mod:`fairseq.errors`)."""
from fairseq.errors import DataError

__all__ = ["DataError"]
