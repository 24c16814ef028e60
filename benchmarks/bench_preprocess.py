#!/usr/bin/env python3
"""Preprocessing speed and peak memory against corpus size.

Corpora of ``--sizes`` megabytes (default 10 and 100) are made from the demo corpus (Python's
help topics): its training lines, shuffled with a fixed seed on every pass, repeated until the
size is reached. Each is binarized by ``fairseq-preprocess --only-source`` (the dictionary is
built from it, then it is binarized) in a fresh process; the largest resident set of that
process and of any it started (``--workers`` > 1) is read with ``getrusage(RUSAGE_CHILDREN)`` in
a wrapper process of its own, so one run's peak never hides another's. Sizes alternate round by
round; medians are reported.

    python benchmarks/bench_preprocess.py [--sizes 10 100] [--rounds 3] [--workers 1]

Prints tokens/s and peak RSS per size; the peak should not grow with the corpus.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# runs one command and prints its wall time and the largest RSS of it and its descendants (KiB)
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
wall = time.perf_counter() - start
print(json.dumps({"code": code, "wall": wall,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def make_corpus(path: str, megabytes: float, seed: int = 1) -> int:
    """Write ``megabytes`` of demo-corpus lines to ``path`` (shuffled per pass); return tokens."""
    sys.path.insert(0, ROOT)
    from fairseq.data.demo_corpus import write_demo_corpus

    with tempfile.TemporaryDirectory() as tmp:
        write_demo_corpus(tmp)
        with open(os.path.join(tmp, "train.txt"), encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    rng = random.Random(seed)
    target, written, tokens = int(megabytes * 1e6), 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < target:
            rng.shuffle(lines)
            for line in lines:
                data = line + "\n"
                out.write(data)
                written += len(data.encode("utf-8"))
                tokens += len(line.split()) + 1  # + end of sentence, as fairseq counts
                if written >= target:
                    break
    return tokens


def run_preprocess(corpus: str, dest: str, workers: int) -> dict:
    """Binarize ``corpus`` into ``dest`` in a fresh process; wall seconds and peak RSS (KiB)."""
    shutil.rmtree(dest, ignore_errors=True)
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
           "--trainpref", corpus, "--destdir", dest, "--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise RuntimeError(f"fairseq-preprocess failed on {corpus}: {out.stderr[-2000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[10.0, 100.0], help="corpus sizes in MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tmp", default=None, help="where to write the corpora (default: a temporary dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        corpora = {}
        for size in args.sizes:
            path = os.path.join(tmp, f"corpus-{size:g}MB.txt")
            corpora[size] = (path, make_corpus(path, size))
        results = {size: [] for size in args.sizes}
        for r in range(args.rounds):
            order = args.sizes if r % 2 == 0 else list(reversed(args.sizes))
            for size in order:
                results[size].append(run_preprocess(corpora[size][0], os.path.join(tmp, "bin"), args.workers))
        print(f"fairseq-preprocess --only-source --workers {args.workers}, {args.rounds} rounds "
              f"(sizes alternating), load average {os.getloadavg()[0]:.1f} at the end")
        print(f"{'size':>8} {'tokens':>12} {'median s':>9} {'tokens/s':>12} {'peak RSS MiB (max of rounds)':>30}")
        for size in args.sizes:
            walls = [x["wall"] for x in results[size]]
            rss = [x["maxrss_kib"] / 1024 for x in results[size]]
            tokens = corpora[size][1]
            print(f"{size:>6g}MB {tokens:>12d} {statistics.median(walls):>9.2f} "
                  f"{tokens / statistics.median(walls):>12.0f} {max(rss):>30.1f}")


if __name__ == "__main__":
    main()
