#!/usr/bin/env python3
"""Train a subword model on text files, offline.

    # byte-level BPE (tokenizers): writes encoder.json + vocab.bpe (GPT-2's format, usable as
    # --bpe gpt2) and the same files as vocab.json + merges.txt (usable as --bpe hf_byte_bpe)
    python scripts/train_bpe.py --type byte_bpe --vocab-size 4000 --output-dir bpe/ corpus.txt

    # SentencePiece (unigram or bpe): writes spm.model + spm.vocab (--bpe sentencepiece)
    python scripts/train_bpe.py --type sentencepiece --vocab-size 4000 --output-dir bpe/ corpus.txt
"""
import argparse
import json
import os
import shutil
import sys


def _require(module: str, package: str):
    """Import ``module``, or end with one line saying which ``pip install`` adds it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        sys.exit(f"error: train_bpe.py needs the {package!r} package: pip install {package} "
                 "(or pip install -e '.[bpe]'; scripts/install.sh installs it)")


def train_byte_bpe(files, vocab_size: int, min_frequency: int, output_dir: str) -> None:
    ByteLevelBPETokenizer = _require("tokenizers", "tokenizers").ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer(add_prefix_space=False)
    tokenizer.train(files, vocab_size=vocab_size, min_frequency=min_frequency, show_progress=True)
    tokenizer.save_model(output_dir)  # vocab.json, merges.txt
    shutil.copy(os.path.join(output_dir, "vocab.json"), os.path.join(output_dir, "encoder.json"))
    shutil.copy(os.path.join(output_dir, "merges.txt"), os.path.join(output_dir, "vocab.bpe"))
    with open(os.path.join(output_dir, "vocab.json"), encoding="utf-8") as f:
        size = len(json.load(f))
    print(f"byte-level BPE with {size} symbols written to {output_dir}/ "
          "(encoder.json + vocab.bpe for --bpe gpt2; vocab.json + merges.txt for --bpe hf_byte_bpe)")


def train_sentencepiece(files, vocab_size: int, model_type: str, output_dir: str) -> None:
    spm = _require("sentencepiece", "sentencepiece")

    prefix = os.path.join(output_dir, "spm")
    spm.SentencePieceTrainer.Train(input=",".join(files), model_prefix=prefix, vocab_size=vocab_size,
                                   model_type=model_type, character_coverage=1.0,
                                   minloglevel=1)
    print(f"sentencepiece {model_type} model with {vocab_size} pieces written to {prefix}.model "
          "(--bpe sentencepiece --sentencepiece-model " + prefix + ".model)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="text files to learn from")
    parser.add_argument("--type", choices=["byte_bpe", "sentencepiece"], default="byte_bpe")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--min-frequency", type=int, default=2, help="byte_bpe: rarest pair merged")
    parser.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram",
                        help="sentencepiece: the algorithm")
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args(argv)
    missing = [f for f in args.inputs if not os.path.isfile(f)]
    if missing:
        parser.error(f"no such file: {missing[0]}")
    if args.vocab_size < 260 and args.type == "byte_bpe":
        parser.error(f"--vocab-size {args.vocab_size}: a byte-level BPE needs at least 260 "
                     "(256 bytes and a few merges)")
    os.makedirs(args.output_dir, exist_ok=True)
    if args.type == "byte_bpe":
        train_byte_bpe(args.inputs, args.vocab_size, args.min_frequency, args.output_dir)
    else:
        train_sentencepiece(args.inputs, args.vocab_size, args.model_type, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
