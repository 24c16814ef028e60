#!/usr/bin/env python3
"""Side by side with fairseq 0.12.2: the same jobs, on the same data, run alternately.

Optional and never run in CI. It needs PyPI (``pip download``), a C++ compiler and a few
minutes for the first run; later runs reuse the cached build.

What it does:

1. **Builds fairseq 0.12.2** from its PyPI sdist into a scratch virtual environment
   (``WORK/venv``, created with ``--system-site-packages`` so the system's torch, numpy,
   hydra-core and omegaconf are reused; fairseq goes in with ``--no-deps``; only ``cython``,
   ``wheel``, ``bitarray`` and, where the system lacks them, ``regex``/``sacrebleu`` are
   installed into the venv, never torch). On Python 3.11 / NumPy 2 / torch >= 2.6 the
   unpacked sdist needs patches, applied here programmatically and idempotently before the
   install (see ``patch_fairseq_tree``): dataclass fields whose default is a dataclass
   instance become ``field(default_factory=...)`` (found with ``ast``), ``hydra_init``
   reads such defaults through the factory, ``np.int``/``np.float``/``np.compat.long``/...
   become the builtins, and the checkpoint loader passes ``weights_only=False``. setup.py
   is patched to build only the Cython/C++ extensions language modeling uses
   (``data_utils_fast``, ``token_block_utils_fast``, plus ``libbleu``), not the torch C++
   extensions (libnat, libbase, alignment), which LM never imports and which take minutes
   to compile. The venv is reused when it already holds a working fairseq 0.12.2.
   Nothing of fairseq is copied into this repository.

2. **Generates a corpus** (``WORK/corpus-<MB>mb-v<vocab>``): Zipf-distributed pseudo-words over a
   45,000-word vocabulary (every word appears at least once in the training split, so the
   dictionary has >= 45k entries), lines of 5-40 words; ``--corpus-mb`` sets the size of
   the training split (valid and test are 5% each).

3. **Runs both systems alternately** (ours, fairseq, ours, fairseq, ... ``--repeats``
   rounds) with ``OMP_NUM_THREADS=--threads`` and prints ratios ours/fairseq (> 1: ours is
   faster):

   * preprocessing time (``fairseq-preprocess --only-source --workers 2``, wall time of
     the process); the two data-bins are compared byte by byte; every other job reads
     the data-bin ours made (``WORK/data-bin-*``);
   * training words/s at the demo shape of ``scripts/demo.sh`` (2 layers x 128, ffn 512,
     4 heads, tied embeddings, pre-norm, dropout 0.1, Adam (0.9, 0.98), wd 0.01,
     inverse_sqrt 100 warm-up, lr 0.002, clip 1.0, tokens_per_sample 128, max_tokens 2048,
     sample_break_mode none) and at 4x width (2 x 512, ffn 2048, 8 heads); both systems get
     the same explicit flags (``--decoder-input-dim``/``--decoder-output-dim`` = embed dim,
     ``--decoder-normalize-before``, ``--share-decoder-input-output-embed``: fairseq
     0.12.2's transformer_lm config defaults input/output dims to 512 whatever the embed
     dim, its dataclass says post-norm (the architecture function then forces pre-norm),
     ours is pre-norm with both dims following the embed dim; neither ties by default).
     words/s = the tokens of the logged updates over their time, from the ``wps`` of the
     per-update ``train_inner`` log lines (``--log-interval 1``), the first ``--skip``
     updates left out. The loss at update 1 of both is printed (the inits differ, so close,
     not equal, is all that is expected);
   * ``fairseq-eval-lm`` tokens/s with ``--context-window 0`` and ``64`` on the valid split,
     each system on a checkpoint it trained itself (demo shape; the "Evaluated N tokens in
     Ts (X tokens/s)" line);
   * generation with ``fairseq-interactive`` (LM task, ``--prompts`` prompts of 8 words
     from the valid split, every hypothesis exactly ``--gen-len`` tokens long, prompt
     included, via ``--min-len``/``--max-len-b``): greedy, sampling top-k 10 and beam 5,
     batch 1 and 8; time = the "translation time" both print (model loading excluded), reported
     as new tokens of the best hypotheses per second.

Usage::

    python benchmarks/vs_fairseq.py                           # defaults (estimate: ~10 min on a
                                                              # quiet 2-core CPU; 3-4x that at load 5)
    python benchmarks/vs_fairseq.py --corpus-mb 1 --repeats 1 --updates 8 --updates-4x 5  # quicker
    python benchmarks/vs_fairseq.py --build-only              # just build/check fairseq
    python benchmarks/vs_fairseq.py --only train,eval         # a subset of the jobs

``--work`` (default ``$VS_FAIRSEQ_WORK`` or ``/tmp/vs_fairseq``) holds the sdist, the
patched source, the venv, the corpus and every run's logs (``WORK/runs``). If fairseq
cannot be built the script prints one line saying why and exits with status 3.
"""

import argparse
import ast
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

FAIRSEQ_VERSION = "0.12.2"
REPO = Path(__file__).resolve().parent.parent
STAMP = "# patched by benchmarks/vs_fairseq.py"


class BuildError(RuntimeError):
    pass


def log(msg):
    print(msg, flush=True)


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------------------
# 1. building fairseq 0.12.2
# ---------------------------------------------------------------------------------------------


def _run(cmd, what, cwd=None, env=None):
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if p.returncode != 0:
        lines = p.stdout.strip().splitlines()
        last = next((ln.strip() for ln in reversed(lines) if ln.strip().startswith(("ERROR", "error"))),
                    lines[-1].strip() if lines else "no output")
        raise BuildError(f"{what} failed (exit {p.returncode}): {last}\n" + "\n".join(lines[-25:]))
    return p.stdout


def _dataclass_default_edits(src):
    """(start, end, replacement) edits turning dataclass-instance defaults into factories.

    In classes decorated with ``@dataclass`` (any spelling), an annotated field
    ``x: T = Name()`` or ``x: T = field(default=Name(), ...)`` where ``Name`` is a capitalised
    name called without arguments becomes ``field(default_factory=Name)`` (keeping any other
    ``field`` keywords). Python 3.11 rejects such defaults (unhashable = mutable)."""
    tree = ast.parse(src)
    lines = src.splitlines(keepends=True)
    offs = [0]
    for ln in lines:
        offs.append(offs[-1] + len(ln))

    def pos(lineno, col):  # ast columns are utf-8 byte offsets
        line = lines[lineno - 1]
        return offs[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    def is_ctor(node):
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id[:1].isupper() and not node.args and not node.keywords
                and node.func.id not in ("II", "MISSING"))

    def is_dataclass_deco(d):
        d = d.func if isinstance(d, ast.Call) else d
        return (isinstance(d, ast.Name) and d.id == "dataclass") or (
            isinstance(d, ast.Attribute) and d.attr == "dataclass")

    edits = []
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef) or not any(map(is_dataclass_deco, cls.decorator_list)):
            continue
        for st in cls.body:
            if not isinstance(st, ast.AnnAssign) or st.value is None:
                continue
            v = st.value
            start, end = pos(v.lineno, v.col_offset), pos(v.end_lineno, v.end_col_offset)
            if is_ctor(v):
                edits.append((start, end, f"field(default_factory={v.func.id})"))
            elif (isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "field"):
                kws = {k.arg: k for k in v.keywords}
                if "default" in kws and is_ctor(kws["default"].value):
                    parts = []
                    for k in v.keywords:
                        if k.arg == "default":
                            parts.append(f"default_factory={k.value.func.id}")
                        else:
                            ks, ke = (pos(k.value.lineno, k.value.col_offset),
                                      pos(k.value.end_lineno, k.value.end_col_offset))
                            parts.append(f"{k.arg}={src[ks:ke]}")
                    edits.append((start, end, "field(" + ", ".join(parts) + ")"))
    return edits


_NP_ALIASES = [  # aliases NumPy 1.24 removed (np.bool is back in NumPy 2: left alone)
    (re.compile(r"\bnp\.compat\.long\b"), "int"),
    (re.compile(r"\bnp\.(?:int|long)\b"), "int"),
    (re.compile(r"\bnp\.float\b"), "float"),
    (re.compile(r"\bnp\.object\b"), "object"),
    (re.compile(r"\bnp\.str\b"), "str"),
]


def patch_source(path, src):
    """The patched text of one fairseq source file (unchanged text when nothing applies)."""
    out = src
    if "dataclass" in out and "(" in out:
        try:
            edits = _dataclass_default_edits(out)
        except SyntaxError:
            edits = []
        for start, end, rep in sorted(edits, reverse=True):
            out = out[:start] + rep + out[end:]
        if edits and not re.search(r"^from dataclasses import[^\n]*\bfield\b", out, re.M):
            # before the first import that is not a __future__ one
            first = next(n for n in ast.parse(out).body if isinstance(n, (ast.Import, ast.ImportFrom))
                         and getattr(n, "module", None) != "__future__")
            lines = out.splitlines(keepends=True)
            lines.insert(first.lineno - 1, "from dataclasses import field  " + STAMP + "\n")
            out = "".join(lines)
    if path.endswith(".py") or path.endswith(".pyx"):
        for rx, rep in _NP_ALIASES:
            out = rx.sub(rep, out)
    norm = path.replace(os.sep, "/")
    if norm.endswith("fairseq/dataclass/initialize.py") and STAMP not in out:
        # hydra_init stores every top-level group's default: read it through the factory
        out = re.sub(
            r"(\n(\s*)v = FairseqConfig\.__dataclass_fields__\[k\]\.default\n)",
            r"\1\2_f = FairseqConfig.__dataclass_fields__[k]  " + STAMP + "\n"
            r"\2if not isinstance(_f.default_factory, type(dataclasses.MISSING)):\n"
            r"\2    v = _f.default_factory()\n",
            out)
        if "import dataclasses\n" not in out and "_f.default_factory" in out:
            out = out.replace("import logging\n", "import dataclasses\nimport logging\n", 1)
    if norm.endswith("fairseq/checkpoint_utils.py"):
        # torch >= 2.6 loads weights only by default; fairseq checkpoints hold configs
        out = re.sub(r"torch\.load\(f, map_location=torch\.device\(\"cpu\"\)\)",
                     'torch.load(f, map_location=torch.device("cpu"), weights_only=False)', out)
    return out


def patch_setup_py(src):
    # skip the torch C++ extensions (libbase, libnat, alignment_train_*): LM never imports them
    return src.replace("    from torch.utils import cpp_extension\n",
                       "    raise ImportError  " + STAMP + ": no torch C++ extensions\n"
                       "    from torch.utils import cpp_extension\n", 1) if STAMP not in src else src


def patch_fairseq_tree(root):
    """Patch an unpacked fairseq sdist in place; idempotent. Returns the files changed."""
    root = Path(root)
    changed = []
    for sub in ("fairseq", "fairseq_cli"):
        for p in sorted((root / sub).rglob("*")):
            if p.suffix not in (".py", ".pyx") or not p.is_file():
                continue
            src = p.read_text(encoding="utf-8")
            new = patch_source(str(p), src)
            if new != src:
                p.write_text(new, encoding="utf-8")
                changed.append(str(p.relative_to(root)))
    sp = root / "setup.py"
    src = sp.read_text()
    new = patch_setup_py(src)
    if new != src:
        sp.write_text(new)
        changed.append("setup.py")
    return changed


CHECK = (
    "import fairseq, sys; from fairseq.data import data_utils_fast, token_block_utils_fast; "
    "from fairseq.dataclass.configs import FairseqConfig; FairseqConfig(); "
    "from fairseq.dataclass.initialize import hydra_init; hydra_init(); "
    "import fairseq.models.transformer_lm, fairseq.tasks.language_modeling, fairseq_cli.train; "
    "assert fairseq_cli.train.__file__.startswith(sys.prefix), fairseq_cli.train.__file__; "
    "print(fairseq.__version__, fairseq.__file__)"
)


def venv_python(work):
    return str(Path(work) / "venv" / "bin" / "python")


def fairseq_ok(work):
    py = venv_python(work)
    if not os.path.exists(py):
        return False
    p = subprocess.run([py, "-c", CHECK], cwd=work, capture_output=True, text=True)
    return (p.returncode == 0 and p.stdout.startswith(FAIRSEQ_VERSION)
            and str(Path(work) / "venv") in p.stdout)


def build_fairseq(work, rebuild=False):
    """Build (or reuse) the fairseq 0.12.2 venv under WORK; raises BuildError."""
    work = Path(work)
    if not rebuild and fairseq_ok(work):
        log(f"fairseq {FAIRSEQ_VERSION}: reusing {work / 'venv'}")
        return
    t0 = time.time()
    venv = work / "venv"
    if rebuild and venv.exists():
        shutil.rmtree(venv)
    if not venv.exists():
        log(f"creating {venv} (--system-site-packages)")
        _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "python -m venv")
    py = venv_python(work)
    # build-time needs; torch/numpy/hydra/omegaconf come from the system site-packages
    need = ["cython", "wheel", "bitarray"]
    for mod, pkg in (("regex", "regex"), ("sacrebleu", "sacrebleu")):
        if subprocess.run([py, "-c", f"import {mod}"], capture_output=True).returncode != 0:
            need.append(pkg)
    log(f"pip install into the venv: {' '.join(need)}")
    _run([py, "-m", "pip", "install", "-q", *need], "pip install " + " ".join(need))
    sdist_dir = work / "sdist"
    tgz = sdist_dir / f"fairseq-{FAIRSEQ_VERSION}.tar.gz"
    if not tgz.exists():
        log(f"pip download fairseq=={FAIRSEQ_VERSION} (sdist)")
        # --no-build-isolation: pip otherwise builds numpy/torch from source just to read metadata
        _run([py, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              "--no-build-isolation", f"fairseq=={FAIRSEQ_VERSION}", "-d", str(sdist_dir)],
             "pip download fairseq")
    src = work / "src" / f"fairseq-{FAIRSEQ_VERSION}"
    if not src.exists():
        with tarfile.open(tgz) as tf:
            tf.extractall(work / "src")
    changed = patch_fairseq_tree(src)
    log(f"patched {len(changed)} files: {', '.join(changed[:12])}{' ...' if len(changed) > 12 else ''}")
    log("pip install --no-deps --no-build-isolation (compiling the Cython extensions)")
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)],
         "pip install fairseq", cwd=work)
    p = subprocess.run([py, "-c", CHECK], cwd=work, capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.startswith(FAIRSEQ_VERSION):
        raise BuildError("the built fairseq does not import: "
                         + (p.stderr.strip().splitlines() or ["?"])[-1])
    log(f"fairseq {p.stdout.split()[0]} built in {time.time() - t0:.0f} s: {p.stdout.split()[1]}")


# ---------------------------------------------------------------------------------------------
# 2. the corpus
# ---------------------------------------------------------------------------------------------


def make_corpus(out_dir, mb, vocab=45000, zipf_s=1.1, seed=1):
    """Zipf-distributed pseudo-words (short words frequent) in lines of 5-40 words: train
    (``mb`` MB, every vocabulary word at least once), valid and test (5% each)."""
    import numpy as np

    out_dir = Path(out_dir)
    done = out_dir / "DONE"
    if done.exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cons, vows = "bcdfghjklmnprstvwz", "aeiou"
    syl = [c + v for c in cons for v in vows] + [c + v + c2 for c in cons for v in vows for c2 in "nrst"]
    words, seen = [], set()
    while len(words) < vocab:
        k = int(rng.choice([1, 2, 2, 3, 3, 3, 4]))
        w = "".join(syl[i] for i in rng.integers(0, len(syl), k))
        if w not in seen:
            seen.add(w)
            words.append(w)
    words.sort(key=len)  # the frequent words are the short ones
    words = np.array(words)
    p = 1.0 / np.arange(1, vocab + 1) ** zipf_s
    p /= p.sum()
    bytes_per_token = float((p * (np.char.str_len(words) + 1)).sum())

    def tokens(nbytes):
        return rng.choice(vocab, size=int(nbytes / bytes_per_token), p=p)

    def write(path, ids):
        with open(path, "w") as f:
            i = 0
            while i < len(ids):
                n = int(rng.integers(5, 41))
                f.write(" ".join(words[ids[i:i + n]]) + "\n")
                i += n

    train = tokens(mb * 1e6 - vocab * 8)
    train = np.insert(train, rng.integers(0, len(train) + 1, vocab), rng.permutation(vocab))
    write(out_dir / "train.txt", train)
    for split in ("valid", "test"):
        write(out_dir / f"{split}.txt", tokens(mb * 1e6 * 0.05))
    done.write_text("ok\n")
    return out_dir


# ---------------------------------------------------------------------------------------------
# 3. running both systems
# ---------------------------------------------------------------------------------------------

ENTRY = {
    "preprocess": "fairseq_cli.preprocess",
    "train": "fairseq_cli.train",
    "eval-lm": "fairseq_cli.eval_lm",
    "interactive": "fairseq_cli.interactive",
}


class System:
    def __init__(self, name, python):
        self.name, self.python = name, python

    def run(self, tool, args, cwd, threads, stdin=None, log_path=None):
        """Run ``fairseq-<tool> args`` through this system's interpreter (from ``cwd``, outside
        the repository, so that neither sees the other's package); returns (wall s, output)."""
        code = (f"import sys; sys.argv[0] = 'fairseq-{tool}'; from {ENTRY[tool]} import cli_main; "
                "sys.exit(cli_main())")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="")
        env.pop("PYTHONPATH", None)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        p = subprocess.run([self.python, "-c", code, *map(str, args)], cwd=cwd, env=env, input=stdin,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        if log_path:
            Path(log_path).write_text(" ".join(map(str, args)) + "\n\n" + p.stdout)
        if p.returncode != 0:
            tail = "\n".join(p.stdout.strip().splitlines()[-15:])
            raise RuntimeError(f"{self.name} fairseq-{tool} failed (exit {p.returncode}):\n{tail}")
        return wall, p.stdout


SHAPES = {  # name: (layers, embed, ffn, heads)
    "demo": (2, 128, 512, 4),
    "4x": (2, 512, 2048, 8),
}


def train_args(data, shape, max_update, save_dir, save):
    layers, dim, ffn, heads = SHAPES[shape]
    a = [data, "--task", "language_modeling", "--arch", "transformer_lm",
         "--decoder-layers", layers, "--decoder-embed-dim", dim, "--decoder-input-dim", dim,
         "--decoder-output-dim", dim, "--decoder-ffn-embed-dim", ffn, "--decoder-attention-heads", heads,
         "--decoder-normalize-before", "--share-decoder-input-output-embed", "--dropout", "0.1",
         "--criterion", "cross_entropy",
         "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--weight-decay", "0.01",
         "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--warmup-init-lr", "1e-07",
         "--lr", "0.002", "--clip-norm", "1.0",
         "--tokens-per-sample", "128", "--sample-break-mode", "none", "--max-tokens", "2048",
         "--num-workers", "0", "--seed", "1", "--max-update", max_update, "--cpu",
         "--log-format", "json", "--log-interval", "1", "--disable-validation",
         "--save-dir", save_dir, "--no-epoch-checkpoints"]
    if not save:
        a.append("--no-save")
    return a


def parse_train(out, skip):
    """(words/s over the updates after the first ``skip``, loss at update 1, updates logged)."""
    recs = []
    for line in out.splitlines():
        if "| train_inner |" in line:
            recs.append(json.loads(line.split("| train_inner |", 1)[1]))
    if len(recs) <= skip:
        raise RuntimeError(f"only {len(recs)} train_inner lines (need > {skip})")
    steady = [r for r in recs[skip:] if float(r["wps"]) > 0]  # fairseq logs wps 0 at update 1
    toks = sum(float(r["wpb"]) for r in steady)
    secs = sum(float(r["wpb"]) / float(r["wps"]) for r in steady)
    return toks / secs, float(recs[0]["loss"]), len(recs)


def parse_eval(out):
    m = re.search(r"Evaluated ([\d,]+) tokens in ([\d.]+)s \(([\d.]+) tokens/s\)", out)
    loss = re.search(r"Loss \(base 2\): ([\d.]+)", out)
    if not m:
        raise RuntimeError("no 'Evaluated ... tokens/s' line")
    return float(m.group(3)), int(m.group(1).replace(",", "")), float(loss.group(1)) if loss else None


def parse_gen(out):
    m = re.search(r"translation time: ([\d.]+)", out)
    if not m:
        raise RuntimeError("no 'translation time' line")
    src = {}
    new = 0
    nh = 0
    for line in out.splitlines():
        if line.startswith("S-"):
            i, text = line.split("\t", 1)
            src[i[2:]] = len(text.split())
        elif line.startswith("H-"):
            i, _score, text = line.split("\t", 2)
            new += len(text.split()) - src.get(i[2:], 0)
            nh += 1
    secs = float(m.group(1))
    return new / secs, new, nh, secs


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def compare_data_bins(a, b):
    a, b = Path(a), Path(b)
    names = sorted({p.name for p in a.iterdir() if p.is_file()} | {p.name for p in b.iterdir() if p.is_file()})
    names = [n for n in names if not n.endswith(".log")]
    diff = [n for n in names if not (a / n).exists() or not (b / n).exists()
            or (a / n).read_bytes() != (b / n).read_bytes()]
    return names, diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.environ.get("VS_FAIRSEQ_WORK", "/tmp/vs_fairseq"),
                    help="scratch directory: sdist, patched source, venv, corpus, runs")
    ap.add_argument("--corpus-mb", type=float, default=3.0, help="size of the training text (MB)")
    ap.add_argument("--vocab", type=int, default=45000, help="vocabulary of the generated corpus")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of ours, fairseq")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run")
    ap.add_argument("--updates", type=int, default=30, help="--max-update at the demo shape")
    ap.add_argument("--updates-4x", type=int, default=10, help="--max-update at 4x width")
    ap.add_argument("--skip", type=int, default=2, help="first updates left out of words/s")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per generation run")
    ap.add_argument("--gen-len", type=int, default=48,
                    help="--min-len and --max-len-b of generation (prompt included)")
    ap.add_argument("--only", default="preprocess,train,eval,gen",
                    help="comma-separated subset of preprocess,train,eval,gen")
    ap.add_argument("--systems", default="ours,fairseq", help="which systems to run (debugging)")
    ap.add_argument("--ours-python", default=sys.executable,
                    help="interpreter that imports this repository's fairseq")
    ap.add_argument("--build-only", action="store_true", help="build/check fairseq 0.12.2 and stop")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the fairseq venv")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    t_start = time.time()
    work.mkdir(parents=True, exist_ok=True)
    jobs = set(args.only.split(","))

    try:
        build_fairseq(work, rebuild=args.rebuild)
    except BuildError as e:
        first, _, rest = str(e).partition("\n")
        print(f"vs_fairseq: cannot build fairseq {FAIRSEQ_VERSION}: {first}", flush=True)
        if rest:
            print(rest, file=sys.stderr)
        return 3
    if args.build_only:
        return 0

    ours = System("ours", args.ours_python)
    theirs = System("fairseq", venv_python(work))
    p = subprocess.run([ours.python, "-c", "import fairseq, fairseq_cli; print(fairseq.__file__)"],
                       cwd=work, capture_output=True, text=True)
    if not p.stdout.strip().startswith(str(REPO)):
        print(f"vs_fairseq: {ours.python} does not import this repository's fairseq "
              f"({p.stdout.strip() or p.stderr.strip()[-200:]})")
        return 2
    systems = [s for s in (ours, theirs) if s.name in args.systems.split(",")]
    corpus = make_corpus(work / f"corpus-{args.corpus_mb:g}mb-v{args.vocab}", args.corpus_mb, args.vocab)
    runs = work / "runs" / time.strftime("%Y%m%d-%H%M%S")
    runs.mkdir(parents=True)
    log(f"work {work}; corpus {corpus} ({(corpus / 'train.txt').stat().st_size / 1e6:.2f} MB train); "
        f"logs {runs}; threads {args.threads}; load {loadavg()}")

    results = {}  # metric -> system -> [values]
    loads = {}    # metric -> [load averages at the runs]
    notes = []

    def record(metric, sysname, value):
        results.setdefault(metric, {}).setdefault(sysname, []).append(value)
        loads.setdefault(metric, []).append(float(loadavg()))

    # the data-bin both use: ours' preprocessing (compared with fairseq's below)
    data = work / f"data-bin-{args.corpus_mb:g}mb-v{args.vocab}"
    pre_args = ["--only-source", "--trainpref", corpus / "train.txt", "--validpref", corpus / "valid.txt",
                "--testpref", corpus / "test.txt", "--workers", "2"]
    if not (data / "dict.txt").exists():
        ours.run("preprocess", pre_args + ["--destdir", data], runs, args.threads,
                 log_path=runs / "preprocess-initial.log")
    ndict = sum(1 for _ in open(data / "dict.txt"))
    log(f"data-bin {data}: dict.txt has {ndict} entries (+4 specials)")

    ckpt = {}
    for r in range(args.repeats):
        for s in systems:
            tag = f"{s.name}-r{r}"
            if "preprocess" in jobs:
                dest = runs / f"pre-{tag}"
                wall, _ = s.run("preprocess", pre_args + ["--destdir", dest], runs, args.threads,
                                log_path=runs / f"preprocess-{tag}.log")
                record("preprocess s (wall, --workers 2)", s.name, wall)
                log(f"[{tag}] preprocess {wall:.2f} s  load {loadavg()}")
            if "train" in jobs or (("eval" in jobs or "gen" in jobs) and s.name not in ckpt):
                for shape, n in (("demo", args.updates), ("4x", args.updates_4x)):
                    if "train" not in jobs and shape != "demo":
                        continue
                    save = shape == "demo" and s.name not in ckpt
                    sd = runs / f"ckpt-{shape}-{tag}"  # a fresh dir: a checkpoint there would resume
                    _, out = s.run("train", train_args(data, shape, n, sd, save), runs, args.threads,
                                   log_path=runs / f"train-{shape}-{tag}.log")
                    wps, loss1, nlog = parse_train(out, args.skip)
                    if save:
                        ckpt[s.name] = sd / "checkpoint_last.pt"
                    if "train" in jobs:
                        record(f"train words/s, {shape}", s.name, wps)
                        record(f"train loss at update 1, {shape}", s.name, loss1)
                    log(f"[{tag}] train {shape}: {wps:.0f} words/s over updates {args.skip + 1}-{nlog}, "
                        f"loss@1 {loss1:.3f}  load {loadavg()}")
            if "eval" in jobs:
                for cw in (0, 64):
                    _, out = s.run("eval-lm", [data, "--path", ckpt[s.name], "--gen-subset", "valid",
                                               "--task", "language_modeling",
                                               "--tokens-per-sample", "128", "--sample-break-mode", "none",
                                               "--max-tokens", "4096", "--context-window", cw,
                                               "--num-workers", "0", "--cpu"],
                                   runs, args.threads, log_path=runs / f"eval-cw{cw}-{tag}.log")
                    tps, ntok, loss = parse_eval(out)
                    record(f"eval-lm tokens/s, context window {cw}", s.name, tps)
                    log(f"[{tag}] eval-lm cw {cw}: {tps:.0f} tokens/s ({ntok} tokens, loss {loss})  "
                        f"load {loadavg()}")
            if "gen" in jobs:
                prompts = [" ".join(ln.split()[:8]) for ln in open(corpus / "valid.txt")
                           if len(ln.split()) >= 8][: args.prompts]
                stdin = "\n".join(prompts) + "\n"
                for mode, margs in (("greedy", ["--beam", "1"]),
                                    ("sampling top-k 10", ["--beam", "1", "--sampling", "--sampling-topk", "10"]),
                                    ("beam 5", ["--beam", "5"])):
                    for bsz in (1, 8):
                        a = [data, "--path", ckpt[s.name], "--task", "language_modeling", *margs,
                             "--nbest", "1", "--seed", "1", "--batch-size", bsz,
                             "--buffer-size", max(bsz, len(prompts)), "--max-len-b", args.gen_len,
                             "--min-len", args.gen_len, "--cpu"]
                        key = f"{mode}, batch {bsz}"
                        _, out = s.run("interactive", a, runs, args.threads, stdin=stdin,
                                       log_path=runs / f"gen-{mode.split()[0]}-b{bsz}-{tag}.log")
                        tps, new, nh, secs = parse_gen(out)
                        record(f"generate tokens/s, {key}", s.name, tps)
                        log(f"[{tag}] {key}: {tps:.0f} tokens/s ({nh} hypotheses, {new} new tokens, "
                            f"{secs:.2f} s)  load {loadavg()}")

    if "preprocess" in jobs and (runs / "pre-ours-r0").is_dir() and (runs / "pre-fairseq-r0").is_dir():
        names, diff = compare_data_bins(runs / "pre-ours-r0", runs / "pre-fairseq-r0")
        notes.append(f"preprocess outputs: {len(names) - len(diff)}/{len(names)} files byte-identical"
                     + (f" (differ: {', '.join(diff)})" if diff else ""))

    # the report
    print()
    print(f"## ours vs fairseq {FAIRSEQ_VERSION}: medians of {args.repeats} alternating runs "
          f"(OMP_NUM_THREADS={args.threads}); ratio = ours/fairseq, > 1: ours is faster")
    print()
    print("| measure | ours | fairseq 0.12.2 | ratio | per-round ratios | load (1 min) |")
    print("|---|---|---|---|---|---|")
    for metric, by in results.items():
        o, f = by.get("ours", []), by.get("fairseq", [])
        lo = loads.get(metric, [])
        lrange = f"{min(lo):.1f}-{max(lo):.1f}" if lo else ""
        if "loss" in metric:
            print(f"| {metric} | {median(o):.3f} | {median(f):.3f} | (not a speed) | | {lrange} |")
            continue
        inverse = metric.startswith("preprocess")  # seconds: lower is faster
        ratio = (median(f) / median(o)) if inverse else (median(o) / median(f))
        rounds = [(b / a if inverse else a / b) for a, b in zip(o, f)]
        fmt = "{:.2f}" if inverse else "{:.0f}"
        print(f"| {metric} | {fmt.format(median(o))} | {fmt.format(median(f))} | **{ratio:.2f}** | "
              f"{', '.join(f'{x:.2f}' for x in rounds)} | {lrange} |")
    print()
    for n in notes:
        print(f"* {n}")
    print(f"* logs: {runs}; {(time.time() - t_start) / 60:.1f} min in all")
    (runs / "results.json").write_text(json.dumps({"results": results, "loads": loads, "notes": notes,
                                                   "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
