#!/usr/bin/env python3
"""The fused output loss against the unfused one, shape by shape: time and memory.

For every shape of the grid (hidden size C x vocabulary V x tokens N) three ways compute the
summed cross entropy of ``x @ W.T`` (x: (N, C) features, W: (V, C) output projection, 1 target in
10 the padding index) and its gradients for x and W (forward + backward, float32, no bias, as the
``transformer_lm`` output layer):

* ``fused``: :func:`fairseq.modules.fused_cross_entropy.fused_linear_cross_entropy` as the
  ``cross_entropy`` criterion calls it (its default block size, or ``--block-elements``);
* ``unfused``: the criterion's plain path (``criterion.fused_output_loss=false``): ``F.linear``,
  then ``F.cross_entropy`` of the float32 logits with ``ignore_index``;
* ``reference``: the plain PyTorch loop ``F.cross_entropy(x @ W.T, t, ignore_index=pad)``;
* with ``--compare FILE``, also ``compared``: ``fused_linear_cross_entropy`` of another version
  of the module (a file saved with ``git show REV:fairseq/modules/fused_cross_entropy.py``),
  with its own defaults, timed in the same rounds; ``compared / fused`` (> 1: this version is
  faster) is reported.

The three alternate ``--rounds`` times per shape (after one warm-up each), in a new random
order every round (what ran just before changes the allocator's state, e.g. whether large
blocks are still mapped, so no way should always follow the same one); medians are reported, with ``unfused / fused`` (> 1: the fused path is
faster) and ``reference / fused``. ``--threads`` sets torch's threads (default: torch's own).

On a shared machine, every operator that runs on several threads may wait for a thread the
operating system has descheduled (milliseconds per operator when the load exceeds the cores),
whatever its size: the load average is printed before and after, and ``--threads 1`` gives a
steadier comparison there.

Memory: one more forward + backward of each way under the PyTorch profiler with
``profile_memory=True``; replaying its allocation events in time order gives the peak of the
bytes allocated above the start (the gradients of x and W included, the same in all three), and
the largest (rows, V) tensor the way creates (the (N, V) logits for the unfused ways, one block
of logits for the fused one).

    python benchmarks/bench_fused_loss.py                                # the whole grid
    python benchmarks/bench_fused_loss.py --hidden 512 --vocab 42856 --tokens 2048 --rounds 5
    python benchmarks/bench_fused_loss.py --block-elements 2097152       # force a block size
    python benchmarks/bench_fused_loss.py --threads 1
    python benchmarks/bench_fused_loss.py --score --tokens 64 2048 8192    # scoring, no gradients
    git show HEAD~1:fairseq/modules/fused_cross_entropy.py > /tmp/old_fce.py
    python benchmarks/bench_fused_loss.py --compare /tmp/old_fce.py --no-memory
"""
import argparse
import importlib.util
import os
import random
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from fairseq.modules.fused_cross_entropy import fused_linear_cross_entropy  # noqa: E402

PAD = 1
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fused_step(block_elements: Optional[int]) -> Step:
    def step(x, w, t):
        kwargs = {} if block_elements is None else {"block_elements": block_elements}
        return fused_linear_cross_entropy(x, w, t, ignore_index=PAD, reduction="sum", **kwargs)
    return step


def compared_step(path: str) -> Step:
    """The fused loss of another version of the module, loaded from ``path``."""
    spec = importlib.util.spec_from_file_location("compared_fused_cross_entropy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def step(x, w, t):
        return module.fused_linear_cross_entropy(x, w, t, ignore_index=PAD, reduction="sum")
    return step


def unfused_step(x, w, t):
    logits = F.linear(x, w)  # (N, V), what the model's output layer returns
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), t.reshape(-1),
                           ignore_index=PAD, reduction="sum")


def reference_step(x, w, t):
    return F.cross_entropy(x @ w.T, t, ignore_index=PAD, reduction="sum")


def inputs(n: int, c: int, v: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g)
    w = torch.randn(v, c, generator=g) * c ** -0.5
    t = torch.randint(0, v, (n,), generator=g)
    t[::10] = PAD
    return x, w, t


def run_once(step: Step, x: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> float:
    """Seconds of one forward + backward (fresh leaves, so gradients are allocated as in training)."""
    xl, wl = x.detach().requires_grad_(), w.detach().requires_grad_()
    start = time.perf_counter()
    step(xl, wl, t).backward()
    return time.perf_counter() - start


def call_once(step: Callable[..., Any], x: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> float:
    """Seconds of one call of ``step`` (scoring: no backward)."""
    start = time.perf_counter()
    step(x, w, t)
    return time.perf_counter() - start


def median_ms(ways: Dict[str, Any], timed: Callable[..., float], data: Tuple[torch.Tensor, ...],
              rounds: int, seed: str) -> Dict[str, float]:
    """Median milliseconds of each way: one warm-up each, then ``rounds`` rounds in a new random
    order every round (what ran just before changes the allocator's state)."""
    times: Dict[str, List[float]] = {k: [] for k in ways}
    for way in ways.values():
        timed(way, *data)  # warm-up
    names, order = list(ways), random.Random(seed)
    for _ in range(rounds):
        for name in order.sample(names, len(names)):
            times[name].append(timed(ways[name], *data))
    return {k: statistics.median(s) * 1e3 for k, s in times.items()}


class LargestRows(TorchDispatchMode):
    """The most rows of any (rows, V) tensor (logits, or a block of them) an op produces."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.dim() == 2 and o.size(1) == self.vocab:
                self.largest = max(self.largest, o.size(0))
        return out


def peak_bytes(step: Step, x: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> Tuple[int, int]:
    """(peak allocated bytes above the start, rows of the largest (rows, V) tensor) of one step."""
    xl, wl = x.detach().requires_grad_(), w.detach().requires_grad_()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(xl, wl, t).backward()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    del xl, wl
    xl, wl = x.detach().requires_grad_(), w.detach().requires_grad_()
    with LargestRows(w.size(0)) as watch:
        step(xl, wl, t).backward()
    return peak, watch.largest


def score_grid(args) -> None:
    """``--score``: scoring without gradients (eval-lm, validation): the plain log-softmax of
    the logits, gathered, against :func:`linear_target_log_probs` (vocabulary slices)."""
    from fairseq.modules.fused_cross_entropy import linear_target_log_probs

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{a:.2f}' for a in os.getloadavg())}; float32, no gradients, "
          f"medians of {args.rounds} alternating rounds")
    print("| C | V | N | sliced ms | plain ms | plain/sliced |")
    print("|---|---|---|---|---|---|")

    def plain(x, w, t):
        return F.log_softmax(F.linear(x, w).float(), dim=-1).gather(1, t.unsqueeze(1)).squeeze(1)

    ways = {"sliced": lambda x, w, t: linear_target_log_probs(x, w, t), "plain": plain}
    worst = float("inf")
    with torch.no_grad():
        for c in args.hidden:
            for v in args.vocab:
                for n in args.tokens:
                    x, w, t = inputs(n, c, v)
                    med = median_ms(ways, call_once, (x, w, t), args.rounds, f"{c} {v} {n}")
                    worst = min(worst, med["plain"] / med["sliced"])
                    print(f"| {c} | {v} | {n} | {med['sliced']:.1f} | {med['plain']:.1f} "
                          f"| **{med['plain'] / med['sliced']:.2f}** |", flush=True)
    print(f"worst plain/sliced: {worst:.2f}; load average now {' '.join(f'{a:.2f}' for a in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--vocab", type=int, nargs="+", default=[1400, 8192, 42856])
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--block-elements", type=int, default=None,
                        help="logits per block of the fused path (default: the library's rule)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--compare", metavar="FILE",
                        help="also time fused_linear_cross_entropy of this file (another version)")
    parser.add_argument("--score", action="store_true",
                        help="time scoring without gradients instead (plain log-softmax vs vocabulary slices)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.score:
        score_grid(args)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{a:.2f}' for a in os.getloadavg())}; float32, forward + backward, "
          f"medians of {args.rounds} alternating rounds")
    header = ("| C | V | N | fused ms | unfused ms | reference ms | unfused/fused | reference/fused "
              + ("| compared ms | compared/fused " if args.compare else "")
              + "| fused peak MiB | unfused peak MiB | fused largest (rows x V) | unfused largest |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    ways: Dict[str, Step] = {"fused": fused_step(args.block_elements), "unfused": unfused_step,
                             "reference": reference_step}
    if args.compare:
        ways["compared"] = compared_step(args.compare)
    worst = float("inf")
    for c in args.hidden:
        for v in args.vocab:
            for n in args.tokens:
                x, w, t = inputs(n, c, v)
                med = median_ms(ways, run_once, (x, w, t), args.rounds, f"{c} {v} {n}")
                ratio = med["unfused"] / med["fused"]
                worst = min(worst, ratio)
                compared = ""
                if args.compare:
                    compared = f"| {med['compared']:.1f} | **{med['compared'] / med['fused']:.2f}** "
                mem = "| - | - | - | - |"
                if not args.no_memory:
                    fp, fl = peak_bytes(ways["fused"], x, w, t)
                    up, ul = peak_bytes(ways["unfused"], x, w, t)
                    mem = f"| {fp / 2**20:.1f} | {up / 2**20:.1f} | {fl} x {v} | {ul} x {v} |"
                print(f"| {c} | {v} | {n} | {med['fused']:.1f} | {med['unfused']:.1f} "
                      f"| {med['reference']:.1f} | **{ratio:.2f}** "
                      f"| {med['reference'] / med['fused']:.2f} {compared}{mem}", flush=True)
    print(f"worst unfused/fused: {worst:.2f}; load average now "
          f"{' '.join(f'{a:.2f}' for a in os.getloadavg())}")


if __name__ == "__main__":
    main()
