#!/usr/bin/env python3
"""Training speed with ``common.compile=true`` (torch.compile, inductor) against eager.

Two Trainers of the same ``transformer_lm`` (demo shapes: 2 layers, embed 128, ffn 512,
4 heads; tokens_per_sample 128, max_tokens 2048), built from the same seed, train on the same
pre-collated full batches of the demo corpus. The first compiled step (which compiles) is
timed on its own; then the two alternate update by update, so both see the same machine load,
and the median update speed of each is reported with their ratio. The per-update losses of
the first pass are compared too (with dropout the compiled kernels draw other random masks,
so the losses agree only statistically; ``--dropout 0`` makes them comparable).

    python benchmarks/bench_compile.py                      # builds the demo corpus
    python benchmarks/bench_compile.py --data demo/data-bin --steps 20 --rounds 3
    python benchmarks/bench_compile.py --set criterion.fused_output_loss=false
    FAIRSEQ_COMPILE_BACKEND=aot_eager python benchmarks/bench_compile.py   # another backend
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from bench_common import demo_data  # noqa: E402
from bench_memory import build_trainer, full_batches, model_overrides  # noqa: E402


def step(trainer, sample) -> float:
    """Seconds for one update on ``sample``, the device synchronised."""
    start = time.perf_counter()
    trainer.train_step([sample])
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def loss_of(trainer, sample) -> float:
    out = trainer.train_step([sample])
    return float(sum(float(log["loss"]) for log in out["logging_outputs"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a preprocessed data directory (default: build the demo corpus)")
    parser.add_argument("--steps", type=int, default=20, help="distinct batches")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the batches")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more config overrides for both trainers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or demo_data(tmp)
        base = model_overrides(2, 128, 512, 4, 128, 2048, args.dropout) + list(args.set)
        eager = build_trainer(data, base)
        compiled = build_trainer(data, base + ["common.compile=true"])
        samples = full_batches(eager, args.steps)
        words = [s["ntokens"] for s in samples]

        # first pass: the compiled trainer's first step compiles; losses side by side
        torch.manual_seed(5)
        eager_losses = [loss_of(eager, samples[0])]
        torch.manual_seed(5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            compiled_losses = [loss_of(compiled, samples[0])]
            compile_seconds = time.perf_counter() - start
        fell_back = [str(w.message) for w in caught if "common.compile" in str(w.message)]
        for sample in samples[1:]:
            eager_losses.append(loss_of(eager, sample))
            compiled_losses.append(loss_of(compiled, sample))
        diffs = [abs(a - b) / abs(a) for a, b in zip(eager_losses, compiled_losses)]

        times = {"eager": [], "compiled": []}  # seconds per word, one entry per update
        trainers = {"eager": eager, "compiled": compiled}
        for r in range(args.rounds):
            for i, sample in enumerate(samples):
                order = ["eager", "compiled"] if (i + r) % 2 == 0 else ["compiled", "eager"]
                for name in order:
                    times[name].append(step(trainers[name], sample) / words[i])

    backend = os.environ.get("FAIRSEQ_COMPILE_BACKEND") or "inductor"
    fused = eager.cfg.criterion.get("fused_output_loss", "n/a")
    print(f"device {eager.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, backend "
          f"{backend}; 2 layers x 128, ffn 512, 4 heads, vocabulary {len(eager.task.target_dictionary)}, "
          f"dropout {args.dropout}, criterion.fused_output_loss={fused}; {args.rounds} passes x "
          f"{len(samples)} updates of ~{eager.cfg.dataset.max_tokens} tokens, alternating update by update")
    if fell_back:
        print("FELL BACK TO EAGER:", fell_back[0])
    print(f"first compiled update (compiles): {compile_seconds:.1f} s")
    print(f"losses of the first pass: max relative difference compiled/eager {max(diffs):.2e} "
          f"(first update {diffs[0]:.2e})")
    wps = {name: 1.0 / statistics.median(t) for name, t in times.items()}
    means = {name: len(t) / sum(t) for name, t in times.items()}
    for name in ("eager", "compiled"):
        print(f"{name:<9} {wps[name]:10.0f} words/s (median update; mean {means[name]:.0f})")
    print(f"ratio compiled/eager = {wps['compiled'] / wps['eager']:.3f}")


if __name__ == "__main__":
    main()
