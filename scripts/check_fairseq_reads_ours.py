#!/usr/bin/env python3
"""Check, with a real fairseq 0.12.2, that it reads this package's checkpoints (optional, not CI).

Needs a Python with fairseq 0.12.2 installed, e.g. the venv that
``python benchmarks/vs_fairseq.py --build-only --work DIR`` builds (``DIR/venv/bin/python``)::

    python scripts/check_fairseq_reads_ours.py --fairseq-python /tmp/vs_fairseq/venv/bin/python

In a scratch directory (``--work``, default a new temporary one) it writes a small corpus,
preprocesses it and trains two tiny ``transformer_lm`` models with this package (a plain one,
and one with rope, which fairseq 0.12.2 lacks), then, with fairseq 0.12.2:

1. ``checkpoint_utils.load_checkpoint_to_cpu`` reads the plain checkpoint;
2. ``TransformerLanguageModel.from_pretrained`` loads it and scores sentences: the positional
   scores must equal ours (``from_pretrained`` of this package) within ``--tolerance``;
3. ``fairseq-eval-lm`` on the test split gives the loss this package's ``fairseq-eval-lm`` gives;
4. the rope checkpoint is refused by ``from_pretrained`` and by ``fairseq-eval-lm``;
5. the plain model exported to a Hugging Face directory (``fairseq-export-hf``) and imported
   back (``fairseq-import-hf``) is a checkpoint ``fairseq-eval-lm`` evaluates to ours' loss.

Prints one line per check and exits 0 when all pass, 1 otherwise.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ["the cat sat on the mat", "a model of the language reads these words"]
MODEL = ["--task", "language_modeling", "--arch", "transformer_lm", "--decoder-layers", "1",
         "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
         "--tokens-per-sample", "32", "--max-tokens", "512", "--optimizer", "adam", "--lr", "0.005",
         "--no-epoch-checkpoints", "--log-format", "none", "--seed", "1", "--num-workers", "0"]

# Run by both interpreters: score SENTENCES with from_pretrained (JSON of positional scores).
_SCORE = r"""
import json, sys
from fairseq.models.transformer_lm import TransformerLanguageModel
save_dir, data, sentences = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
hub = TransformerLanguageModel.from_pretrained(save_dir, "checkpoint_last.pt", data_name_or_path=data)
hub.eval()
print("SCORES " + json.dumps([hub.score(s)["positional_scores"].tolist() for s in sentences]))
"""

_LOAD = r"""
import sys
from fairseq import checkpoint_utils
state = checkpoint_utils.load_checkpoint_to_cpu(sys.argv[1])
print("KEYS " + " ".join(sorted(state)))
"""


def run(cmd, cwd, env=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def last_error(proc) -> str:
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^\w*(Error|Exception)\b", line.strip())]
    return (errors or lines or ["(no output)"])[-1].strip()[:300]


def eval_lm_loss(python: str, work: Path, ckpt: Path):
    proc = run([python, "-m", "fairseq_cli.eval_lm", str(work / "data-bin"), "--path", str(ckpt),
                "--tokens-per-sample", "32", "--max-tokens", "512", "--cpu"], cwd="/tmp")
    m = re.search(r"Loss \(base 2\): ([0-9.]+)", proc.stderr + proc.stdout)
    return (float(m.group(1)) if m else None), proc


def same_eval_lm_loss(name: str, theirs: str, ours: str, work: Path, ckpt: Path, tolerance: float):
    """``(name, ok, detail)``: whether both interpreters' ``fairseq-eval-lm`` give ``ckpt`` the same loss."""
    loss_theirs, proc_t = eval_lm_loss(theirs, work, ckpt)
    loss_ours, proc_o = eval_lm_loss(ours, work, ckpt)
    if loss_theirs is None or loss_ours is None:
        return name, False, last_error(proc_t if loss_theirs is None else proc_o)
    return name, abs(loss_theirs - loss_ours) <= tolerance, f"fairseq {loss_theirs}, ours {loss_ours}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fairseq-python", default="/tmp/vs_fairseq/venv/bin/python",
                    help="a Python interpreter with fairseq 0.12.2 installed")
    ap.add_argument("--work", default=None, help="scratch directory (default: a new temporary one)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest difference of scores allowed")
    args = ap.parse_args()
    theirs, ours = args.fairseq_python, sys.executable
    work = Path(args.work or tempfile.mkdtemp(prefix="fairseq_reads_ours."))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_corpus  # the test suite's small corpus generator

    text = write_corpus(work / "text")
    steps = [
        [ours, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref", str(text / "train.txt"),
         "--validpref", str(text / "valid.txt"), "--testpref", str(text / "test.txt"),
         "--destdir", str(work / "data-bin"), "--workers", "1"],
        [ours, "-m", "fairseq_cli.train", str(work / "data-bin"), *MODEL, "--max-update", "30",
         "--share-decoder-input-output-embed", "--save-dir", str(work / "plain")],
        [ours, "-m", "fairseq_cli.train", str(work / "data-bin"), *MODEL, "--max-update", "3",
         "--rope", "--no-token-positional-embeddings", "--save-dir", str(work / "rope")],
    ]
    for cmd in steps:
        proc = run(cmd, cwd=str(ROOT))
        if proc.returncode != 0:
            print(f"setup failed: {cmd[2]}: {last_error(proc)}")
            return 1
    plain, rope = work / "plain" / "checkpoint_last.pt", work / "rope" / "checkpoint_last.pt"
    results = []

    proc = run([theirs, "-c", _LOAD, str(plain)], cwd="/tmp")
    keys = next((line[5:] for line in proc.stdout.splitlines() if line.startswith("KEYS ")), None)
    results.append(("load_checkpoint_to_cpu reads ours", keys is not None, keys or last_error(proc)))

    scores = {}
    for who, python in (("fairseq", theirs), ("ours", ours)):
        proc = run([python, "-c", _SCORE, str(plain.parent), str(work / "data-bin"), json.dumps(SENTENCES)],
                   cwd="/tmp" if who == "fairseq" else str(ROOT))
        line = next((x for x in proc.stdout.splitlines() if x.startswith("SCORES ")), None)
        scores[who] = json.loads(line[7:]) if line else None
        if line is None:
            results.append((f"from_pretrained ({who}) scores", False, last_error(proc)))
    if scores["fairseq"] is not None and scores["ours"] is not None:
        diffs = [abs(a - b) for x, y in zip(scores["fairseq"], scores["ours"]) for a, b in zip(x, y)]
        same_len = [len(x) for x in scores["fairseq"]] == [len(y) for y in scores["ours"]]
        worst = max(diffs) if diffs else float("nan")
        results.append(("from_pretrained scores equal ours", same_len and worst <= args.tolerance,
                        f"{sum(len(x) for x in scores['ours'])} positions, max |diff| {worst:.2e}"))

    results.append(same_eval_lm_loss("fairseq-eval-lm loss equals ours", theirs, ours, work, plain, args.tolerance))

    proc = run([theirs, "-c", _SCORE, str(rope.parent), str(work / "data-bin"), json.dumps(SENTENCES)], cwd="/tmp")
    results.append(("from_pretrained refuses a rope checkpoint", proc.returncode != 0, last_error(proc)))
    loss, proc = eval_lm_loss(theirs, work, rope)
    results.append(("fairseq-eval-lm refuses a rope checkpoint", loss is None and proc.returncode != 0,
                    last_error(proc) if loss is None else f"it evaluated it: loss {loss}"))

    hf, imported = work / "hf", work / "imported" / "model.pt"
    for cmd in ([ours, "-m", "fairseq_cli.export_hf", "--path", str(plain), "--data", str(work / "data-bin"),
                 "--out", str(hf), "--overwrite"],
                [ours, "-m", "fairseq_cli.import_hf", str(hf), "--out", str(imported), "--overwrite"]):
        proc = run(cmd, cwd=str(ROOT))
        if proc.returncode != 0:
            results.append((f"{cmd[2]} of the plain model", False, last_error(proc)))
            break
    else:
        results.append(same_eval_lm_loss("fairseq-eval-lm of the checkpoint imported from Hugging Face equals ours",
                                         theirs, ours, work, imported, args.tolerance))

    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print(f"work directory: {work}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
