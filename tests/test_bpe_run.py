"""A model trained on BPE-encoded text records its BPE, and every door decodes with it.

The pipeline is the user's: scripts/train_bpe.py, scripts/encode_bpe.py, fairseq-preprocess,
fairseq-train --bpe gpt2 ..., then the hub and fairseq-interactive without any BPE flag.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# every test here trains or starts several processes
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "tests" / "fixtures" / "fairseq_0_12" / "text"


def _head(src: Path, dest: Path, lines: int) -> Path:
    with open(src, encoding="utf-8") as f:
        kept = [line for _, line in zip(range(lines), f)]
    dest.write_text("".join(kept), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory):
    """``(workdir, save_dir, data_bin)``: a tiny LM trained on gpt2-BPE text, with the BPE files
    given as paths relative to ``workdir`` (the training command anchors them)."""
    from fairseq_cli import preprocess, train

    work = tmp_path_factory.mktemp("bpe_run")
    train_txt = _head(TEXT / "train.txt", work / "train.txt", 300)
    valid_txt = _head(TEXT / "valid.txt", work / "valid.txt", 40)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_bpe.py"), "--type", "byte_bpe",
                    "--vocab-size", "400", "--output-dir", str(work / "bpe"), str(train_txt)],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "encode_bpe.py"), "--bpe", "gpt2",
                    "--gpt2-encoder-json", str(work / "bpe" / "encoder.json"),
                    "--gpt2-vocab-bpe", str(work / "bpe" / "vocab.bpe"),
                    "--inputs", str(train_txt), str(valid_txt),
                    "--outputs", str(work / "train.bpe"), str(work / "valid.bpe"), "--workers", "2"],
                   check=True, capture_output=True)
    data_bin = work / "data-bin"
    preprocess.cli_main(["--only-source", "--trainpref", str(work / "train.bpe"),
                         "--validpref", str(work / "valid.bpe"), "--destdir", str(data_bin),
                         "--workers", "1"])
    cwd = os.getcwd()
    os.chdir(work)
    try:
        train.cli_main(["data-bin", "--task", "language_modeling", "--arch", "transformer_lm",
                        "--decoder-layers", "1", "--decoder-embed-dim", "32",
                        "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
                        "--tokens-per-sample", "32", "--max-tokens", "512", "--optimizer", "adam",
                        "--lr", "0.005", "--max-update", "20", "--save-dir", "ckpt",
                        "--no-epoch-checkpoints", "--log-format", "none", "--seed", "1",
                        "--bpe", "gpt2", "--gpt2-encoder-json", "bpe/encoder.json",
                        "--gpt2-vocab-bpe", "bpe/vocab.bpe"])
    finally:
        os.chdir(cwd)
    return work, work / "ckpt", data_bin


def test_checkpoint_records_the_bpe_with_absolute_paths(bpe_model):
    from fairseq.checkpoint_utils import config_from_checkpoint, load_checkpoint_to_cpu

    work, save_dir, _ = bpe_model
    path = str(save_dir / "checkpoint_last.pt")
    state = load_checkpoint_to_cpu(path)
    assert state["cfg"]["bpe"]["_name"] == "gpt2"
    cfg = config_from_checkpoint(state, path)
    assert cfg.bpe._name == "gpt2" and cfg.tokenizer is None
    assert cfg.bpe.gpt2_encoder_json == str(work / "bpe" / "encoder.json")
    assert cfg.bpe.gpt2_vocab_bpe == str(work / "bpe" / "vocab.bpe")


def test_hub_encodes_and_decodes_with_the_checkpoints_bpe(bpe_model, tmp_path, monkeypatch):
    from fairseq.models.transformer_lm import TransformerLanguageModel

    _, save_dir, data_bin = bpe_model
    monkeypatch.chdir(tmp_path)  # nothing is found through the training run's directory
    lm = TransformerLanguageModel.from_pretrained(str(save_dir), "checkpoint_last.pt",
                                                  data_name_or_path=str(data_bin))
    assert type(lm.bpe).__name__ == "GPT2BPE"
    text = "The model returns a value."
    ids = lm.encode(text)
    assert len(ids) < len(text)  # subwords, not characters
    assert lm.decode(ids) == text
    torch.manual_seed(1)
    sample = lm.sample("The model", beam=1, sampling=True, sampling_topk=10, max_len_b=8)
    assert isinstance(sample, str) and sample.startswith("The model")
    assert not re.fullmatch(r"[\d\s]+", sample[len("The model"):])  # text, not BPE ids


def test_interactive_detokenizes_with_the_checkpoints_bpe(bpe_model, tmp_path, capsys):
    from fairseq.models.transformer_lm import TransformerLanguageModel
    from fairseq_cli import interactive

    _, save_dir, data_bin = bpe_model
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The model\n", encoding="utf-8")
    interactive.main([str(data_bin), "--task", "language_modeling", "--path",
                      str(save_dir / "checkpoint_last.pt"), "--input", str(prompts), "--beam", "2",
                      "--max-len-b", "6", "--tokens-per-sample", "32"])
    lines = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines()
                 if line[:2] in ("S-", "H-", "D-"))
    hypothesis_ids = lines["H-0"].split("\t")[1]
    detokenized = lines["D-0"].split("\t")[1]
    assert re.fullmatch(r"[\d ]+", hypothesis_ids)  # H- keeps the BPE symbols
    assert detokenized.startswith("The model")
    lm = TransformerLanguageModel.from_pretrained(str(save_dir), "checkpoint_last.pt",
                                                  data_name_or_path=str(data_bin))
    assert detokenized == lm.bpe.decode(hypothesis_ids)
