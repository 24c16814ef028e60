"""Bad input stops with one clear line (no traceback) and loses nothing; user config trees work."""
import os
import shutil
import subprocess
import sys

from conftest import ROOT

TINY_HYDRA = ["task.tokens_per_sample=32", "model.decoder_layers=1", "model.decoder_embed_dim=16",
              "model.decoder_input_dim=16", "model.decoder_output_dim=16", "model.decoder_ffn_embed_dim=32",
              "model.decoder_attention_heads=2", "dataset.max_tokens=256", "dataset.num_workers=0"]


# fairseq-train has no default model or optimizer (as in fairseq 0.12)
ARCH = ["--arch", "transformer_lm", "--optimizer", "adam"]


def cli(module, args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def copy_data(data_bin, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(data_bin, target)
    return target


def test_corrupt_index_and_dictionary_are_named(data_bin, tmp_path):
    data = copy_data(data_bin, tmp_path)
    (data / "train.idx").write_bytes((data / "train.idx").read_bytes()[:50])
    result = cli("fairseq_cli.train", [str(data), *ARCH, "--max-update", "1", "--num-workers", "0"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{data / 'train.idx'} is not a fairseq mmap index" in result.stderr
    assert "rerun fairseq-preprocess" in result.stderr
    with open(data / "dict.txt", "a") as f:
        f.write("a-line-without-count\n")
    result = cli("fairseq_cli.train", [str(data), *ARCH, "--max-update", "1"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "dict.txt, line" in result.stderr


def test_missing_split_lists_what_exists(data_bin, tmp_path):
    data = copy_data(data_bin, tmp_path)
    os.remove(data / "valid.bin")
    os.remove(data / "valid.idx")
    result = cli("fairseq_cli.train", [str(data), *ARCH, "--max-update", "1"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "split 'valid' not found" in result.stderr and "test" in result.stderr


def test_user_config_tree_extends_the_schema(data_bin, tmp_path):
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
    result = cli("fairseq_cli.train_hydra", args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    import torch

    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
    assert state["num_updates"] == 3 and state["cfg"]["model"]["decoder_layers"] == 1
    assert state["cfg"]["model"]["_name"] == "transformer_lm"
    # a typo in the user's tree is caught against the user's composed config
    result = cli("fairseq_cli.train_hydra", args + ["model.decoder_layerz=2"], tmp_path)
    assert result.returncode == 2 and "did you mean 'model.decoder_layers'" in result.stderr
    # a wrong type in the user's YAML names the key
    (configs / "model" / "tiny_lm.yaml").write_text(
        "defaults:\n  - /schema/model/transformer_lm@_here_\n  - _self_\ndecoder_layers: one\n")
    result = cli("fairseq_cli.train_hydra", args, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "decoder_layers" in result.stderr


def test_malformed_yaml_names_the_file_and_line(data_bin, tmp_path):
    configs = tmp_path / "my_configs"
    configs.mkdir()
    (configs / "broken.yaml").write_text("defaults:\n  - config\n  - _self_\noptimization:\n  lr: [0.1\n")
    result = cli("fairseq_cli.train_hydra", ["--config-dir", str(configs), "--config-name", "broken",
                                             f"task.data={data_bin}"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "malformed YAML" in result.stderr and "broken.yaml" in result.stderr and "line" in result.stderr
