"""Memory-mapped datasets of integer token sequences: ``PREFIX.bin`` + ``PREFIX.idx``.

``PREFIX.bin`` holds every sequence's tokens back to back, in one fixed integer dtype.
``PREFIX.idx`` describes how to cut it. It is exactly fairseq's ``MMapIndexedDataset``
index, little-endian throughout, so data-bin folders move freely between fairseq 0.12
and this package::

    bytes 0-8    magic  b"MMIDIDX\\x00\\x00"
    uint64       format version (1)
    uint8        dtype code of the .bin tokens (see ``DTYPE_CODES``)
    uint64       number of sequences N
    int32[N]     sequence lengths, in tokens
    int64[N]     byte offset of each sequence in the .bin

Earlier versions of this package wrote one more field after N (a document count D) and
``int64[D]`` document boundaries at the end. Such files are recognised by their length
and still read (the boundaries are ignored: document breaks are empty lines, i.e.
sequences of ``document_sep_len`` tokens, as in fairseq); rerun ``fairseq-preprocess`` to
rewrite them in fairseq's layout.

Both files are read through ``numpy.memmap``: pages are loaded on demand and shared between
processes. Opening a dataset checks, vectorised, that the index describes the ``.bin`` exactly
(entries back to back from byte 0 to its last byte), so a damaged pair is refused instead of
read as other tokens or none; the check reads only the index (about 10 ms per 2 million
sequences) and is done once per pair and process.
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
from array import array
from typing import Any, Dict, NamedTuple, Optional, Tuple, Type

import numpy as np
import torch

from fairseq.data import index_checks
from fairseq.errors import DataError

logger = logging.getLogger(__name__)

__all__ = [
    "MMapIndexedDataset",
    "MMapIndexedDatasetBuilder",
    "best_fitting_int_dtype",
    "data_file_path",
    "dataset_exists",
    "index_file_path",
    "infer_dataset_impl",
    "make_builder",
    "make_dataset",
    "SUPPORTED_IMPLS",
]

SUPPORTED_IMPLS = ("mmap",)

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# magic, version (uint64), dtype code (uint8), sequence count (uint64)
_HEADER = struct.Struct(f"<{len(INDEX_MAGIC)}sQBQ")
# The document count that indexes written by earlier versions of this package carried next.
_LEGACY_DOC_COUNT = struct.Struct("<Q")

DTYPE_CODES: Dict[int, Type[np.generic]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.double,
    8: np.uint16,
    9: np.uint32,
    10: np.uint64,
}
# The first code of each dtype (6 and 7 are both float64; fairseq writes 6).
_CODE_OF_DTYPE = {}
for _code, _dtype in DTYPE_CODES.items():
    _CODE_OF_DTYPE.setdefault(np.dtype(_dtype), _code)

# Vocabularies below this size fit uint16 with room to spare for a few added symbols.
_UINT16_VOCAB_LIMIT = 65500
_UINT32_LIMIT = 4294967295


def data_file_path(prefix: str) -> str:
    """Path of the token file of the dataset at ``prefix``: ``prefix + ".bin"``."""
    return prefix + ".bin"


def index_file_path(prefix: str) -> str:
    """Path of the index file of the dataset at ``prefix``: ``prefix + ".idx"``."""
    return prefix + ".idx"


def best_fitting_int_dtype(max_int_to_represent: Optional[int]) -> Type[np.generic]:
    """Smallest dtype able to store integers up to ``max_int_to_represent`` (fairseq's rule).

    Args:
        max_int_to_represent: e.g. a vocabulary size; None when unknown.

    Returns:
        ``np.uint32`` when unknown, ``np.uint16`` below 65500, ``np.uint32`` below
        4294967295, else ``np.int64`` (never uint64, whose arithmetic with Python ints
        promotes to float).
    """
    if max_int_to_represent is None:
        return np.uint32
    if max_int_to_represent < _UINT16_VOCAB_LIMIT:
        return np.uint16
    if max_int_to_represent < _UINT32_LIMIT:
        return np.uint32
    return np.int64


def _check_impl(impl: str) -> None:
    if impl not in SUPPORTED_IMPLS:
        raise DataError(
            f"dataset implementation {impl!r} is not supported; supported: {', '.join(SUPPORTED_IMPLS)} "
            f"(use --dataset-impl mmap and rerun fairseq-preprocess)"
        )


def dataset_exists(prefix: str, impl: str = "mmap") -> bool:
    """Whether both files of the dataset at ``prefix`` exist.

    Raises:
        ValueError: if ``impl`` is not a supported implementation.
    """
    _check_impl(impl)
    return MMapIndexedDataset.exists(prefix)


def make_builder(out_file: str, impl: str, vocab_size: Optional[int] = None) -> "MMapIndexedDatasetBuilder":
    """Open a builder writing tokens to ``out_file`` (the ``.bin`` path).

    Args:
        out_file: path of the ``.bin`` file to create.
        impl: dataset implementation; only ``"mmap"``.
        vocab_size: tokens are stored in ``best_fitting_int_dtype(vocab_size)`` (uint32
            when None, as fairseq does).

    Raises:
        ValueError: if ``impl`` is not supported.
    """
    _check_impl(impl)
    return MMapIndexedDatasetBuilder(out_file, dtype=best_fitting_int_dtype(vocab_size))


def infer_dataset_impl(path: str) -> Optional[str]:
    """``"mmap"`` if ``path.idx``/``path.bin`` are an mmap dataset, else None."""
    if not MMapIndexedDataset.exists(path):
        return None
    with open(index_file_path(path), "rb") as file:
        return "mmap" if file.read(len(INDEX_MAGIC)) == INDEX_MAGIC else None


def make_dataset(
    prefix: str, impl: str = "mmap", fix_lua_indexing: bool = False, dictionary: Any = None
) -> Optional["MMapIndexedDataset"]:
    """Open the dataset at ``prefix``, or return None if neither of its files exists.

    ``fix_lua_indexing`` and ``dictionary`` are accepted for fairseq compatibility; they
    only matter to implementations other than mmap.

    Raises:
        ValueError: if ``impl`` is not supported.
        FileNotFoundError: if one of the two files is missing.
        DataError: if a file is not a regular file, or the pair is corrupt.
    """
    _check_impl(impl)
    if not any(os.path.lexists(path) for path in (index_file_path(prefix), data_file_path(prefix))):
        return None
    # one of the two is there: opening names what is wrong (a half missing, a directory, ...)
    return MMapIndexedDataset(prefix)


class _Index(NamedTuple):
    """What an ``.idx`` file holds, its arrays memory-mapped."""

    dtype: np.dtype
    sizes: np.ndarray
    pointers: np.ndarray
    # sequence ids where documents start; only in the layout of earlier versions of this package
    doc_idx: Optional[np.ndarray]


def _parse_index(index_file: str) -> _Index:
    """Parse an ``.idx`` file, memory-mapped; its header and length are checked, not its entries.

    Reads fairseq's layout and the layout of earlier versions of this package (which
    carried a document index, ignored when reading sequences).

    Raises:
        FileNotFoundError: if the file does not exist.
        DataError: if the path is not a file or the file is not a well-formed index.
    """
    index_checks.require_regular_file(index_file)
    not_an_index = (
        f"{index_file} is not a fairseq mmap index (corrupt or from another tool); rerun fairseq-preprocess"
    )
    file_size = os.path.getsize(index_file)
    with open(index_file, "rb") as file:
        header_bytes = file.read(_HEADER.size + _LEGACY_DOC_COUNT.size)
    if len(header_bytes) < _HEADER.size or not header_bytes.startswith(INDEX_MAGIC):
        raise DataError(not_an_index)
    _, version, dtype_code, num_sequences = _HEADER.unpack(header_bytes[: _HEADER.size])
    if version != INDEX_VERSION:
        raise DataError(f"{not_an_index} [unsupported index version {version}, expected {INDEX_VERSION}]")
    if dtype_code not in DTYPE_CODES:
        raise DataError(f"{not_an_index} [unknown dtype code {dtype_code}]")
    sizes_offset = _HEADER.size
    expected_size = _HEADER.size + num_sequences * (4 + 8)
    legacy_doc_count = None
    if file_size != expected_size:
        if len(header_bytes) == _HEADER.size + _LEGACY_DOC_COUNT.size:
            (legacy_doc_count,) = _LEGACY_DOC_COUNT.unpack(header_bytes[_HEADER.size :])
        legacy_size = expected_size + _LEGACY_DOC_COUNT.size + 8 * (legacy_doc_count or 0)
        if legacy_doc_count is None or file_size != legacy_size:
            raise DataError(
                f"{not_an_index} [header announces {num_sequences} sequences, i.e. {expected_size} bytes, "
                f"but the file has {file_size} bytes: truncated?]"
            )
        logger.warning(
            "%s uses the index layout of earlier versions of this package (with a document index); "
            "it is read, but fairseq cannot read it: rerun fairseq-preprocess to rewrite it",
            index_file,
        )
        sizes_offset += _LEGACY_DOC_COUNT.size

    def section(dtype: type, count: int, offset: int) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(index_file, mode="r", dtype=dtype, shape=(count,), offset=offset)

    sizes = section(np.int32, num_sequences, sizes_offset)
    pointers = section(np.int64, num_sequences, sizes_offset + 4 * num_sequences)
    doc_idx = None
    if legacy_doc_count is not None:
        doc_idx = section(np.int64, legacy_doc_count, sizes_offset + 12 * num_sequences)
    return _Index(np.dtype(DTYPE_CODES[dtype_code]), sizes, pointers, doc_idx)


def _read_index(index_file: str) -> Tuple[np.dtype, np.ndarray, np.ndarray]:
    """Parse an ``.idx`` file into (dtype, sizes, pointers), memory-mapped (see :func:`_parse_index`)."""
    index = _parse_index(index_file)
    return index.dtype, index.sizes, index.pointers


def write_index(index_file: str, dtype: np.dtype, sizes: np.ndarray) -> None:
    """Write fairseq's ``.idx`` for sequences of ``sizes`` tokens stored back to back."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) and (sizes.max() > np.iinfo(np.int32).max or sizes.min() < 0):
        raise ValueError(f"sequence lengths must fit int32 to be indexed in {index_file}")
    pointers = np.zeros(len(sizes), dtype=np.int64)
    if len(sizes) > 1:
        np.cumsum(sizes[:-1], dtype=np.int64, out=pointers[1:])
    pointers *= np.dtype(dtype).itemsize
    with open(index_file, "wb") as file:
        file.write(_HEADER.pack(INDEX_MAGIC, INDEX_VERSION, _CODE_OF_DTYPE[np.dtype(dtype)], len(sizes)))
        file.write(sizes.astype("<i4").tobytes(order="C"))
        file.write(pointers.astype("<i8").tobytes(order="C"))


class MMapIndexedDatasetBuilder:
    """Streams sequences into a ``.bin`` file, then writes the matching ``.idx``.

    Only the sequence lengths are kept in memory (8 bytes per sequence), so arbitrarily
    large corpora can be written.

    Args:
        out_file: path of the ``.bin`` file to create (overwritten if present).
        dtype: integer dtype the tokens are stored in.

    Raises:
        ValueError: if ``dtype`` is not one of the supported integer dtypes.
    """

    def __init__(self, out_file: str, dtype: Any = np.int64) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in _CODE_OF_DTYPE:
            supported = ", ".join(sorted(str(d) for d in _CODE_OF_DTYPE))
            raise ValueError(f"cannot store tokens of {out_file} as {self.dtype}; supported dtypes: {supported}")
        self.out_file = out_file
        self._data_file = open(out_file, "wb")
        self._sizes = array("q")
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            self._min_value, self._max_value = int(info.min), int(info.max)
        else:  # float storage: no integer range to check
            self._min_value, self._max_value = -np.inf, np.inf

    def add_item(self, tensor: Any) -> None:
        """Append one sequence.

        Args:
            tensor: a 1-D tensor, array or list of integer token ids.

        Raises:
            ValueError: if a value does not fit the builder's dtype.
        """
        values = tensor.numpy() if torch.is_tensor(tensor) else np.asarray(tensor)
        values = values.reshape(-1)
        if values.size:
            low, high = values.min().item(), values.max().item()
            if low < self._min_value or high > self._max_value:
                raise ValueError(
                    f"token id range [{low}, {high}] does not fit dtype {self.dtype} of {self.out_file}; "
                    f"create the builder with a wider dtype (make_builder(..., vocab_size=len(dictionary)))"
                )
        self._data_file.write(values.astype(self.dtype, copy=False).tobytes(order="C"))
        self._sizes.append(values.size)

    def merge_file_(self, other_prefix: str) -> None:
        """Append the finalized dataset at ``other_prefix`` to this one, streaming its tokens.

        Used to join per-worker shards in order without loading them into memory.

        Raises:
            ValueError: if the other dataset is corrupt or stores another dtype.
        """
        other_dtype, other_sizes, _ = _read_index(index_file_path(other_prefix))
        if other_dtype != self.dtype:
            raise ValueError(
                f"cannot merge {index_file_path(other_prefix)} (tokens stored as {other_dtype}) into "
                f"{self.out_file} (tokens stored as {self.dtype}); binarize both with the same dictionary"
            )
        self._sizes.frombytes(np.asarray(other_sizes, dtype=np.int64).tobytes())
        with open(data_file_path(other_prefix), "rb") as other_data:
            shutil.copyfileobj(other_data, self._data_file, length=1 << 22)

    def discard(self) -> None:
        """Close and delete the partly written ``.bin`` file; no index is written."""
        self._data_file.close()
        if os.path.exists(self.out_file):
            os.remove(self.out_file)

    def finalize(self, index_file: str) -> None:
        """Close the ``.bin`` file and write ``index_file`` (the ``.idx`` path)."""
        self._data_file.close()
        sizes = np.frombuffer(self._sizes, dtype=np.int64) if len(self._sizes) else np.zeros(0, np.int64)
        if len(sizes) and sizes.max() > np.iinfo(np.int32).max:
            raise ValueError(f"a sequence of {int(sizes.max())} tokens is too long for the index of {self.out_file}")
        write_index(index_file, self.dtype, sizes)


class MMapIndexedDataset(torch.utils.data.Dataset):
    """Read-only dataset of token sequences backed by memory-mapped files.

    Pickling stores only the prefix; the files are mapped again on first access in
    the receiving process, so DataLoader workers start cheaply.

    Args:
        prefix: path without extension; reads ``prefix.bin`` and ``prefix.idx``.

    Raises:
        FileNotFoundError: if a file is missing.
        DataError: if a path is not a file, the index is corrupt, or its entries do not
            describe the ``.bin`` exactly (checked once per pair and process; see
            :func:`fairseq.data.index_checks.check_index`).
    """

    supports_prefetch = False

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self._open()

    def _open(self) -> None:
        index_file, data_file = index_file_path(self.prefix), data_file_path(self.prefix)
        index = _parse_index(index_file)
        index_checks.require_regular_file(data_file)
        index_checks.check_index(index_file, data_file, index.sizes, index.pointers, index.dtype, index.doc_idx)
        self._dtype = index.dtype
        self._sizes, self._pointers = index.sizes, index.pointers
        if os.path.getsize(data_file):
            self._tokens = np.memmap(data_file, mode="r", dtype=index.dtype)
        else:  # numpy cannot map an empty file
            self._tokens = np.zeros(0, dtype=index.dtype)

    def __getstate__(self) -> Dict[str, Any]:
        return {"prefix": self.prefix}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.prefix = state["prefix"]
        self._tokens = None  # mapped again on first access

    def _ensure_open(self) -> None:
        if getattr(self, "_tokens", None) is None:
            self._open()

    @property
    def dtype(self) -> np.dtype:
        """Dtype the tokens are stored in on disk."""
        self._ensure_open()
        return self._dtype

    @property
    def sizes(self) -> np.ndarray:
        """Length of every sequence, as an int32 array of shape (N,)."""
        self._ensure_open()
        return self._sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> torch.Tensor:
        """Return sequence ``i`` as a 1-D int64 tensor.

        Raises:
            IndexError: if ``i`` is out of range.
        """
        self._ensure_open()
        num_sequences = len(self._sizes)
        index = int(i)
        if index < 0:
            index += num_sequences
        if not 0 <= index < num_sequences:
            raise IndexError(f"index {i} out of range for {self.prefix} with {num_sequences} sequences")
        start = int(self._pointers[index]) // self._dtype.itemsize
        tokens = self._tokens[start : start + int(self._sizes[index])]
        return torch.from_numpy(tokens.astype(np.int64))

    def num_tokens(self, i: int) -> int:
        """Length of sequence ``i``."""
        return int(self.sizes[i])

    def size(self, i: int) -> int:
        """Length of sequence ``i``."""
        return int(self.sizes[i])

    def check_token_ids(self, vocab_size: int, dictionary_path: str = "the dictionary") -> None:
        """Check that every token id is in ``[0, vocab_size)`` (the dictionary's ids).

        Cheap: nothing is read when the stored dtype cannot hold an id >= ``vocab_size``;
        otherwise one vectorised pass over the memory-mapped tokens, whose result is kept for
        the rest of the process (keyed by the file's path, size and mtime), so a split loaded
        again is not scanned again.

        Raises:
            DataError: naming the ``.bin``, the first sequence holding a bad id, and the
                dictionary: the data was binarized with another dictionary.
        """
        self._ensure_open()
        index_checks.check_token_ids(self._tokens, self._pointers, data_file_path(self.prefix), vocab_size,
                                     dictionary_path)

    @staticmethod
    def exists(prefix: str) -> bool:
        """Whether both ``prefix.idx`` and ``prefix.bin`` exist."""
        return os.path.isfile(index_file_path(prefix)) and os.path.isfile(data_file_path(prefix))

    def __repr__(self) -> str:
        return f"MMapIndexedDataset({self.prefix!r}, {len(self)} sequences)"
