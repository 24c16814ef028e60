#!/usr/bin/env python3
"""Write docs/notebook.ipynb (the notebook door) from the cells below, without outputs.

The notebook is reviewed here, as Python; regenerate it after editing a cell:

    python scripts/make_notebook.py            # writes docs/notebook.ipynb
    python scripts/make_notebook.py --check    # exit 1 if docs/notebook.ipynb is out of date

tests/test_notebook.py executes the generated notebook on a real Jupyter kernel.
"""
import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "notebook.ipynb"

CELLS = [
    ("markdown", """\
# A language model in a notebook

This notebook is the third door to the project, next to `fairseq-hydra-train` and `fairseq-train`:
the same library, imported and driven by hand. It

1. builds the bundled demo corpus (Python's own help topics: nothing is downloaded) and preprocesses it;
2. composes a run config with Hydra's compose API, with overrides as on the command line;
3. builds the task, model and criterion from that config;
4. trains a small `transformer_lm` for a few hundred updates with the library's `Trainer`,
   recording the loss of every update and the validation loss every few updates;
5. saves a normal checkpoint, reloads it through the hub interface, scores and continues sentences;
6. plots the loss curves.

It runs in about a minute on two CPU cores. The parameters below set its size."""),
    ("code", """\
CORPUS_TOPICS = None   # help topics in the corpus (None: all 79, about 100k training tokens)
MAX_UPDATES = 300      # training updates
VALID_EVERY = 25       # validate every this many updates
SEED = 1
WORK_DIR = None        # where data and checkpoints go (None: a fresh temporary directory)"""),
    ("code", """\
%matplotlib inline
import logging
import math
import os
import tempfile
import time

import matplotlib.pyplot as plt
import torch
from omegaconf import OmegaConf

from fairseq import checkpoint_utils, tasks
from fairseq.data.demo_corpus import write_demo_corpus
from fairseq.dataclass.initialize import compose_config
from fairseq.models.transformer_lm import TransformerLanguageModel
from fairseq.trainer import Trainer
from fairseq.training import get_train_iterator, reduce_stats, set_seed
from fairseq_cli import preprocess

logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.WARNING)
work = WORK_DIR or tempfile.mkdtemp(prefix="fairseq-notebook-")
text_dir, data_dir, save_dir = (os.path.join(work, d) for d in ("text", "data-bin", "checkpoints"))
print("working in", work)"""),
    ("markdown", """\
## 1. Data

`write_demo_corpus` writes `train.txt`, `valid.txt` and `test.txt` (one paragraph per line, tokens
separated by spaces; `scripts/prepare_demo_corpus.py` is its command line). `fairseq_cli.preprocess`
is `fairseq-preprocess`, called in-process with the same arguments: it builds `dict.txt` and
binarizes each split to memory-mapped `.bin`/`.idx` files, fairseq's format byte for byte."""),
    ("code", """\
tokens = write_demo_corpus(text_dir, max_topics=CORPUS_TOPICS)
print("tokens per split:", tokens)
preprocess.cli_main([
    "--only-source", "--destdir", data_dir, "--workers", "1",
    "--overwrite",  # rebuild data-bin/ when the notebook runs again in the same WORK_DIR
    "--trainpref", os.path.join(text_dir, "train.txt"),
    "--validpref", os.path.join(text_dir, "valid.txt"),
    "--testpref", os.path.join(text_dir, "test.txt"),
])
print(sorted(os.listdir(data_dir)))"""),
    ("markdown", """\
## 2. Config

`compose_config` composes `config/` exactly as `fairseq-hydra-train` does, outside any Hydra app.
The overrides are the command line's `key=value` arguments; `check=True` checks them as that command
does (a misspelt key names the closest real one, a value out of range says what is accepted).
The result is the typed `FairseqConfig` (an OmegaConf `DictConfig`: assigning a value of the wrong
type, or a key that does not exist, fails). `OmegaConf.to_yaml(cfg)` shows all of it; every field
is documented in `docs/components.md`."""),
    ("code", """\
overrides = [
    f"task.data={data_dir}", "task.tokens_per_sample=64",
    "model.decoder_layers=2", "model.decoder_embed_dim=64", "model.decoder_input_dim=64",
    "model.decoder_output_dim=64", "model.decoder_ffn_embed_dim=256", "model.decoder_attention_heads=4",
    "model.share_decoder_input_output_embed=true", "model.dropout=0.1",
    "optimizer.adam_betas=[0.9,0.98]", "optimizer.weight_decay=0.01",
    "lr_scheduler.warmup_updates=50", "lr_scheduler.warmup_init_lr=1e-07",
    "optimization.lr=[0.005]", "optimization.clip_norm=1.0", f"optimization.max_update={MAX_UPDATES}",
    "dataset.max_tokens=1024", f"common.seed={SEED}", f"checkpoint.save_dir={save_dir}",
]
cfg = compose_config(overrides, check=True)
print(OmegaConf.to_yaml(cfg.model))"""),
    ("markdown", """\
## 3. Task, model, criterion

Each component is built from its own node of the config, as in fairseq: the task reads the
dictionary and datasets, the model takes the task's dictionary, the criterion the task's padding."""),
    ("code", """\
set_seed(cfg.common.seed)
task = tasks.setup_task(cfg.task)
task.load_dataset("valid")
model = task.build_model(cfg.model)
criterion = task.build_criterion(cfg.criterion)
vocab_size = len(task.dictionary)
n_params = sum(p.numel() for p in model.parameters())
print(f"{type(model).__name__}: {n_params:,} parameters, vocabulary of {vocab_size} types")
print(f"untrained, the loss is about log2({vocab_size}) = {math.log2(vocab_size):.2f} bits per token")"""),
    ("markdown", """\
## 4. Training

`Trainer` owns the optimizer, the lr schedule, precision and the update counter. `get_train_iterator`
gives the batches `fairseq-train` would use; `trainer.train_step([batch])` is one update (a list
of several batches accumulates gradients, like `--update-freq`). Its logging outputs keep tensors on
the device; `reduce_stats` turns them into fairseq's numbers: `loss` in bits per token (base 2) and
`ppl = 2**loss`. Validation runs `trainer.valid_step` over the valid split."""),
    ("code", """\
trainer = Trainer(cfg, task, model, criterion)
epoch_itr = get_train_iterator(cfg, task, epoch=1)


def valid_loss():
    \"\"\"Validation loss (bits per token) over the whole valid split.\"\"\"
    itr = task.get_batch_iterator(task.dataset("valid"), max_tokens=cfg.dataset.max_tokens,
                                  max_positions=task.max_positions()).next_epoch_itr(shuffle=False)
    logs = [trainer.valid_step(sample) for sample in itr]
    return reduce_stats(task, criterion, [log for log in logs if log])["loss"]


train_curve, valid_curve = [], []   # (update, loss in bits per token)
valid_curve.append((0, valid_loss()))
start = time.perf_counter()
while trainer.get_num_updates() < MAX_UPDATES:
    itr = epoch_itr.next_epoch_itr(shuffle=True)
    trainer.lr_step_begin_epoch(epoch_itr.epoch)
    for sample in itr:
        out = trainer.train_step([sample])
        update = trainer.get_num_updates()
        train_curve.append((update, reduce_stats(task, criterion, out["logging_outputs"])["loss"]))
        if update % VALID_EVERY == 0 or update == MAX_UPDATES:
            valid_curve.append((update, valid_loss()))
            print(f"epoch {epoch_itr.epoch} update {update:4d}  lr {out['lr']:.2e}  "
                  f"train {train_curve[-1][1]:.3f}  valid {valid_curve[-1][1]:.3f} bits/token")
        if update >= MAX_UPDATES:
            break
    if epoch_itr.end_of_epoch():
        trainer.lr_step(epoch_itr.epoch, valid_curve[-1][1])
print(f"{trainer.get_num_updates()} updates in {time.perf_counter() - start:.0f} s")"""),
    ("markdown", """\
## 5. Checkpoint, reload, score and generate

`checkpoint_utils.save_checkpoint` is what the training loop calls: with fairseq's signature
`(cfg.checkpoint, trainer, epoch_itr, val_loss)` it writes `checkpoint_last.pt` (and
`checkpoint_best.pt` when `val_loss` is the best so far) holding the config, model, optimizer,
schedule and data position, so `fairseq-train --restore-file`, `fairseq-eval-lm` and
`fairseq-generate` read it like any other.

`TransformerLanguageModel.from_pretrained` loads it into a hub object (an `nn.Module`; `.to(device)`,
`.half()`, `.eval()` work as usual) with `encode`/`decode` (text to ids and back), `score`
(natural-log probability of each token), `sample` (text in, text out) and `generate` (ids in,
hypotheses out). Nothing is downloaded: the path is a local directory."""),
    ("code", """\
checkpoint_utils.save_checkpoint(cfg.checkpoint, trainer, epoch_itr, valid_curve[-1][1])
print(sorted(f for f in os.listdir(save_dir) if f.endswith(".pt")))

lm = TransformerLanguageModel.from_pretrained(save_dir, "checkpoint_last.pt", data_name_or_path=data_dir)
lm.eval()
for sentence in ["The function returns a value .", "value a returns function The ."]:
    scores = lm.score(sentence)["positional_scores"]   # log p(token | prefix), natural log
    print(f"ppl {math.exp(-scores.mean().item()):8.1f}  {sentence}")

# perplexity over test paragraphs that fit the model's context (tokens_per_sample)
with open(os.path.join(text_dir, "test.txt"), encoding="utf-8") as f:
    test_lines = [line.strip() for line in f if 0 < len(line.split()) < cfg.task.tokens_per_sample]
scores = torch.cat([hypo["positional_scores"] for hypo in lm.score(test_lines)])
ppl = math.exp(-scores.mean().item())
print(f"test perplexity {ppl:.1f} over {scores.numel()} tokens in {len(test_lines)} paragraphs "
      f"(an untrained model: about {vocab_size})")"""),
    ("code", """\
prompt = "The return statement"
print("ids:", lm.encode(prompt).tolist(), "->", lm.decode(lm.encode(prompt)))
# top-k sampling; a seed makes it repeatable
samples = [lm.sample(prompt, sampling=True, sampling_topk=10, seed=seed, max_len_b=20) for seed in (1, 2)]
for text in samples:
    print("sample:", text)
hypos = lm.generate(lm.encode(prompt), beam=4, max_len_b=20, no_repeat_ngram_size=2)
for h in hypos[:2]:
    print(f"beam {h['score'].item():7.3f}:", lm.decode(h["tokens"]))"""),
    ("markdown", """\
## 6. Loss curves

Training loss of every update (noisy: one batch each, with dropout on) and validation loss over the
whole valid split (dropout off). On this corpus the valid and test paragraphs also happen to read
about one bit per token easier than the training paragraphs, even with dropout off, so the
valid curve lies well below the training one. The figure is also saved as `loss.png` in the
working directory."""),
    ("code", """\
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(*zip(*train_curve), lw=0.8, alpha=0.7, label="train (per update)")
ax.plot(*zip(*valid_curve), "o-", label="valid")
ax.axhline(math.log2(vocab_size), ls=":", c="gray", label="uniform over the vocabulary")
ax.set_xlabel("update")
ax.set_ylabel("loss (bits per token)")
ax.legend()
fig.savefig(os.path.join(work, "loss.png"), dpi=80)
plt.show()

summary = {"parameters": n_params, "vocabulary": vocab_size, "updates": trainer.get_num_updates(),
           "valid_loss_start": round(valid_curve[0][1], 3), "valid_loss_end": round(valid_curve[-1][1], 3),
           "reloaded_ppl": round(ppl, 1), "sample": samples[0]}
print(summary)"""),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(CELLS):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(source, id=f"cell-{i:02d}"))
    nbformat.validate(nb)
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the notebook is up to date")
    args = parser.parse_args()
    text = nbformat.writes(build()) + "\n"
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python scripts/make_notebook.py", file=sys.stderr)
            sys.exit(1)
        return
    OUT.write_text(text, encoding="utf-8")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
