"""Hostile input to the running commands (issue 25, part D): each mistake ends with exactly one
line on stderr naming the value and the fix, no traceback, exit code 2 — batches no sample fits,
generation lengths no output can meet, absurd beams, damaged checkpoint configs, a dictionary
of another model, prompts that are not UTF-8.
"""
import copy
import io
import shutil
import sys

import pytest
import torch

from conftest import TINY_MODEL, TINY_MODEL_HYDRA, in_process

# the tiny model without a sample length or batch size: the tests below choose those
TINY_LEGACY = [*TINY_MODEL, "--optimizer", "adam", "--num-workers", "0", "--max-update", "2",
               "--no-epoch-checkpoints"]
TINY_HYDRA = [*TINY_MODEL_HYDRA, "dataset.num_workers=0", "optimization.max_update=2"]


# the Hydra door runs in-process: its handlers removed after, its run directory in tmp_path
pytestmark = pytest.mark.usefixtures("restore_root_log_handlers", "in_tmp_cwd")


def one_line(code, err, *names):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], err
    return lines[0]


def checkpoint(tiny_checkpoint):
    return str(tiny_checkpoint / "checkpoint_last.pt")


# -- 1. a sample larger than a batch ----------------------------------------------------------------
def test_max_tokens_below_the_samples_stops_training_in_both_doors(data_bin, tmp_path, capsys):
    """The default tokens_per_sample (1024) with --max-tokens 256: one line before any update."""
    from fairseq_cli import train, train_hydra

    save = tmp_path / "ck"
    code, err = in_process(train.cli_main, [data_bin, *TINY_LEGACY, "--max-tokens", "256",
                                            "--save-dir", str(save)], capsys)
    line = one_line(code, err, "split 'train'", "tokens", "--max-tokens", "dataset.max_tokens=256",
                    "--tokens-per-sample 256", "task.tokens_per_sample")
    assert "--skip-invalid-size-inputs-valid-test" not in line  # training skips nothing for this
    assert not (save / "checkpoint_last.pt").exists()
    code, err = in_process(train_hydra.cli_main, [f"task.data={data_bin}", f"checkpoint.save_dir={save}",
                                                  *TINY_HYDRA, "dataset.max_tokens=256"], capsys)
    one_line(code, err, "split 'train'", "--max-tokens", "dataset.max_tokens=256", "task.tokens_per_sample")
    assert not (save / "checkpoint_last.pt").exists()


def test_max_tokens_valid_below_the_samples_stops_before_training(data_bin, tmp_path, capsys):
    from fairseq_cli import train

    save = tmp_path / "ck"
    code, err = in_process(train.cli_main, [data_bin, *TINY_LEGACY, "--tokens-per-sample", "64",
                                            "--max-tokens", "256", "--max-tokens-valid", "16",
                                            "--save-dir", str(save)], capsys)
    one_line(code, err, "split 'valid'", "dataset.max_tokens_valid=16", "--max-tokens-valid 64",
             "--skip-invalid-size-inputs-valid-test")
    assert not (save / "checkpoint_last.pt").exists()
    # with the flag, those samples are skipped and training runs
    train.cli_main([data_bin, *TINY_LEGACY, "--tokens-per-sample", "64", "--max-tokens", "256",
                    "--max-tokens-valid", "16", "--skip-invalid-size-inputs-valid-test",
                    "--save-dir", str(save)])
    assert (save / "checkpoint_last.pt").exists()


@pytest.mark.parametrize("command", ["eval_lm", "validate", "generate"])
def test_max_tokens_below_the_samples_in_evaluation(data_bin, tiny_checkpoint, capsys, caplog, command):
    """Without --skip-invalid-size-inputs-valid-test one line naming it too; with it, skipped."""
    import importlib

    module = importlib.import_module(f"fairseq_cli.{command}")
    argv = [data_bin, "--path", checkpoint(tiny_checkpoint), "--max-tokens", "16", "--num-workers", "0"]
    if command == "generate":
        argv += ["--task", "language_modeling", "--beam", "1", "--max-len-b", "2"]
    code, err = in_process(module.cli_main, argv, capsys)
    one_line(code, err, "has 32 tokens", "dataset.max_tokens=16", "--max-tokens 32", "--tokens-per-sample 16",
             "--skip-invalid-size-inputs-valid-test")
    if command != "generate":  # generate continues every block: each is too large, nothing is left
        caplog.clear()
        module.cli_main(argv + ["--skip-invalid-size-inputs-valid-test"])
        assert "longer than 16 tokens and were skipped" in caplog.text


def test_batch_by_size_names_the_largest_sample():
    import numpy as np

    from fairseq.data.data_utils import SampleTooLargeError, batch_by_size
    from fairseq.errors import ConfigError

    with pytest.raises(SampleTooLargeError) as exc:
        batch_by_size(np.arange(4), num_tokens_fn=lambda i: [3, 12, 20, 4][i], max_tokens=10)
    assert (exc.value.index, exc.value.size, exc.value.largest) == (2, 20, 20)
    assert isinstance(exc.value, ConfigError) and isinstance(exc.value, ValueError)


# -- 2. lengths no output can meet ----------------------------------------------------------------------
GENERATION_ROWS = [
    (["--max-len-b", "0"], ["generation.max_len_b=0", "generation.min_len=1", "--max-len-b 1"]),
    (["--min-len", "20", "--max-len-b", "10"], ["generation.min_len=20", "--max-len-b 20", "--min-len 10"]),
    (["--min-len", "100"], ["generation.min_len=100", "model.max_target_positions=32", "--min-len 31"]),
    (["--min-len", "40", "--max-len-a", "1", "--max-len-b", "1"], ["generation.min_len=40", "--max-len-a"]),
]


@pytest.mark.parametrize("flags, names", GENERATION_ROWS, ids=[" ".join(r[0]) for r in GENERATION_ROWS])
def test_generation_lengths_no_output_can_meet(data_bin, tiny_checkpoint, tmp_path, capsys, flags, names):
    from fairseq_cli import generate, interactive

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the function returns\n", encoding="utf-8")
    code, err = in_process(interactive.cli_main, [data_bin, "--task", "language_modeling", "--path",
                                                  checkpoint(tiny_checkpoint), "--input", str(prompts), *flags],
                           capsys)
    one_line(code, err, *names)
    code, err = in_process(generate.cli_main, [data_bin, "--task", "language_modeling", "--path",
                                               checkpoint(tiny_checkpoint), "--num-workers", "0", "--batch-size",
                                               "2", "--sample-break-mode", "eos", "--max-tokens", "4096",
                                               "--skip-invalid-size-inputs-valid-test", *flags], capsys)
    one_line(code, err, "generation.min_len")


# -- 3. beams that would only be allocated -----------------------------------------------------------
@pytest.fixture(scope="module")
def hub(data_bin, tiny_checkpoint):
    from fairseq import hub_utils

    loaded = hub_utils.from_pretrained(str(tiny_checkpoint), checkpoint_file="checkpoint_last.pt",
                                       data_name_or_path=data_bin)
    return hub_utils.GeneratorHubInterface(loaded["cfg"], loaded["task"], loaded["models"])


def test_hub_refuses_a_beam_wider_than_the_vocabulary(hub):
    vocab = len(hub.tgt_dict)
    with pytest.raises(ValueError, match=rf"beam=1000000000 .*{vocab} symbols.*--beam {vocab} or less"):
        hub.sample("the function", beam=10 ** 9)
    assert hub.sample("the function", beam=2)  # a usual beam still works


def test_hub_refuses_samples_beyond_the_memory(hub, monkeypatch):
    from fairseq import sequence_generator

    with pytest.raises(ValueError, match=r"beam=100000000 .*GiB.*smaller beam"):
        hub.sample("the function", beam=10 ** 8, sampling=True, seed=1)
    # the estimate is checked against the device's memory, before any tensor is allocated
    monkeypatch.setattr(sequence_generator, "device_memory_bytes", lambda device: 1024)
    with pytest.raises(ValueError, match="more than the 0.0 GiB of cpu"):
        hub.sample("the function", beam=2)


# -- 4. a damaged config in a checkpoint ---------------------------------------------------------------
def edited_checkpoint(tiny_checkpoint, tmp_path, name, **model_values):
    from fairseq.checkpoint_utils import torch_persistent_save

    state = torch.load(checkpoint(tiny_checkpoint), map_location="cpu", weights_only=False)
    state = copy.deepcopy(state)
    state.pop("integrity", None)  # as fairseq's own checkpoints: no record to contradict the edit
    state["cfg"]["model"].update(model_values)
    path = tmp_path / name
    torch_persistent_save(state, str(path))
    return path


DAMAGED_ROWS = [
    ({"max_target_positions": 2 ** 40}, "model.max_target_positions=1099511627776"),
    ({"decoder_layers": -2}, "model.decoder_layers=-2"),
    ({"decoder_embed_dim": 0}, "model.decoder_embed_dim=0"),
    ({"decoder_attention_heads": 0}, "model.decoder_attention_heads=0"),
    ({"decoder_ffn_embed_dim": 1 << 16}, "decoder.layers.0.fc1.weight"),
]


@pytest.mark.parametrize("values, named", DAMAGED_ROWS, ids=[r[1] for r in DAMAGED_ROWS])
def test_damaged_checkpoint_config_is_named_before_building(data_bin, tiny_checkpoint, tmp_path, capsys,
                                                           values, named):
    from fairseq import hub_utils
    from fairseq.checkpoint_utils import CheckpointError
    from fairseq_cli import eval_lm

    path = edited_checkpoint(tiny_checkpoint, tmp_path, "damaged.pt", **values)
    code, err = in_process(eval_lm.cli_main, [data_bin, "--path", str(path), "--num-workers", "0"], capsys)
    line = one_line(code, err, str(path), named, "damaged or was not written by fairseq")
    assert "does not fit the model built from its own config" not in line
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        hub_utils.from_pretrained(str(tmp_path), checkpoint_file=path.name, data_name_or_path=data_bin)


# -- 5. the dictionary of another model ---------------------------------------------------------------
def test_dictionary_of_another_size_is_named(data_bin, tiny_checkpoint, tmp_path, capsys):
    from fairseq_cli import eval_lm

    other = tmp_path / "other-data"
    shutil.copytree(data_bin, other)
    lines = (other / "dict.txt").read_text(encoding="utf-8").splitlines()
    (other / "dict.txt").write_text("\n".join(lines[:100]) + "\n", encoding="utf-8")
    code, err = in_process(eval_lm.cli_main, [str(other), "--path", checkpoint(tiny_checkpoint),
                                              "--num-workers", "0"], capsys)
    line = one_line(code, err, str(other / "dict.txt"), "104 symbols", "embed_tokens",
                    "not the one the model was trained with")
    assert "does not fit the model built from its own config" not in line


# -- 6. prompts that are not UTF-8 --------------------------------------------------------------------
def test_interactive_refuses_bytes_that_are_not_utf8(data_bin, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from fairseq_cli import interactive

    argv = [data_bin, "--task", "language_modeling", "--path", checkpoint(tiny_checkpoint), "--beam", "1"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the function\nabc \xff\xfe def\n")))
    code, err = in_process(interactive.cli_main, argv, capsys)
    one_line(code, err, "stdin", "line 2", "byte 13", "UTF-8")
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"\xe9t\xe9\n")
    code, err = in_process(interactive.cli_main, argv + ["--input", str(prompts)], capsys)
    one_line(code, err, str(prompts), "line 1", "byte 0")


def test_interactive_reads_lines_as_text_mode_does(data_bin, tiny_checkpoint, capsys, monkeypatch):
    from fairseq_cli import interactive

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("a\r\nb\rc é\n".encode("utf-8"))))
    interactive.cli_main([data_bin, "--task", "language_modeling", "--path", checkpoint(tiny_checkpoint),
                          "--beam", "1", "--max-len-b", "8"])
    sources = [line for line in capsys.readouterr().out.splitlines() if line.startswith("S-")]
    assert len(sources) == 3


# -- a checkpoint path that names no file: bad input, exit 2 in every evaluation command ---------------
@pytest.mark.parametrize("command", ["eval_lm", "generate", "validate"])
def test_a_missing_checkpoint_is_bad_input(command, data_bin, tmp_path, capsys):
    import importlib

    cli_main = importlib.import_module(f"fairseq_cli.{command}").cli_main
    missing = tmp_path / "nowhere" / "checkpoint_best.pt"
    code, err = in_process(cli_main, [data_bin, "--path", str(missing)], capsys)
    line = one_line(code, err, str(missing), "does not exist")
    assert "nowhere" in line
