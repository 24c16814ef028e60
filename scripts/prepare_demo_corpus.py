#!/usr/bin/env python3
"""Write the demo corpus: Python's own help topics (``pydoc_data``), split train/valid/test.

Nothing is downloaded: the text ships with every CPython. Each paragraph becomes one line with
words and punctuation separated by spaces; topics are separated by an empty line (documents).
A paragraph goes to valid or test (1 in 20 each) by a hash of its text, so the split is
stable across Python versions' topic order and the three splits read alike.

    python scripts/prepare_demo_corpus.py --out data/demo-text
"""
import argparse
import os
import re
import zlib

from pydoc_data.topics import topics

TOKEN = re.compile(r"\w+|[^\w\s]")


def paragraphs(text: str):
    for block in re.split(r"\n\s*\n", text):
        words = TOKEN.findall(block)
        if words:
            yield " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo-text", help="output directory")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    splits = {name: open(os.path.join(args.out, f"{name}.txt"), "w", encoding="utf-8")
              for name in ("train", "valid", "test")}
    counts = dict.fromkeys(splits, 0)
    for name in sorted(topics):
        written = set()
        for para in paragraphs(topics[name]):
            bucket = zlib.crc32(para.encode("utf-8")) % 20
            split = "valid" if bucket == 0 else "test" if bucket == 1 else "train"
            splits[split].write(para + "\n")
            counts[split] += len(para.split())
            written.add(split)
        for split in written:
            splits[split].write("\n")
    for f in splits.values():
        f.close()
    print(" ".join(f"{k}={v} tokens" for k, v in counts.items()), "->", args.out)


if __name__ == "__main__":
    main()
