#!/usr/bin/env python3
"""What checking a data-bin split costs when it is opened: the index check and the token id scan.

A split of ``--tokens`` tokens (default 50M) in sentences of 1 to 48 tokens (random, fixed seed)
is written with the package's own index writer: uint16 tokens (a 50k vocabulary), a fairseq
``.idx``. Then, ``--rounds`` times, each in a fresh cache state of this process:

* ``index``: open the split (header, then every entry checked against the ``.bin``);
* ``scan``: the token id scan of ``check_token_ids`` (largest id below the vocabulary size);
* ``reopen``: open it again and scan again in the same process (both remembered, no work).

``--cold`` also asks the kernel to drop both files from its page cache before each round
(``posix_fadvise DONTNEED``, these two files only), to time a first read from disk.

    python benchmarks/bench_data_bin_check.py [--tokens 50000000] [--rounds 3] [--cold]

Prints medians in seconds and the rates, as JSON.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fairseq.data import index_checks, indexed_dataset  # noqa: E402

VOCAB = 50000


def write_split(prefix: str, tokens: int, seed: int = 1) -> int:
    """Write ``prefix.bin/.idx`` with about ``tokens`` tokens; returns the number of sentences."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 49, size=tokens // 24 + 1, dtype=np.int64)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), tokens)) + 1]
    total = int(sizes.sum())
    with open(indexed_dataset.data_file_path(prefix), "wb") as data:
        step = 1 << 24
        for start in range(0, total, step):
            data.write(rng.integers(4, VOCAB, size=min(step, total - start), dtype=np.uint16).tobytes())
    indexed_dataset.write_index(indexed_dataset.index_file_path(prefix), np.dtype(np.uint16), sizes)
    return len(sizes)


def drop_from_page_cache(path: str) -> None:
    """Ask the kernel to forget the cached pages of ``path`` (no other file is touched)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def one_round(prefix: str, cold: bool) -> dict:
    """Time the index check, the scan, and a reopen with both remembered."""
    index_checks.forget_checks()
    if cold:
        for path in (indexed_dataset.index_file_path(prefix), indexed_dataset.data_file_path(prefix)):
            drop_from_page_cache(path)
    start = time.perf_counter()
    dataset = indexed_dataset.MMapIndexedDataset(prefix)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    dataset.check_token_ids(VOCAB)
    scan_s = time.perf_counter() - start
    start = time.perf_counter()
    indexed_dataset.MMapIndexedDataset(prefix).check_token_ids(VOCAB)
    reopen_s = time.perf_counter() - start
    return {"index": index_s, "scan": scan_s, "reopen": reopen_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop the two files from the page cache each round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        prefix = os.path.join(directory, "train")
        sentences = write_split(prefix, args.tokens)
        rounds = [one_round(prefix, args.cold) for _ in range(args.rounds)]
        medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(json.dumps({
            "tokens": args.tokens, "sentences": sentences, "cold": args.cold,
            "bin_mib": round(os.path.getsize(indexed_dataset.data_file_path(prefix)) / 2**20, 1),
            "idx_mib": round(os.path.getsize(indexed_dataset.index_file_path(prefix)) / 2**20, 1),
            "seconds": {key: round(value, 4) for key, value in medians.items()},
            "index_entries_per_s": round(sentences / medians["index"]),
            "scan_tokens_per_s": round(args.tokens / medians["scan"]),
        }))


if __name__ == "__main__":
    main()
