#!/usr/bin/env python3
"""Side by side with Hugging Face transformers, the Llama half: ``benchmarks/vs_hf.py --model llama``
at this script's own default shape.

Kept as the path docs/llama.md and docs/benchmarks.md cite; everything is done by
``benchmarks/vs_hf.py`` (read its docstring for what is measured and how: the same weights
exported through ``fairseq.hf_bridge``, training alternating update by update with a plain
PyTorch loop of ``transformers.LlamaForCausalLM`` in float32 and bfloat16 autocast, the matmul
peaks of both precisions, MFU against the peak of the precision used, greedy and sampled
decoding, every figure with the load average).

Without a shape flag (``--layers/--dim/--ffn/--heads`` or ``--shapes``) the shape is this
script's historical one: 2 layers x 256, ffn 688, 4 heads / 2 kv heads, a 32,000 vocabulary,
4 x 128 tokens per update. Every flag of vs_hf.py is accepted and wins over those defaults.

    python benchmarks/vs_hf_llama.py                      # a few minutes on 2 idle CPU cores
    python benchmarks/vs_hf_llama.py --dtypes fp32        # float32 only
    python benchmarks/vs_hf_llama.py --layers 12 --dim 768 --heads 12 --kv-heads 4 --ffn 2048 \\
        --batch 8 --tokens-per-sample 512 --device cuda  # transformer_lm_llama_small's shape
"""
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vs_hf  # noqa: E402

DEFAULT_SHAPE = ["--layers", "2", "--dim", "256", "--ffn", "688", "--heads", "4", "--kv-heads", "2"]
DEFAULT_BATCH = ["--batch", "4"]
SHAPE_FLAGS = ("--layers", "--dim", "--ffn", "--heads", "--shapes")


def llama_argv(argv: List[str]) -> List[str]:
    """vs_hf.py's command line for this script's ``argv``: ``--model llama`` and the historical
    shape and batch unless ``argv`` sets them (later flags win in argparse)."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    out = ["--model", "llama"]
    if not given.intersection(SHAPE_FLAGS):
        out += DEFAULT_SHAPE
    if "--batch" not in given:
        out += DEFAULT_BATCH
    return out + list(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run vs_hf.py's Llama comparison."""
    return vs_hf.main(llama_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
