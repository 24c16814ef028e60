"""Bad input stops with one clear line (no traceback) and loses nothing; user config trees work.
The commands run in-process: what is tested is the message and the exit status, not the process."""
import os

import pytest

from conftest import TINY_MODEL_HYDRA, copy_data, run_in

TINY_HYDRA = ["task.tokens_per_sample=32", *TINY_MODEL_HYDRA, "dataset.max_tokens=256", "dataset.num_workers=0"]

# fairseq-train has no default model or optimizer (as in fairseq 0.12)
ARCH = ["--arch", "transformer_lm", "--optimizer", "adam"]

pytestmark = pytest.mark.usefixtures("restore_root_log_handlers")


def train(argv, cwd, capsys):
    from fairseq_cli import train

    result = run_in(cwd, train.cli_main, argv, capsys)
    return result.returncode, result.stderr


def hydra_train(argv, cwd, capsys):
    from fairseq_cli import train_hydra

    result = run_in(cwd, train_hydra.cli_main, argv, capsys)
    return result.returncode, result.stderr


def test_corrupt_index_and_dictionary_are_named(data_bin, tmp_path, capsys):
    data = copy_data(data_bin, tmp_path / "data")
    (data / "train.idx").write_bytes((data / "train.idx").read_bytes()[:50])
    code, err = train([str(data), *ARCH, "--max-update", "1", "--num-workers", "0"], tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{data / 'train.idx'} is not a fairseq mmap index" in err
    assert "rerun fairseq-preprocess" in err
    with open(data / "dict.txt", "a") as f:
        f.write("a-line-without-count\n")
    code, err = train([str(data), *ARCH, "--max-update", "1"], tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    assert "dict.txt, line" in err


def test_missing_split_lists_what_exists(data_bin, tmp_path, capsys):
    data = copy_data(data_bin, tmp_path / "data")
    os.remove(data / "valid.bin")
    os.remove(data / "valid.idx")
    code, err = train([str(data), *ARCH, "--max-update", "1"], tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    assert "split 'valid' not found" in err and "test" in err


@pytest.mark.slow
def test_user_config_tree_extends_the_schema(data_bin, tmp_path, capsys):
    configs = tmp_path / "my_configs"
    (configs / "model").mkdir(parents=True)
    # an experiment config: the built-in config plus changed values, and a model of its own
    (configs / "experiment.yaml").write_text(
        "defaults:\n  - config\n  - override model: tiny_lm\n  - _self_\n"
        "optimization:\n  max_update: 3\n")
    (configs / "model" / "tiny_lm.yaml").write_text(
        "defaults:\n  - /schema/model/transformer_lm@_here_\n  - _self_\ndecoder_layers: 1\n")
    args = ["--config-dir", str(configs), "--config-name", "experiment", f"task.data={data_bin}",
            "checkpoint.save_dir=ck", "hydra.run.dir=out", *[a for a in TINY_HYDRA if "decoder_layers" not in a]]
    code, err = hydra_train(args, tmp_path, capsys)
    assert code == 0, err[-2000:]
    import torch

    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
    assert state["num_updates"] == 3 and state["cfg"]["model"]["decoder_layers"] == 1
    assert state["cfg"]["model"]["_name"] == "transformer_lm"
    # a typo in the user's tree is caught against the user's composed config
    code, err = hydra_train(args + ["model.decoder_layerz=2"], tmp_path, capsys)
    assert code == 2 and "did you mean 'model.decoder_layers'" in err
    # a wrong type in the user's YAML names the key
    (configs / "model" / "tiny_lm.yaml").write_text(
        "defaults:\n  - /schema/model/transformer_lm@_here_\n  - _self_\ndecoder_layers: one\n")
    code, err = hydra_train(args, tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    assert "decoder_layers" in err


def test_malformed_yaml_names_the_file_and_line(data_bin, tmp_path, capsys):
    configs = tmp_path / "my_configs"
    configs.mkdir()
    (configs / "broken.yaml").write_text("defaults:\n  - config\n  - _self_\noptimization:\n  lr: [0.1\n")
    code, err = hydra_train(["--config-dir", str(configs), "--config-name", "broken", f"task.data={data_bin}"],
                            tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    assert "malformed YAML" in err and "broken.yaml" in err and "line" in err
