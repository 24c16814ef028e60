"""Checks that a data-bin pair (``PREFIX.idx`` + ``PREFIX.bin``) is what its index says.

A damaged pair would otherwise be read as other tokens, or as none, without a word: zeroed or
negative pointers, sizes that disagree with them, a truncated ``.bin``, token ids past the
dictionary. Each check is vectorised over chunks of a few MiB and done once per file version
and process: its result is remembered by (path, device, inode, size, mtime), so a split
reopened each epoch or in a forked DataLoader worker costs nothing.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Set, Tuple

import numpy as np

from fairseq.errors import DataError

__all__ = ["check_index", "check_token_ids", "file_key", "first_outside", "forget_checks",
           "require_regular_file", "token_range"]

# Entries checked per step: the check's temporaries stay a few MiB whatever the split's size.
CHECK_CHUNK = 1 << 20
# Tokens per step of a scan: large enough for numpy's speed, small enough to stay in cache
# between the min and the max.
SCAN_CHUNK = 1 << 20
# Keys of the index/data pairs already found consistent.
_checked_pairs: Set[Tuple[Any, ...]] = set()
# Token id range (min, max) of data files already scanned, by the same kind of key.
_token_ranges: Dict[Tuple[Any, ...], Tuple[int, int]] = {}


def forget_checks() -> None:
    """Forget every remembered result, so the next open checks again (benchmarks, tests)."""
    _checked_pairs.clear()
    _token_ranges.clear()


def require_regular_file(path: str) -> None:
    """Refuse a path that is missing or is something other than a file (a directory, a FIFO).

    Raises:
        FileNotFoundError: if nothing is there (or a dangling symlink).
        DataError: if it is not a regular file.
    """
    if os.path.isfile(path):
        return
    role = "index file" if path.endswith(".idx") else "data file" if path.endswith(".bin") else "file"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{role} {path} not found; rerun fairseq-preprocess to create it")
    kind = "a directory" if os.path.isdir(path) else "not a regular file"
    raise DataError(f"{role} {path} is {kind}, not a file; put the file fairseq-preprocess wrote there "
                    "(or rerun fairseq-preprocess)")


def file_key(*paths: str) -> Tuple[Any, ...]:
    """Identity of the files' current contents, as far as a stat tells: a rewrite changes it."""
    key: Tuple[Any, ...] = ()
    for path in paths:
        st = os.stat(path)
        key += (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return key


def check_index(index_file: str, data_file: str, sizes: np.ndarray, pointers: np.ndarray, dtype: np.dtype,
                doc_idx: Optional[np.ndarray] = None) -> None:
    """Check that the entries of an index (``sizes``, ``pointers`` of tokens of ``dtype``)
    describe ``data_file`` exactly, vectorised; once per version of the pair and process.

    An index fairseq or this package writes lists the sequences back to back: entry 0 starts at
    byte 0, each entry starts where the one before ends (pointer + size * itemsize), and the
    last one ends at the end of the ``.bin``. Anything else (zeroed, negative or out-of-range
    pointers, sizes that disagree with them, a truncated or extended ``.bin``) would make
    sequences read garbage or nothing without a word, so it is refused. A legacy document
    index must be non-decreasing sequence ids within the index.

    Raises:
        DataError: naming the index file and its first bad entry.
    """
    key = file_key(index_file, data_file)
    if key in _checked_pairs:
        return
    _check_entries(index_file, data_file, sizes, pointers, dtype)
    if doc_idx is not None and len(doc_idx):
        _check_documents(index_file, data_file, doc_idx, len(sizes))
    _checked_pairs.add(key)


def _check_entries(index_file: str, data_file: str, all_sizes: np.ndarray, all_pointers: np.ndarray,
                   dtype: np.dtype) -> None:
    data_name = os.path.basename(data_file)
    fix = f"the index does not match {data_name}; rebuild both with fairseq-preprocess"
    itemsize = dtype.itemsize
    data_bytes = os.path.getsize(data_file)
    num_entries = len(all_sizes)
    previous_end = 0
    for start in range(0, num_entries, CHECK_CHUNK):
        stop = min(start + CHECK_CHUNK, num_entries)
        sizes = np.asarray(all_sizes[start:stop], dtype=np.int64)
        pointers = np.asarray(all_pointers[start:stop], dtype=np.int64)
        ends = pointers + sizes * itemsize
        expected = np.empty_like(pointers)
        expected[0] = previous_end
        expected[1:] = ends[:-1]
        negative = np.flatnonzero(sizes < 0)
        misplaced = np.flatnonzero(pointers != expected)
        first_negative = int(negative[0]) if negative.size else None
        first_misplaced = int(misplaced[0]) if misplaced.size else None
        if first_negative is not None and (first_misplaced is None or first_negative <= first_misplaced):
            raise DataError(f"{index_file}: entry {start + first_negative} has a negative size "
                            f"({int(sizes[first_negative])} tokens); the index is corrupt, rebuild it and "
                            f"{data_name} with fairseq-preprocess")
        if first_misplaced is not None:
            entry, pointer = start + first_misplaced, int(pointers[first_misplaced])
            if entry == 0:
                raise DataError(f"{index_file}: entry 0 points at byte {pointer} but the first entry "
                                f"starts at byte 0; {fix}")
            raise DataError(f"{index_file}: entry {entry} points at byte {pointer} but entry {entry - 1} "
                            f"ends at byte {int(expected[first_misplaced])}; {fix}")
        previous_end = int(ends[-1])
    if previous_end != data_bytes:
        index_name = os.path.basename(index_file)
        what = (f"the last entry ({num_entries - 1}) of {index_name} ends at byte {previous_end}" if num_entries
                else f"{index_name} lists no sequence")
        raise DataError(f"{data_file} has {data_bytes} bytes but {what} (truncated, or written by another "
                        "run?); rebuild both with fairseq-preprocess")


def _check_documents(index_file: str, data_file: str, doc_idx: np.ndarray, num_entries: int) -> None:
    boundaries = np.asarray(doc_idx, dtype=np.int64)
    bad = np.flatnonzero((boundaries < 0) | (boundaries > num_entries) | (np.diff(boundaries, prepend=0) < 0))
    if bad.size:
        k = int(bad[0])
        raise DataError(f"{index_file}: document boundary {k} is sequence {int(boundaries[k])}, outside "
                        f"0-{num_entries} or before the boundary ahead of it; the index does not match "
                        f"{os.path.basename(data_file)}; rebuild both with fairseq-preprocess")


def check_token_ids(tokens: np.ndarray, pointers: np.ndarray, data_file: str, vocab_size: int,
                    dictionary_path: str = "the dictionary") -> None:
    """Check that every id of ``tokens`` (the memory-mapped ``data_file``) is in ``[0, vocab_size)``.

    Cheap: nothing is read when the stored dtype cannot hold an id >= ``vocab_size``; otherwise
    one vectorised pass, whose (min, max) is remembered for the rest of the process.

    Raises:
        DataError: naming the ``.bin``, the first sequence holding a bad id, and the
            dictionary: the data was binarized with another dictionary.
    """
    if not len(tokens):
        return
    if tokens.dtype.kind == "u" and np.iinfo(tokens.dtype).max < vocab_size:
        return
    key = file_key(data_file)
    if key not in _token_ranges:
        _token_ranges[key] = token_range(tokens)
    low, high = _token_ranges[key]
    if low >= 0 and high < vocab_size:
        return
    position = first_outside(tokens, vocab_size)
    if position is None:  # rewritten in place since its scan, within the mtime's resolution
        _token_ranges[key] = token_range(tokens)
        return
    token_starts = np.asarray(pointers, dtype=np.int64) // tokens.dtype.itemsize
    entry = int(np.searchsorted(token_starts, position, side="right")) - 1
    bad_id = tokens[position].item()  # a float when stored as floats: shown as it is
    raise DataError(
        f"{data_file}: sequence {entry} (token {position - int(token_starts[entry])} of it) holds "
        f"token id {bad_id} but {dictionary_path} has {vocab_size} symbols (ids 0-{vocab_size - 1}): "
        "the data was binarized with another dictionary; use that dict.txt, or rerun "
        "fairseq-preprocess with --srcdict of this one")


def _not_an_id(chunk: np.ndarray) -> np.ndarray:
    """Mask of the values of a float-stored ``chunk`` that are no token id (NaN, inf, fractions)."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(chunk) | (chunk != np.floor(chunk))


def token_range(tokens: np.ndarray) -> Tuple[int, int]:
    """(smallest, largest) id of ``tokens`` (non-empty), chunk by chunk; unsigned skip the min.

    Float storage (which no writer of this package or fairseq picks) holding a value that is no
    id reports -1 as its smallest, so that the caller looks for it.
    """
    low, high = 0, 0
    kind = tokens.dtype.kind
    for start in range(0, len(tokens), SCAN_CHUNK):
        chunk = tokens[start : start + SCAN_CHUNK]
        if kind == "f" and _not_an_id(chunk).any():
            return -1, high
        high = max(high, int(chunk.max()))
        if kind != "u":
            low = min(low, int(chunk.min()))
    return low, high


def first_outside(tokens: np.ndarray, vocab_size: int) -> Optional[int]:
    """Position of the first value of ``tokens`` that is no id in ``[0, vocab_size)``, if any."""
    for start in range(0, len(tokens), SCAN_CHUNK):
        chunk = tokens[start : start + SCAN_CHUNK]
        outside = (chunk >= vocab_size) | (chunk < 0)
        if tokens.dtype.kind == "f":
            outside |= _not_an_id(chunk)
        bad = np.flatnonzero(outside)
        if bad.size:
            return start + int(bad[0])
    return None
