"""The bundled demo corpus: Python's own help topics (``pydoc_data``), split train/valid/test.

Nothing is downloaded: the text ships with every CPython. Each paragraph becomes one line with
words and punctuation separated by spaces; topics are separated by an empty line (documents).
A paragraph goes to valid or test (1 in 20 each) by a hash of its text, so the split is
stable across Python versions' topic order and the three splits read alike.

``scripts/prepare_demo_corpus.py`` writes the whole corpus from the command line; in Python::

    from fairseq.data.demo_corpus import write_demo_corpus
    tokens = write_demo_corpus("data/demo-text", max_topics=30)   # {"train": ..., "valid": ..., "test": ...}
"""
import os
import re
import zlib
from typing import Dict, Iterator, Optional

SPLITS = ("train", "valid", "test")
TOKEN = re.compile(r"\w+|[^\w\s]")


def paragraphs(text: str) -> Iterator[str]:
    """The paragraphs of ``text`` (blocks between blank lines), tokens joined by one space."""
    for block in re.split(r"\n\s*\n", text):
        words = TOKEN.findall(block)
        if words:
            yield " ".join(words)


def split_of(paragraph: str) -> str:
    """``valid`` or ``test`` for 1 paragraph in 20 each (by a CRC of its text), else ``train``."""
    bucket = zlib.crc32(paragraph.encode("utf-8")) % 20
    return "valid" if bucket == 0 else "test" if bucket == 1 else "train"


def write_demo_corpus(out_dir: str, max_topics: Optional[int] = None) -> Dict[str, int]:
    """Write ``train.txt``, ``valid.txt`` and ``test.txt`` into ``out_dir``.

    Args:
        out_dir: the output directory (created when missing; the files are overwritten).
        max_topics: keep the first ``max_topics`` help topics in sorted order (``None``: all of
            them, about 2,600 paragraphs and 250,000 tokens).

    Returns:
        The number of tokens written to each split.
    """
    from pydoc_data.topics import topics

    if max_topics is not None and max_topics < 1:
        raise ValueError(f"max_topics={max_topics}: give at least 1 (or None for every topic)")
    os.makedirs(out_dir, exist_ok=True)
    names = sorted(topics)[:max_topics]
    counts = dict.fromkeys(SPLITS, 0)
    files = {name: open(os.path.join(out_dir, f"{name}.txt"), "w", encoding="utf-8") for name in SPLITS}
    try:
        for name in names:
            written = set()
            for para in paragraphs(topics[name]):
                split = split_of(para)
                files[split].write(para + "\n")
                counts[split] += len(para.split())
                written.add(split)
            for split in SPLITS:
                if split in written:
                    files[split].write("\n")
    finally:
        for f in files.values():
            f.close()
    return counts
