#!/usr/bin/env python3
"""Generation speed: with and without the key/value cache, and by search strategy.

A transformer_lm (random weights: speed does not depend on them) continues a 16-token prompt by
exactly ``--new-tokens`` tokens (EOS is blocked until then), at batch sizes 1 and 8.

``--search cache`` (the default): greedy decoding, cached (the model runs on one new token per
step) against uncached (it re-runs the whole sequence every step). The two alternate
``--rounds`` times; the median of each and their ratio (cached / uncached) are reported; the
goal is >= 5 at 256 new tokens.

``--search topk`` / ``topp`` / ``beam``: cached decoding with top-k sampling (``--topk``, 10),
nucleus sampling (``--topp``, 0.9) or beam search (``--beam``, 5); the median of ``--rounds``
runs (tokens/s and ms per step), and for sampling a check that the same seed gives the same
tokens.

    python benchmarks/bench_generate.py [--new-tokens 256] [--rounds 3] [--layers 2 --dim 256]
    python benchmarks/bench_generate.py --search topk --dim 512 --vocab 42856 --rounds 5
    python benchmarks/bench_generate.py --search beam --dim 512 --vocab 14000 --batch-sizes 1,8
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
from fairseq.search import BeamSearch, Sampling  # noqa: E402
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


def search_of(args, seed: int = 0):
    """(beam size, search strategy) of ``--search``."""
    if args.search == "cache":
        return 1, None
    if args.search == "beam":
        return args.beam, BeamSearch()
    g = torch.Generator().manual_seed(seed)
    if args.search == "topk":
        return 1, Sampling(sampling_topk=args.topk, generator=g)
    return 1, Sampling(sampling_topp=args.topp, generator=g)


def generate(model, d, batch: int, prompt_len: int, new_tokens: int, use_cache: bool,
             beam: int = 1, search=None, prompt_seed: int = 0):
    """(generated tokens per second, the best hypothesis' tokens of every sentence)."""
    total = prompt_len + new_tokens
    gen = SequenceGenerator([model], d, beam_size=beam, max_len_a=0, max_len_b=total, min_len=total,
                            use_cache=use_cache, search_strategy=search)
    prompt = torch.randint(d.nspecial, len(d), (batch, prompt_len),
                           generator=torch.Generator().manual_seed(prompt_seed))
    sample = {"net_input": {"src_tokens": prompt, "src_lengths": torch.full((batch,), prompt_len)}}
    start = time.perf_counter()
    hypos = gen.generate([model], sample, prefix_tokens=prompt)
    elapsed = time.perf_counter() - start
    produced = sum(len(h[0]["tokens"]) - prompt_len for h in hypos)
    return produced / elapsed, [h[0]["tokens"].tolist() for h in hypos]


def run(model, d, batch: int, prompt_len: int, new_tokens: int, use_cache: bool) -> float:
    """Generated tokens per second of greedy decoding."""
    return generate(model, d, batch, prompt_len, new_tokens, use_cache)[0]


def _int_list(text: str) -> list:
    """``"1,8"`` -> ``[1, 8]`` (argparse type of ``--batch-sizes``)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers, e.g. 1,8") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch-sizes", type=_int_list, nargs="+", default=[[1, 8]],
                        help="batch sizes, spaced or comma-separated (1 8, or 1,8)")
    parser.add_argument("--search", choices=["cache", "topk", "topp", "beam"], default="cache")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--topp", type=float, default=0.9)
    parser.add_argument("--beam", type=int, default=5)
    args = parser.parse_args()
    args.batch_sizes = [b for group in args.batch_sizes for b in group]
    prompt_len = 16
    model, d = build(args.vocab, args.layers, args.dim, prompt_len + args.new_tokens + 8)
    what = {"cache": "greedy", "topk": f"top-k {args.topk} sampling",
            "topp": f"top-p {args.topp} sampling", "beam": f"beam {args.beam}"}[args.search]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{a:.2f}' for a in os.getloadavg())}; transformer_lm "
          f"{args.layers} layers x {args.dim}, vocabulary {len(d)}; prompt {prompt_len}, "
          f"{args.new_tokens} new tokens, {what}")
    if args.search != "cache":
        with torch.no_grad():
            beam, search = search_of(args)
            generate(model, d, 1, prompt_len, 8, True, beam, search)  # warm-up
            for batch in args.batch_sizes:
                speeds, outputs = [], []
                for r in range(args.rounds):
                    beam, search = search_of(args, seed=r % 2)
                    tps, tokens = generate(model, d, batch, prompt_len, args.new_tokens, True, beam, search)
                    speeds.append(tps)
                    outputs.append(tokens)
                tps = statistics.median(speeds)
                same = ""
                if args.search != "beam" and args.rounds >= 3:  # rounds 0 and 2 share seed 0
                    same = f", same seed same tokens: {outputs[0] == outputs[2]}"
                print(f"batch {batch}: {tps:8.1f} tokens/s ({1e3 * batch / tps:6.2f} ms per step; "
                      f"rounds {', '.join(f'{s:.1f}' for s in speeds)}){same}", flush=True)
        print(f"load average now {' '.join(f'{a:.2f}' for a in os.getloadavg())}")
        return
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
