#!/usr/bin/env python3
"""Write a ``transformer_lm`` checkpoint as a Hugging Face transformers model directory.

    fairseq-export-hf --path checkpoints/checkpoint_best.pt --data data-bin --out hf-model

The directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
generation_config.json, and fairseq's dict.txt) loads with
``AutoModelForCausalLM.from_pretrained("hf-model")`` and ``AutoTokenizer.from_pretrained``,
no custom code: a sinusoidal-position model as ``XGLMForCausalLM``, a learned-position one as
``GPT2LMHeadModel``, a Llama-style one (rotary positions, RMSNorm, gated SiLU feed-forward, no
biases, any key/value heads) as ``LlamaForCausalLM``. A model none of them can represent is
refused with one line naming the option
(exit 2). See docs/huggingface.md.
"""
import argparse
import os
import sys
from typing import List, Optional

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairseq-export-hf",
        description="Write a transformer_lm checkpoint as a transformers model directory "
                    "(GPT2LMHeadModel for learned positions, XGLMForCausalLM for sinusoids, LlamaForCausalLM for "
                    "rope + rmsnorm + gated silu + no bias).")
    parser.add_argument("--path", required=True, metavar="CHECKPOINT",
                        help="the checkpoint to export (this package's or fairseq 0.12's)")
    parser.add_argument("--data", default=None, metavar="DATA_BIN",
                        help="the data directory with the model's dict.txt (default: the checkpoint's task.data)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the directory to write")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    from fairseq.hf_bridge import export_checkpoint

    report = export_checkpoint(args.path, args.out, data=args.data, overwrite=args.overwrite)
    print(f"wrote {report.directory}: {report.architecture}, vocabulary {report.vocab_size:,}, "
          f"{report.num_parameters:,} parameters, tokenizer {report.tokenizer}; "
          f"{report.seconds:.1f} s")
    print(f"token convention: a fairseq sample starts with id {report.start_token_id}; the tokenizer "
          "prepends it (see docs/huggingface.md)")
    for note in report.notes:
        print(f"note: {note}")


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-export-hf``."""
    from fairseq_cli.common import run_with_clear_errors

    run_with_clear_errors(main, argv)


if __name__ == "__main__":
    cli_main()
