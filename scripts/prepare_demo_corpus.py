#!/usr/bin/env python3
"""Write the demo corpus: Python's own help topics (``pydoc_data``), split train/valid/test.

Nothing is downloaded: the text ships with every CPython. Each paragraph becomes one line with
words and punctuation separated by spaces; topics are separated by an empty line (documents).
A paragraph goes to valid or test (1 in 20 each) by a hash of its text, so the split is
stable across Python versions' topic order and the three splits read alike. The work is done by
:func:`fairseq.data.demo_corpus.write_demo_corpus`, which a notebook can call directly.

    python scripts/prepare_demo_corpus.py --out data/demo-text [--max-topics 30]
"""
import argparse

from fairseq.data.demo_corpus import write_demo_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo-text", help="output directory")
    parser.add_argument("--max-topics", type=int, default=None,
                        help="keep only the first N help topics (default: all)")
    args = parser.parse_args()
    counts = write_demo_corpus(args.out, max_topics=args.max_topics)
    print(" ".join(f"{k}={v} tokens" for k, v in counts.items()), "->", args.out)


if __name__ == "__main__":
    main()
