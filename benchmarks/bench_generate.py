#!/usr/bin/env python3
"""Generation speed with and without the key/value cache.

A transformer_lm (random weights: speed does not depend on them) continues a 16-token prompt by
exactly ``--new-tokens`` tokens (EOS is blocked until then), greedily, at batch sizes 1 and 8.
Cached decoding runs the model on one new token per step; uncached decoding re-runs the whole
sequence every step. The two alternate ``--rounds`` times; the median of each is reported.

    python benchmarks/bench_generate.py [--new-tokens 256] [--rounds 3] [--layers 2 --dim 256]

Prints generated tokens/s of each and their ratio (cached / uncached); the goal is >= 5 at 256.
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from fairseq.data import Dictionary  # noqa: E402
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig  # noqa: E402
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402


class _Task:
    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary


def build(vocab: int, layers: int, dim: int, positions: int):
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    cfg = TransformerLanguageModelConfig(
        decoder_layers=layers, decoder_embed_dim=dim, decoder_input_dim=dim, decoder_output_dim=dim,
        decoder_ffn_embed_dim=4 * dim, decoder_attention_heads=max(dim // 64, 1), dropout=0.0,
        share_decoder_input_output_embed=True, max_target_positions=positions)
    torch.manual_seed(0)
    return TransformerLanguageModel.build_model(cfg, _Task(d)).eval(), d


def run(model, d, batch: int, prompt_len: int, new_tokens: int, use_cache: bool) -> float:
    """Generated tokens per second."""
    total = prompt_len + new_tokens
    gen = SequenceGenerator([model], d, beam_size=1, max_len_a=0, max_len_b=total, min_len=total,
                            use_cache=use_cache)
    prompt = torch.randint(d.nspecial, len(d), (batch, prompt_len))
    sample = {"net_input": {"src_tokens": prompt, "src_lengths": torch.full((batch,), prompt_len)}}
    start = time.perf_counter()
    hypos = gen.generate([model], sample, prefix_tokens=prompt)
    elapsed = time.perf_counter() - start
    produced = sum(len(h[0]["tokens"]) - prompt_len for h in hypos)
    return produced / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    prompt_len = 16
    model, d = build(args.vocab, args.layers, args.dim, prompt_len + args.new_tokens + 8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; transformer_lm "
          f"{args.layers} layers x {args.dim}, vocabulary {len(d)}; prompt {prompt_len}, "
          f"{args.new_tokens} new tokens, greedy")
    with torch.no_grad():
        run(model, d, 1, prompt_len, 8, True)  # warm-up
        for batch in args.batch_sizes:
            cached, uncached = [], []
            for _ in range(args.rounds):
                cached.append(run(model, d, batch, prompt_len, args.new_tokens, True))
                uncached.append(run(model, d, batch, prompt_len, args.new_tokens, False))
            c, u = statistics.median(cached), statistics.median(uncached)
            print(f"batch {batch}: cached {c:8.1f} tokens/s, uncached {u:8.1f} tokens/s, "
                  f"ratio {c / u:5.1f}")


if __name__ == "__main__":
    main()
