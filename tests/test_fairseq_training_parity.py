"""Training-time numbers against the fixture's fairseq run (``tests/fixtures/fairseq_0_12``).

The fixture's ``train.log`` was written by a fairseq build from its main branch after the
v0.12.2 tag (it has the "dry-run validation" of commit d871f616, Dec 2022), which batches in
two ways v0.12.2 does not:

- ``data_utils.batch_by_size`` drops the final batch when its size is not a multiple of
  ``required_batch_size_multiple`` (8): 5 of the 109 valid blocks, 2 of the 2,098 train blocks;
- ``get_batch_iterator`` orders equal-size samples under ``numpy_seed(seed + epoch)``, not
  ``numpy_seed(seed)``.

This package follows v0.12.2, the specification: every block is validated and trained on
(silently skipping validation data is a bug). The tests pin that, and show that emulating the
two rules above reproduces fairseq's records: the same valid loss, tokens and blocks, and the
same sequence of training batches (the per-update losses then track fairseq's, differing only
through the random initialisation and dropout).
"""
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from conftest import read_json_log

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fairseq_0_12"
CKPT = str(FIXTURES / "checkpoint_last.pt")
DATA = str(FIXTURES / "data-bin")

# the fixture README's fairseq-train command; fairseq's --arch transformer_lm is post-norm, and
# loading batches in the main process changes nothing but the time
FIXTURE_FLAGS = [
    "--task", "language_modeling", "--tokens-per-sample", "32", "--max-tokens", "512",
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.003",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10", "--max-update", "40",
    "--no-epoch-checkpoints", "--no-save-optimizer-state", "--log-format", "json", "--log-interval", "1", "--seed", "3",
    "--cpu", "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "32",
    "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64",
    "--decoder-attention-heads", "2", "--share-decoder-input-output-embed",
    "--no-decoder-normalize-before", "--num-workers", "0",
]


def fairseq_records(tag: str) -> List[Dict[str, Any]]:
    """The fixture log's records of one kind (``train_inner``, ``valid``), numbers parsed."""
    records = read_json_log(str(FIXTURES / "train.log"))
    if tag == "valid":
        return [r for r in records if "valid_loss" in r]
    return [r for r in records if "update" in r and "loss" in r]


def emulate_fairseq_main(monkeypatch) -> None:
    """Batch as the fixture's post-0.12.2 fairseq does (see the module docstring)."""
    from fairseq.data import data_utils, monolingual_dataset

    batch_by_size = data_utils.batch_by_size

    def drop_ragged_last(*args, **kwargs):
        batches = batch_by_size(*args, **kwargs)
        multiple = kwargs.get("required_batch_size_multiple", 1)
        if multiple > 1 and len(batches[-1]) % multiple != 0:
            batches = batches[:-1]
        return batches

    ordered_indices = monolingual_dataset.MonolingualDataset.ordered_indices

    def seed_plus_epoch(self):  # every iterator here is built for epoch 1
        seed = self.seed
        self.seed = seed + 1
        try:
            return ordered_indices(self)
        finally:
            self.seed = seed

    monkeypatch.setattr(data_utils, "batch_by_size", drop_ragged_last)
    monkeypatch.setattr(monolingual_dataset.MonolingualDataset, "ordered_indices", seed_plus_epoch)


class Records:
    """Collects what validation writes (the ``writers`` argument of ``training.validate``)."""

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []

    def log(self, tag: str, stats: Dict[str, Any], step: int) -> None:
        self.records.append(dict(stats, tag=tag, step=step))


def validate_fixture_checkpoint(**overrides: Any) -> Dict[str, Any]:
    """Training-time validation (``fairseq.training.validate``) of the fixture checkpoint."""
    from fairseq import checkpoint_utils
    from fairseq.trainer import Trainer
    from fairseq.training import validate

    model, task, cfg = checkpoint_utils.load_model_for_inference(
        CKPT, overrides={"no_progress_bar": True, "log_format": "none", **overrides}, data=DATA)
    task.load_dataset("valid", combine=False, epoch=1)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    writers = Records()
    (loss,) = validate(cfg, trainer, task, 1, ["valid"], writers)
    (record,) = writers.records
    record["raw_loss"] = loss
    return record


def test_training_validation_covers_every_valid_block():
    record = validate_fixture_checkpoint()
    # 3,477 tokens in 109 blocks of 32 (the last one 21), 8 batches: 6 x 16, 8, and the 5 left
    assert record["raw_loss"] == pytest.approx(6.3055, abs=1e-4)
    assert (record["wpb"], record["bsz"]) == (round(3477 / 8, 1), round(109 / 8, 1))


def test_fairseq_mains_batching_reproduces_its_valid_record(monkeypatch):
    (theirs,) = fairseq_records("valid")
    emulate_fairseq_main(monkeypatch)
    ours = validate_fixture_checkpoint()
    # 6.285 over 3,317 tokens in 104 blocks, 7 batches: the 5 dropped blocks explain it all
    assert round(ours["raw_loss"], 3) == theirs["valid_loss"] == 6.285
    assert (ours["wpb"], ours["bsz"]) == (theirs["valid_wpb"], theirs["valid_bsz"]) == (473.9, 14.9)
    assert (round(3317 / 7, 1), round(104 / 7, 1)) == (473.9, 14.9)


def test_fairseq_mains_batching_reproduces_its_training_batches(monkeypatch, tmp_path):
    from fairseq_cli.train import cli_main

    theirs = fairseq_records("train_inner")
    emulate_fairseq_main(monkeypatch)
    log = tmp_path / "train.log"
    cli_main([DATA, *FIXTURE_FLAGS, "--save-dir", str(tmp_path / "ck"), "--log-file", str(log)])
    ours = [r for r in read_json_log(str(log)) if "update" in r and "loss" in r]
    assert len(ours) == len(theirs) == 40
    for key in ("num_updates", "update", "wpb", "bsz", "lr"):  # 131 batches an epoch, as fairseq
        assert [r[key] for r in ours] == [r[key] for r in theirs], key
    mine = np.array([r["loss"] for r in ours])
    fairseqs = np.array([r["loss"] for r in theirs])
    # the same batches in the same order: the losses move together, update by update
    assert np.abs(mine - fairseqs).max() < 0.3
    assert np.corrcoef(np.diff(mine)[10:], np.diff(fairseqs)[10:])[0, 1] > 0.95
    saved = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
    assert "optimizer" not in saved and saved["model"]  # --no-save-optimizer-state


def test_nval_caps_the_validation_batches():
    from fairseq import options
    from fairseq_cli.validate import validate

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [DATA, "--arch", "transformer_lm", "--nval", "7"])
    assert args.max_valid_steps == 7
    # exactly 7 batches (fairseq 0.12 evaluates one more than it is asked for)
    record = validate_fixture_checkpoint(max_valid_steps=7)
    assert (record["wpb"], record["bsz"]) == (round(3317 / 7, 1), round(104 / 7, 1))
    stats = validate(CKPT, DATA, {"max_tokens": 512, "max_valid_steps": 2}, subsets="valid")["valid"]
    assert (stats["ntokens"], stats["nsentences"]) == (16 * 32 - 11 + 16 * 32, 32)
