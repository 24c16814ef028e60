#!/usr/bin/env python3
"""Apply a subword model to text files, line by line, with several workers and a progress bar.

    python scripts/encode_bpe.py --bpe gpt2 --gpt2-encoder-json bpe/encoder.json \\
        --gpt2-vocab-bpe bpe/vocab.bpe --inputs train.txt valid.txt --outputs train.bpe valid.bpe \\
        --workers 2

The flags of each ``--bpe`` choice come from its config dataclass (the same as fairseq-train's).
Empty lines stay empty, so documents stay separated. Then run fairseq-preprocess on the outputs.
"""
import argparse
import os
import sys
from multiprocessing import Pool

_bpe = None


def _init_worker(bpe_cfg) -> None:
    global _bpe
    from fairseq.data.encoders import build_bpe

    _bpe = build_bpe(bpe_cfg)


def _encode(line: str) -> str:
    line = line.rstrip("\n")
    return _bpe.encode(line) if line.strip() else ""


def build_parser(argv):
    from fairseq.data.encoders import BPE_REGISTRY
    from fairseq.dataclass.utils import gen_parser_from_dataclass

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bpe", required=True, choices=BPE_REGISTRY.choices())
    parser.add_argument("--inputs", nargs="+", required=True, help="text files ('-' for stdin)")
    parser.add_argument("--outputs", nargs="+", required=True, help="one per input ('-' for stdout)")
    parser.add_argument("--workers", type=int, default=1)
    known, _ = parser.parse_known_args(argv)
    if known.bpe in BPE_REGISTRY:
        entry = BPE_REGISTRY.get(known.bpe)
        if entry.dataclass is not None:
            gen_parser_from_dataclass(parser, entry.dataclass())
    return parser


def main(argv=None) -> int:
    from tqdm import tqdm

    from fairseq.data.encoders import BPE_REGISTRY

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    if len(args.inputs) != len(args.outputs):
        sys.exit(f"encode_bpe: error: {len(args.inputs)} --inputs but {len(args.outputs)} --outputs")
    if args.workers < 1:
        sys.exit(f"encode_bpe: error: --workers {args.workers}: give at least 1")
    entry = BPE_REGISTRY.get(args.bpe)
    cfg = None
    if entry.dataclass is not None:
        cfg = entry.dataclass(**{k: getattr(args, k) for k in entry.dataclass.__dataclass_fields__
                                 if hasattr(args, k)})
        cfg._name = args.bpe
    from fairseq.data.encoders.errors import EncoderSetupError

    try:
        _init_worker(cfg if cfg is not None else args.bpe)  # fail here, clearly, not in a worker
    except EncoderSetupError as e:
        sys.exit(f"encode_bpe: error: {e}")
    for src, dst in zip(args.inputs, args.outputs):
        fin = sys.stdin if src == "-" else open(src, encoding="utf-8")
        fout = sys.stdout if dst == "-" else open(dst, "w", encoding="utf-8")
        total = None if src == "-" else os.path.getsize(src)
        with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(src),
                  disable=dst == "-" or not sys.stderr.isatty(), file=sys.stderr) as bar:

            def lines(fin=fin, bar=bar):
                for line in fin:
                    bar.update(len(line.encode("utf-8")))
                    yield line

            if args.workers == 1:
                for line in lines():
                    print(_encode(line), file=fout)
            else:
                with Pool(args.workers, _init_worker, (cfg if cfg is not None else args.bpe,)) as pool:
                    for encoded in pool.imap(_encode, lines(), chunksize=256):
                        print(encoded, file=fout)
        if fin is not sys.stdin:
            fin.close()
        if fout is not sys.stdout:
            fout.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
