#!/usr/bin/env python3
"""What the CPU dropout (``fairseq/modules/fairseq_dropout.py``) saves, against ``F.dropout``.

Two figures, each a ratio of medians measured in the same run, alternating:

* one dropout, forward and backward, at the activations' shapes of the demo model (16 x 128 x
  128) and of the 4x-wide one (4 x 128 x 512 at max_tokens 512, 16 x 128 x 512 at 2048);
* a whole training update (``Trainer.train_step``: forward, loss, backward, Adam) of those two
  models on the demo corpus, with the decoder's dropout modules drawing their masks either way.

    python benchmarks/bench_dropout.py                    # builds the demo corpus in a temp dir
    python benchmarks/bench_dropout.py --data demo/data-bin --rounds 8 --threads 2
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_common import demo_data  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def one_dropout(shapes, rounds: int, p: float) -> None:
    from fairseq.modules.fairseq_dropout import dropout

    print(f"one dropout (p={p}), forward + backward, median ms")
    for shape in shapes:
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        plain, ours = [], []
        for _ in range(rounds):  # alternating rounds, 20 calls each
            plain.append(_median_ms(lambda x=x, grad=grad: F.dropout(x, p, True).backward(grad), 20))
            ours.append(_median_ms(lambda x=x, grad=grad: dropout(x, p, True).backward(grad), 20))
        a, b = statistics.median(plain), statistics.median(ours)
        print(f"  {str(tuple(shape)):16s} F.dropout {a:7.3f}   ours {b:7.3f}   ratio {a / b:5.2f}x")


def whole_update(data: str, rounds: int) -> None:
    import bench_mfu
    from fairseq.modules import fairseq_dropout

    ours_forward = fairseq_dropout.FairseqDropout.forward

    def plain_forward(self, x):
        return F.dropout(x, self.p, self.training)

    print("a training update (fp32, dropout 0.1), median ms")
    for name, dim, max_tokens in (("demo 2x128", 128, 2048), ("4x 2x512", 512, 2048)):
        bench_mfu.MODELS[name] = dict(layers=2, dim=dim, ffn=4 * dim, heads=max(4, dim // 64),
                                      tokens_per_sample=128, max_tokens=max_tokens)
        bench = bench_mfu.Bench(name, data, [], 4)
        times = {"F.dropout": [], "ours": []}
        bench.step(0)
        for _ in range(rounds):
            for label, forward in (("F.dropout", plain_forward), ("ours", ours_forward)):
                fairseq_dropout.FairseqDropout.forward = forward
                for i in range(len(bench.samples)):
                    bench.step(i)
                    times[label].append(bench.seconds[-1])
        fairseq_dropout.FairseqDropout.forward = ours_forward
        a, b = statistics.median(times["F.dropout"]) * 1e3, statistics.median(times["ours"]) * 1e3
        print(f"  {name:16s} F.dropout {a:8.1f}   ours {b:8.1f}   ratio {a / b:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a data-bin directory (default: the demo corpus, built in a temp dir)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-updates", action="store_true", help="only the single-dropout figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load {os.getloadavg()[0]:.2f}")
    one_dropout([(16, 128, 128), (4, 128, 512), (16, 128, 512)], args.rounds, 0.1)
    if not args.no_updates:
        whole_update(args.data or demo_data(tempfile.mkdtemp()), args.rounds)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
