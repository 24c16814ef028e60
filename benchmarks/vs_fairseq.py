#!/usr/bin/env python3
"""Side by side with fairseq 0.12.2: the same jobs, on the same data, run alternately.

Optional and never run in CI. It needs PyPI (``pip download``), a C++ compiler and a few
minutes for the first run; later runs reuse the cached build.

What it does:

1. **Builds fairseq 0.12.2** from its PyPI sdist into a scratch virtual environment
   (``WORK/venv``, created with ``--system-site-packages`` so that what the base interpreter
   has is reused; fairseq goes in with ``--no-deps``). What the venv cannot import is installed
   into it first (``--print-install-plan`` shows the commands without running them): torch,
   numpy, hydra-core and omegaconf pinned to the versions of ``--ours-python`` (the same torch
   on both sides), or, where that interpreter lacks them, torch at the version
   ``scripts/install.sh`` pins, as its CPU build (``torch==X+cpu``, which cannot resolve to a
   CUDA wheel; ``--extra-index-url https://download.pytorch.org/whl/cpu`` is added only when that
   index answers) on a machine without ``nvidia-smi``, and numpy 2.4.6, hydra-core 1.3.8,
   omegaconf 2.3.1 (fairseq 0.12.2 asks for hydra-core 1.0.x / omegaconf 2.0.x, but hydra-core
   1.0.7 does not import on Python 3.11; the patched tree runs on these); then ``cython``,
   ``wheel``, ``bitarray``, ``regex``, ``sacrebleu``, ``tqdm``, ``cffi`` where missing. So it
   builds from an interpreter without torch too (a venv of the system Python: torch then lives
   in WORK/venv only). On Python 3.11 / NumPy 2 / torch >= 2.6 the
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
   the training split (valid and test are 5% each). **Or reads a real one**, ``--text PATH``:
   a UTF-8 text file is split by lines (blank lines dropped) into contiguous blocks, the first
   90% train, the next 5% valid, the last 5% test (``WORK/text-<name>-<content hash>``,
   reused while the file is unchanged); a directory must hold ``train.txt``, ``valid.txt`` and
   ``test.txt`` and is used as it is. Every figure then comes from that text.

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
     not equal, is all that is expected). With ``--dtypes fp32,bf16`` (the default) ours also
     trains each shape with ``--bf16``. fairseq 0.12.2's ``--bf16`` implies ``--tpu``; it is
     probed once (2 updates) and, when it fails as it does on a CPU without an XLA device, a
     line says so and the bf16 rows compare ours ``--bf16`` with fairseq fp32. The fp32 and
     bf16 matmul peaks (2048^3) are measured by our interpreter at the start and the end of
     the run; the MFU column is words/s x training FLOPs per token (``6N + 12LTd``,
     ``bench_common.flops_per_token``) over the higher peak *of the precision each side used*;
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
    python benchmarks/vs_fairseq.py --print-install-plan      # what the build would pip install
    python benchmarks/vs_fairseq.py --text corpus.txt --only train   # real text, fp32 + bf16 rows
    /usr/bin/python3 -m venv /tmp/bare && /tmp/bare/bin/python benchmarks/vs_fairseq.py --build-only \
        --work /tmp/vsf_bare                                  # from an interpreter without torch
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
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_common import flops_per_token, gflops_text, slow_bf16_note  # noqa: E402  (needs no torch)


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


# What the venv imports to build and run fairseq 0.12.2 for language modeling, and the pip
# requirement that provides each; the four heavy ones are pinned (see dependency_pins).
VENV_MODULES = (("torch", "torch"), ("numpy", "numpy"), ("hydra", "hydra-core"), ("omegaconf", "omegaconf"),
                ("Cython", "cython"), ("wheel", "wheel"), ("bitarray", "bitarray"), ("regex", "regex"),
                ("sacrebleu", "sacrebleu"), ("tqdm", "tqdm"), ("cffi", "cffi"))
PINNED = ("torch", "numpy", "hydra-core", "omegaconf")
# Known to build and run the patched tree on Python 3.11 (the versions this repository is tested
# with). fairseq 0.12.2 itself asks for hydra-core 1.0.x / omegaconf 2.0.x, but hydra-core 1.0.7
# does not import on Python 3.11 (a mutable dataclass default in hydra.conf) and newer pips
# refuse omegaconf 2.0.6's metadata, so the patched tree runs on the 1.3 / 2.3 series instead.
FALLBACK_PINS = {"numpy": "2.4.6", "hydra-core": "1.3.8", "omegaconf": "2.3.1"}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def missing_packages(py):
    """The pip names of VENV_MODULES that interpreter ``py`` cannot import."""
    code = ("import importlib.util as u; print(' '.join(m for m in %r if u.find_spec(m) is None))"
            % ([m for m, _ in VENV_MODULES],))
    p = subprocess.run([py, "-c", code], capture_output=True, text=True)
    absent = set(p.stdout.split()) if p.returncode == 0 else {m for m, _ in VENV_MODULES}
    return [pkg for mod, pkg in VENV_MODULES if mod in absent]


def installed_versions(py, packages=PINNED):
    """``{pip name: version}`` of ``packages`` as interpreter ``py`` has them (absent ones left out)."""
    code = ("import importlib.metadata as m, json, sys\nv = {}\nfor n in sys.argv[1:]:\n"
            "    try: v[n] = m.version(n)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(v))")
    try:
        p = subprocess.run([py, "-c", code, *packages], capture_output=True, text=True)
        return json.loads(p.stdout) if p.returncode == 0 else {}
    except (OSError, ValueError):
        return {}


def install_sh_torch_version():
    """The torch version scripts/install.sh pins (None when it cannot be read)."""
    try:
        m = re.search(r"torch==([0-9][0-9.]*)", (REPO / "scripts" / "install.sh").read_text())
    except OSError:
        return None
    return m.group(1) if m else None


def has_nvidia_gpu():
    return shutil.which("nvidia-smi") is not None


def dependency_pins(ours_versions, gpu=False):
    """``{pip name: exact version}`` for the venv's torch, numpy, hydra-core and omegaconf.

    The versions of our interpreter where it has them (the same torch on both sides of every
    comparison); otherwise torch from scripts/install.sh, as its CPU build (``+cpu``) on a
    machine without an NVIDIA GPU, and FALLBACK_PINS for the rest."""
    pins = {}
    torch_version = ours_versions.get("torch") or install_sh_torch_version() or "2.13.0"
    if "+" not in torch_version and not gpu and "torch" not in ours_versions:
        torch_version += "+cpu"
    pins["torch"] = torch_version
    for pkg in PINNED[1:]:
        pins[pkg] = ours_versions.get(pkg) or FALLBACK_PINS[pkg]
    return pins


def url_reachable(url, timeout=5.0):
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False


def install_commands(py, missing, pins, cpu_index_reachable):
    """The pip commands that give venv interpreter ``py`` the ``missing`` packages.

    torch goes in alone, pinned to ``pins["torch"]``: a ``+cpu`` pin can only resolve to a CPU
    wheel (from the CPU index when it answers, else from whatever pip's own configuration finds,
    e.g. a local wheel), never to a multi-GB CUDA build. The other pinned packages get ``==``."""
    cmds = []
    if "torch" in missing:
        cmd = [py, "-m", "pip", "install", "-q", f"torch=={pins['torch']}"]
        if pins["torch"].endswith("+cpu") and cpu_index_reachable:
            cmd += ["--extra-index-url", TORCH_CPU_INDEX]
        cmds.append(cmd)
    rest = [f"{pkg}=={pins[pkg]}" if pkg in pins else pkg for pkg in missing if pkg != "torch"]
    if rest:
        cmds.append([py, "-m", "pip", "install", "-q", *rest])
    return cmds


def plan_venv_install(work, ours_python):
    """``(commands, pins)``: what build_fairseq would install into WORK/venv. Without a venv yet,
    what the base interpreter lacks (the venv sees its site-packages)."""
    py = venv_python(work)
    probe = py if os.path.exists(py) else sys.executable
    missing = missing_packages(probe)
    pins = dependency_pins(installed_versions(ours_python), gpu=has_nvidia_gpu())
    reachable = "torch" in missing and pins["torch"].endswith("+cpu") and url_reachable(TORCH_CPU_INDEX + "/torch/")
    return install_commands(py, missing, pins, reachable), pins


def build_fairseq(work, rebuild=False, ours_python=None):
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
    # what the system site-packages lack goes into the venv, the heavy packages pinned
    cmds, pins = plan_venv_install(work, ours_python or sys.executable)
    for cmd in cmds:
        what = " ".join(cmd[5:])
        log(f"pip install into the venv: {what}")
        try:
            _run(cmd, "pip install " + what)
        except BuildError as e:
            if cmd[5].startswith("torch==") and pins["torch"].endswith("+cpu"):
                first, _, rest = str(e).partition("\n")
                raise BuildError(f"{first}; no CPU wheel of torch {pins['torch']} was found: install the CPU "
                                 "torch into the interpreter running this script (bash scripts/install.sh) "
                                 f"or make {TORCH_CPU_INDEX} reachable\n{rest}") from None
            raise
    py = venv_python(work)
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


def split_lines(lines, valid_frac=0.05, test_frac=0.05):
    """``(train, valid, test)``: contiguous blocks of ``lines`` in their order, 90/5/5 by default
    (the last lines are the test split); each split gets at least one line."""
    n = len(lines)
    if n < 3:
        raise ValueError(f"{n} lines: need at least 3 to split into train, valid and test")
    n_test = max(1, round(n * test_frac))
    n_valid = max(1, round(n * valid_frac))
    n_train = n - n_valid - n_test
    if n_train < 1:
        raise ValueError(f"{n} lines leave no training lines")
    return lines[:n_train], lines[n_train:n_train + n_valid], lines[n_train + n_valid:]


def prepare_text(work, path):
    """The corpus directory (train.txt, valid.txt, test.txt) for ``--text PATH``.

    A directory that holds train.txt, valid.txt and test.txt is used as it is. A file is split
    by lines with :func:`split_lines` (90/5/5, contiguous, blank lines dropped) into
    ``WORK/text-<name>-<hash of the content>``, reused while the content is unchanged."""
    import hashlib

    path = Path(path).expanduser().resolve()
    if path.is_dir():
        missing = [n for n in ("train.txt", "valid.txt", "test.txt") if not (path / n).is_file()]
        if missing:
            raise ValueError(f"--text {path} is a directory without {', '.join(missing)}: give a text file "
                             "(split 90/5/5 by lines) or a directory with train.txt, valid.txt and test.txt")
        return path
    if not path.is_file():
        raise ValueError(f"--text {path} does not exist: give a UTF-8 text file or a directory with "
                         "train.txt, valid.txt and test.txt")
    raw = path.read_bytes()
    out = Path(work) / f"text-{path.stem}-{hashlib.sha1(raw).hexdigest()[:10]}"
    if (out / "DONE").exists():
        return out
    try:
        lines = [ln for ln in raw.decode("utf-8").splitlines() if ln.strip()]
        parts = split_lines(lines)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"--text {path}: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    for name, part in zip(("train", "valid", "test"), parts):
        (out / f"{name}.txt").write_text("\n".join(part) + "\n", encoding="utf-8")
    (out / "DONE").write_text(f"{path}\n")
    return out


def measure_peaks(python, threads, size=2048):
    """``{"fp32": GFLOP/s, "bf16": GFLOP/s}``: the best ``size``-cubed matrix products of each
    precision, timed by ``python`` (our interpreter) with ``threads`` threads."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from bench_common import matmul_peaks; "
            "print(json.dumps(matmul_peaks(size=int(sys.argv[2]))))")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    p = subprocess.run([python, "-c", code, str(REPO / "benchmarks"), str(size)], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError("measuring the matmul peaks failed: " + (p.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(p.stdout.strip().splitlines()[-1])


def train_flops_per_token(shape, vocab, context=128):
    """Training FLOPs per token of SHAPES[shape] with ``vocab`` output rows (bench_common's count)."""
    layers, dim, ffn, _ = SHAPES[shape]
    return flops_per_token(layers, dim, ffn, context, vocab)


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


def train_args(data, shape, max_update, save_dir, save, bf16=False):
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
    if bf16:
        a.append("--bf16")
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


def report_rows(results, loads, peaks, vocab_rows):
    """The markdown rows of the report. A bf16 metric that fairseq lacks is compared with
    fairseq's fp32 figure of the same shape (``ours bf16 / fairseq fp32``); MFU is against the
    peak of the precision each side used."""
    rows = []
    for metric, by in results.items():
        o, f = by.get("ours", []), by.get("fairseq", [])
        f_dtype = "bf16" if metric.endswith(", bf16") else "fp32"
        label = metric
        if metric.endswith(", bf16") and not f:
            f = results.get(metric[: -len(", bf16")], {}).get("fairseq", [])
            f_dtype = "fp32"
            label = metric + " (ours --bf16 / fairseq fp32)"
        lo = loads.get(metric, [])
        lrange = f"{min(lo):.1f}-{max(lo):.1f}" if lo else ""
        if "loss" in metric:
            rows.append(f"| {label} | {median(o):.3f} | {median(f):.3f} | (not a speed) | | | {lrange} |")
            continue
        inverse = metric.startswith("preprocess")  # seconds: lower is faster
        ratio = (median(f) / median(o)) if inverse else (median(o) / median(f))
        rounds = [(b / a if inverse else a / b) for a, b in zip(o, f)]
        fmt = "{:.2f}" if inverse else "{:.0f}"
        mfu = ""
        shape = metric.split(", ")[1] if metric.startswith("train words/s") else None
        if shape in SHAPES and peaks:
            fpt = train_flops_per_token(shape, vocab_rows) / 1e9
            o_dtype = "bf16" if metric.endswith(", bf16") else "fp32"
            mfu = " / ".join(f"{median(v) * fpt / max(peaks[d]):.0%}" if v and d in peaks else "-"
                             for v, d in ((o, o_dtype), (f, f_dtype)))
        rows.append(f"| {label} | {fmt.format(median(o))} | {fmt.format(median(f))} | **{ratio:.2f}** | "
                    f"{', '.join(f'{x:.2f}' for x in rounds)} | {mfu} | {lrange} |")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.environ.get("VS_FAIRSEQ_WORK", "/tmp/vs_fairseq"),
                    help="scratch directory: sdist, patched source, venv, corpus, runs")
    ap.add_argument("--corpus-mb", type=float, default=3.0, help="size of the generated training text (MB)")
    ap.add_argument("--text", default=None, metavar="PATH",
                    help="a real corpus instead of the generated one: a UTF-8 text file (split by lines, "
                         "90/5/5 contiguous, into train/valid/test) or a directory with train.txt, valid.txt "
                         "and test.txt")
    ap.add_argument("--dtypes", default=None,
                    help="training precisions of ours: fp32 and/or bf16 (--bf16; fairseq's needs an XLA "
                         "device, so its bf16 is only probed); default both, fp32 only where the bf16 "
                         "matmul peak is below the fp32 one")
    ap.add_argument("--vocab", type=int, default=45000, help="vocabulary of the generated corpus")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of ours, fairseq")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run")
    ap.add_argument("--shapes", default="demo,4x", help="training shapes: demo (2 x 128) and/or 4x (2 x 512)")
    ap.add_argument("--updates", type=int, default=30, help="--max-update at the demo shape")
    ap.add_argument("--updates-4x", type=int, default=10, help="--max-update at 4x width")
    ap.add_argument("--skip", type=int, default=2, help="first updates left out of words/s")
    ap.add_argument("--prompts", type=int, default=48,
                    help="prompts per generation run (48: a beam run lasts seconds, not fractions of one)")
    ap.add_argument("--gen-len", type=int, default=48,
                    help="--min-len and --max-len-b of generation (prompt included)")
    ap.add_argument("--only", default="preprocess,train,eval,gen",
                    help="comma-separated subset of preprocess,train,eval,gen")
    ap.add_argument("--systems", default="ours,fairseq", help="which systems to run (debugging)")
    ap.add_argument("--ours-python", default=sys.executable,
                    help="interpreter that imports this repository's fairseq")
    ap.add_argument("--build-only", action="store_true", help="build/check fairseq 0.12.2 and stop")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the fairseq venv")
    ap.add_argument("--print-install-plan", action="store_true",
                    help="print the pip commands the build would run into the venv (and the pins) and stop")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    t_start = time.time()
    work.mkdir(parents=True, exist_ok=True)
    jobs = set(args.only.split(","))

    if args.print_install_plan:
        cmds, pins = plan_venv_install(work, args.ours_python)
        log("pins: " + ", ".join(f"{k}=={v}" for k, v in pins.items()))
        for cmd in cmds or [["(nothing to install: the interpreter has every package)"]]:
            log(" ".join(cmd))
        return 0
    try:
        build_fairseq(work, rebuild=args.rebuild, ours_python=args.ours_python)
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
              f"({(p.stdout.strip() or p.stderr.strip()).splitlines()[-1][-160:] if (p.stdout + p.stderr).strip() else '?'}): "
              "pass --ours-python with an interpreter where 'pip install -e .' was run")
        return 2
    systems = [s for s in (ours, theirs) if s.name in args.systems.split(",")]
    dtypes = [d for d in (args.dtypes or "fp32,bf16").split(",") if d]
    if not dtypes or set(dtypes) - {"fp32", "bf16"}:
        print(f"vs_fairseq: --dtypes {args.dtypes!r}: give fp32, bf16 or fp32,bf16")
        return 2
    shapes = [x for x in args.shapes.split(",") if x]
    if not shapes or set(shapes) - set(SHAPES):
        print(f"vs_fairseq: --shapes {args.shapes!r}: give demo, 4x or demo,4x")
        return 2
    if args.text:
        try:
            corpus = prepare_text(work, args.text)
        except ValueError as e:
            print(f"vs_fairseq: {e}")
            return 2
        key = corpus.name if corpus.parent == work else "text-" + corpus.name
    else:
        corpus = make_corpus(work / f"corpus-{args.corpus_mb:g}mb-v{args.vocab}", args.corpus_mb, args.vocab)
        key = f"{args.corpus_mb:g}mb-v{args.vocab}"
    runs = work / "runs" / time.strftime("%Y%m%d-%H%M%S")
    runs.mkdir(parents=True)
    log(f"work {work}; corpus {corpus} ({(corpus / 'train.txt').stat().st_size / 1e6:.2f} MB train); "
        f"logs {runs}; threads {args.threads}; load {loadavg()}")
    notes = []
    peaks = {}  # precision -> [GFLOP/s measured at the start and at the end]
    slow = None
    if "train" in jobs:
        for k, v in measure_peaks(ours.python, args.threads).items():
            peaks.setdefault(k, []).append(v)
        log("matmul peak (2048^3): " + ", ".join(f"{k} {gflops_text(v[-1])} GFLOP/s" for k, v in peaks.items())
            + f"  load {loadavg()}")
        slow = slow_bf16_note({k: v[-1] for k, v in peaks.items()})
        if slow and "bf16" in dtypes:
            if not args.dtypes:
                slow += "; bf16 left out (--dtypes fp32,bf16 runs it anyway)"
                dtypes = ["fp32"]
            log("note: " + slow)
            notes.append(slow)
    # without bf16 matmul support the bf16 "peak" is a probe's slow rate, no ceiling: no bf16 MFU
    mfu_peaks = {k: v for k, v in peaks.items() if not (slow and k == "bf16")}

    results = {}  # metric -> system -> [values]
    loads = {}    # metric -> [load averages at the runs]

    def record(metric, sysname, value):
        results.setdefault(metric, {}).setdefault(sysname, []).append(value)
        loads.setdefault(metric, []).append(float(loadavg()))

    # the data-bin both use: ours' preprocessing (compared with fairseq's below)
    data = work / f"data-bin-{key}"
    pre_args = ["--only-source", "--trainpref", corpus / "train.txt", "--validpref", corpus / "valid.txt",
                "--testpref", corpus / "test.txt", "--workers", "2"]
    if not (data / "dict.txt").exists():
        ours.run("preprocess", pre_args + ["--destdir", data], runs, args.threads,
                 log_path=runs / "preprocess-initial.log")
    ndict = sum(1 for _ in open(data / "dict.txt"))
    log(f"data-bin {data}: dict.txt has {ndict} entries (+4 specials)")

    # fairseq 0.12.2's --bf16 implies --tpu: probed once, so the report says what it does on this machine
    bf16_systems = {"ours"}
    if "train" in jobs and "bf16" in dtypes and theirs in systems:
        try:
            theirs.run("train", train_args(data, "demo", 2, runs / "ckpt-bf16-probe", False, bf16=True), runs,
                       args.threads, log_path=runs / "train-bf16-probe-fairseq.log")
            bf16_systems.add("fairseq")
            notes.append("fairseq 0.12.2 --bf16 ran on this machine: its bf16 rows are measured")
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            why = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "?")
            notes.append(f"fairseq 0.12.2 --bf16 (which implies --tpu) does not run here, it needs an XLA device "
                         f"({why[:160]}): no fairseq bf16 row; ours --bf16 is compared with fairseq fp32")
        log(notes[-1])
    ndict_rows = ndict + 4

    def train_metric(shape, dtype):
        return f"train words/s, {shape}" + (", bf16" if dtype == "bf16" else "")

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
                    timed = "train" in jobs and shape in shapes
                    # eval and gen read a demo checkpoint each system trained itself
                    need_ckpt = shape == "demo" and ("eval" in jobs or "gen" in jobs) and s.name not in ckpt
                    if not timed and not need_ckpt:
                        continue
                    for dtype in ("fp32", "bf16"):
                        if timed and (dtype not in dtypes or (dtype == "bf16" and s.name not in bf16_systems)):
                            continue
                        if not timed and dtype != "fp32":
                            continue
                        save = shape == "demo" and dtype == "fp32" and s.name not in ckpt
                        # a fresh dir: a checkpoint there would resume
                        sd = runs / f"ckpt-{shape}-{dtype}-{tag}"
                        _, out = s.run("train", train_args(data, shape, n, sd, save, bf16=dtype == "bf16"), runs,
                                       args.threads, log_path=runs / f"train-{shape}-{dtype}-{tag}.log")
                        wps, loss1, nlog = parse_train(out, args.skip)
                        if save:
                            ckpt[s.name] = sd / "checkpoint_last.pt"
                        if timed:
                            record(train_metric(shape, dtype), s.name, wps)
                            record(f"train loss at update 1, {shape}" + (", bf16" if dtype == "bf16" else ""),
                                   s.name, loss1)
                        mfu = (f" ({wps * train_flops_per_token(shape, ndict_rows) / 1e9 / max(mfu_peaks[dtype]):.0%}"
                               f" of the {dtype} peak)") if dtype in mfu_peaks else ""
                        log(f"[{tag}] train {shape} {dtype}: {wps:.0f} words/s over updates {args.skip + 1}-{nlog}"
                            f"{mfu}, loss@1 {loss1:.3f}  load {loadavg()}")
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

    if peaks:
        for k, v in measure_peaks(ours.python, args.threads).items():
            peaks.setdefault(k, []).append(v)
        notes.append("matmul peak (2048^3, best of 5) at the start / end: " + "; ".join(
            f"{k} {' / '.join(gflops_text(x) for x in v)} GFLOP/s" for k, v in peaks.items())
            + "; MFU = words/s x training FLOPs per token (6N + 12LTd) / the higher peak of the precision used")

    # the report
    print()
    print(f"## ours vs fairseq {FAIRSEQ_VERSION}: medians of {args.repeats} alternating runs "
          f"(OMP_NUM_THREADS={args.threads}, {'text ' + str(Path(args.text).name) if args.text else 'generated'} "
          f"corpus); ratio = ours/fairseq, > 1: ours is faster")
    print()
    print("| measure | ours | fairseq 0.12.2 | ratio | per-round ratios | MFU ours / fairseq | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    for line in report_rows(results, loads, mfu_peaks, ndict_rows):
        print(line)
    print()
    for n in notes:
        print(f"* {n}")
    print(f"* load average (1, 5, 15 min) at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; logs: "
          f"{runs}; {(time.time() - t_start) / 60:.1f} min in all")
    (runs / "results.json").write_text(json.dumps({"results": results, "loads": loads, "notes": notes, "peaks": peaks,
                                                   "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
