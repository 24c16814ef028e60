#!/usr/bin/env python3
"""Turn a local Hugging Face GPT2LMHeadModel, XGLMForCausalLM or LlamaForCausalLM directory into a
checkpoint.

    fairseq-import-hf hf-model --out imported/model.pt [--data-out imported]

Writes the checkpoint (this package's run config and integrity record) and ``dict.txt``
(``--data-out``, default: beside the checkpoint; with a GPT-2 byte-level BPE also its
``encoder.json`` and ``vocab.bpe``), so that ``fairseq-eval-lm``, ``fairseq-generate`` and
``fairseq-train --finetune-from-model`` run on it; it prints the ``fairseq-train`` flags of the
model. Nothing is downloaded: the directory must exist. A model ``transformer_lm`` cannot hold is
refused with one line (exit 2). In Python, ``fairseq.hf_bridge.from_pretrained_hf(DIR)`` gives
the same model as a hub object (``score``, ``sample``). See docs/huggingface.md.
"""
import argparse
import os
import sys
from typing import List, Optional

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairseq-import-hf",
        description="Convert a local transformers GPT2LMHeadModel / XGLMForCausalLM / LlamaForCausalLM directory into a "
                    "transformer_lm checkpoint and its dict.txt.")
    parser.add_argument("directory", metavar="DIR", help="the model directory (config.json, model.safetensors)")
    parser.add_argument("--out", required=True, metavar="CHECKPOINT", help="the checkpoint file to write")
    parser.add_argument("--data-out", default=None, metavar="DIR",
                        help="where dict.txt (and BPE files) go; default: the checkpoint's directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="import weights that hold NaN or infinity (refused by default: such a model "
                             "scores NaN)")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    from fairseq.hf_bridge import import_directory

    report = import_directory(args.directory, args.out, data_out=args.data_out, overwrite=args.overwrite,
                              allow_nonfinite=args.allow_nonfinite)
    print(f"wrote {report.checkpoint} ({report.model_type} -> transformer_lm, {report.num_parameters:,} parameters) "
          f"and {report.dictionary} ({report.vocab_size:,} types); {report.seconds:.1f} s")
    for note in report.notes:
        print(f"note: {note}")
    data = os.path.dirname(report.dictionary)
    print(f"evaluate: fairseq-eval-lm DATA --path {report.checkpoint}  (DATA preprocessed with "
          f"--srcdict {report.dictionary})")
    print(f"fine-tune: fairseq-train DATA --finetune-from-model {report.checkpoint} {report.finetune_flags()} "
          f"--tokens-per-sample N ...  (dict.txt: {data})")


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-import-hf``."""
    from fairseq_cli.common import run_with_clear_errors

    run_with_clear_errors(main, argv)


if __name__ == "__main__":
    cli_main()
