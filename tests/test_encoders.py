"""BPE and tokenizers: round trips, GPT-2 format vs the tokenizers package, clear errors."""
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq.data.encoders import BPE_REGISTRY, build_bpe, build_tokenizer
from fairseq.data.encoders.errors import EncoderSetupError
from fairseq.data.encoders.gpt2_bpe import GPT2BPEConfig
from fairseq.data.encoders.hf_byte_bpe import HuggingFaceByteLevelBPEConfig
from fairseq.data.encoders.sentencepiece_bpe import SentencepieceConfig

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "tests" / "fixtures" / "fairseq_0_12" / "text"
SAMPLES = ["Hello world, it's 2026!", "  leading spaces and   gaps", "naïve café ✓ 日本語",
           "tabs\tand numbers 3.14159", "x"]


@pytest.fixture(scope="module")
def byte_bpe_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bpe")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_bpe.py"), "--type", "byte_bpe",
                    "--vocab-size", "400", "--output-dir", str(out), str(TEXT / "valid.txt")],
                   check=True, capture_output=True)
    return out


def _cfg(dataclass, **values):
    cfg = dataclass(**values)
    cfg._name = BPE_REGISTRY.name_of(cfg)
    return cfg


def test_gpt2_bpe_round_trips_and_matches_the_tokenizers_package(byte_bpe_dir):
    gpt2 = build_bpe(_cfg(GPT2BPEConfig, gpt2_encoder_json=str(byte_bpe_dir / "encoder.json"),
                          gpt2_vocab_bpe=str(byte_bpe_dir / "vocab.bpe")))
    hf = build_bpe(_cfg(HuggingFaceByteLevelBPEConfig, bpe_vocab=str(byte_bpe_dir / "vocab.json"),
                        bpe_merges=str(byte_bpe_dir / "merges.txt")))
    lines = SAMPLES + (TEXT / "test.txt").read_text(encoding="utf-8").splitlines()[:200]
    for line in lines:
        encoded = gpt2.encode(line)
        assert all(t.isdigit() for t in encoded.split())
        assert gpt2.decode(encoded) == line
        assert encoded == hf.encode(line)
        assert hf.decode(encoded) == line
    # merges were learned: common words are fewer symbols than bytes
    assert len(gpt2.encode("the function returns").split()) < len("the function returns")


def test_encode_bpe_script_with_workers_equals_one_worker(byte_bpe_dir, tmp_path):
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"valid.{workers}.bpe"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "encode_bpe.py"), "--bpe", "gpt2",
                        "--gpt2-encoder-json", str(byte_bpe_dir / "encoder.json"),
                        "--gpt2-vocab-bpe", str(byte_bpe_dir / "vocab.bpe"),
                        "--inputs", str(TEXT / "valid.txt"), "--outputs", str(out),
                        "--workers", workers], check=True, capture_output=True)
        outs.append(out.read_text(encoding="utf-8"))
    assert outs[0] == outs[1]
    assert len(outs[0].splitlines()) == len((TEXT / "valid.txt").read_text(encoding="utf-8").splitlines())


def test_sentencepiece_round_trip(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_bpe.py"), "--type", "sentencepiece",
                    "--vocab-size", "300", "--output-dir", str(tmp_path), str(TEXT / "valid.txt")],
                   check=True, capture_output=True)
    spm = build_bpe(_cfg(SentencepieceConfig, sentencepiece_model=str(tmp_path / "spm.model")))
    for line in ["the function returns a value", "Hello world, it's fine"]:
        encoded = spm.encode(line)
        assert len(encoded.split()) > 1
        assert spm.decode(encoded) == line
    assert spm.is_beginning_of_word("\u2581the")


@pytest.mark.parametrize("name", ["bytes", "characters"])
def test_symbol_level_encoders_round_trip(name):
    bpe = build_bpe(name)
    for line in ["Hello world, it's 2026!", "naïve café ✓ 日本語", "x"]:
        encoded = bpe.encode(line)
        assert " " not in encoded.replace(" ", "")  # symbols are separated by single spaces
        assert bpe.decode(encoded) == line


def test_space_tokenizer_collapses_whitespace():
    tok = build_tokenizer("space")
    assert tok.encode("a \t b\n c") == "a b c"
    assert tok.decode("a b") == "a b"


def test_files_are_never_downloaded_and_missing_files_are_named(tmp_path):
    with pytest.raises(EncoderSetupError, match="is a URL, and nothing is downloaded"):
        build_bpe(_cfg(GPT2BPEConfig))  # the defaults are fairseq's URLs
    missing = tmp_path / "nope.json"
    with pytest.raises(EncoderSetupError, match="nope.json.*no such file"):
        build_bpe(_cfg(GPT2BPEConfig, gpt2_encoder_json=str(missing), gpt2_vocab_bpe=str(missing)))
    with pytest.raises(EncoderSetupError, match="bpe.sentencepiece_model is not set"):
        build_bpe(_cfg(SentencepieceConfig))
