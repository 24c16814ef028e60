"""A table of user mistakes walked through the real commands, in both doors where they apply.

Each must end with exactly one line on stderr that names the key or file, no traceback, and
exit code 2 for bad input or 1 for a failed run. Most rows call the command's ``cli_main``
in-process; the few that need Hydra's app or a real process run a subprocess.
"""
import errno
import os

import pytest
import torch

from conftest import ROOT, TINY_HYDRA, TINY_LEGACY, copy_data, in_process, run_forked

FIXTURE = ROOT / "tests" / "fixtures" / "fairseq_0_12"

# (legacy flags, hydra override, the key the message must name); both doors, exit code 2
VALUE_ROWS = [
    (["--dropout", "1.5"], "model.dropout=1.5", "dropout"),
    (["--attention-dropout", "-0.1"], "model.attention_dropout=-0.1", "attention_dropout"),
    (["--activation-dropout", "2"], "model.activation_dropout=2", "activation_dropout"),
    (["--decoder-embed-dim", "30", "--decoder-attention-heads", "4", "--decoder-input-dim", "30",
      "--decoder-output-dim", "30"], "model.decoder_attention_heads=3", "decoder_attention_heads"),
    (["--max-tokens", "-5"], "dataset.max_tokens=-5", "max_tokens"),
    (["--batch-size", "-1"], "dataset.batch_size=-1", "batch_size"),
    (["--num-workers", "-1"], "dataset.num_workers=-1", "num_workers"),
    (["--update-freq", "2,0"], "optimization.update_freq=[2,0]", "update_freq"),
    (["--update-freq", "0"], "optimization.update_freq=[0]", "update_freq"),
    (["--decoder-layers", "-1"], "model.decoder_layers=-1", "decoder_layers"),
    (["--max-update", "-1"], "optimization.max_update=-1", "max_update"),
    (["--save-interval-updates", "-1"], "checkpoint.save_interval_updates=-1", "save_interval_updates"),
    (["--clip-norm", "-0.5"], "optimization.clip_norm=-0.5", "clip_norm"),
    (["--lr", ""], "optimization.lr=[]", "lr"),
    (["--adam-betas", "(0.9,)"], "optimizer.adam_betas=[0.9]", "adam_betas"),
    (["--adam-betas", "(0.9, 1.0)"], "optimizer.adam_betas=[0.9,1.0]", "adam_betas"),
    (["--save-dir", "${missing.key}"], "checkpoint.save_dir=${missing.key}", "save_dir"),
    (["--save-dir", "${oc.env:FAIRSEQ_TEST_UNSET_VARIABLE}"],
     "checkpoint.save_dir=${oc.env:FAIRSEQ_TEST_UNSET_VARIABLE}", "FAIRSEQ_TEST_UNSET_VARIABLE"),
    (None, "optimization.max_update=${missing.key}", "max_update"),
    (["--user-dir", "/nonexistent/plugin_dir"], "common.user_dir=/nonexistent/plugin_dir", "user_dir"),
]


def one_line(code, err, expected_code, key):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert key in lines[0], err


def cli(module, args, cwd, env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return run_forked("module", module, args, cwd, env=env, base_timeout=180)


@pytest.mark.parametrize("legacy, hydra, key", VALUE_ROWS, ids=[row[1] for row in VALUE_ROWS])
def test_bad_values_in_both_doors(data_bin, tmp_path, capsys, legacy, hydra, key):
    from fairseq_cli import train, train_hydra

    save = str(tmp_path / "ck")
    if legacy is not None:
        code, err = in_process(train.cli_main, [data_bin, *TINY_LEGACY, "--save-dir", save, *legacy], capsys)
        one_line(code, err, 2, key)
    code, err = in_process(train_hydra.cli_main,
                           [f"task.data={data_bin}", f"checkpoint.save_dir={save}", *TINY_HYDRA, hydra], capsys)
    one_line(code, err, 2, key)
    assert not os.path.exists(save)  # stopped before anything was written


def test_interpolations_in_a_user_yaml(data_bin, tmp_path, capsys):
    from fairseq_cli import train_hydra

    configs = tmp_path / "my_configs"
    configs.mkdir()
    for text, key in [("checkpoint:\n  save_interval_updates: ${missing.key}\n", "save_interval_updates"),
                      ("checkpoint:\n  save_dir: ${oc.env:FAIRSEQ_TEST_UNSET_VARIABLE}\n", "save_dir")]:
        (configs / "experiment.yaml").write_text("defaults:\n  - config\n  - _self_\n" + text)
        code, err = in_process(train_hydra.cli_main,
                               ["--config-dir", str(configs), "--config-name", "experiment",
                                f"task.data={data_bin}", *TINY_HYDRA], capsys)
        one_line(code, err, 2, key)


def test_preprocess_mistakes(data_bin, tmp_path, capsys):
    from fairseq_cli import preprocess

    text = tmp_path / "train.txt"
    text.write_text("a b c\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    rows = [
        (["--only-source", "--trainpref", str(text), "--destdir", str(tmp_path / "d1"), "--nwordssrc", "-2"],
         "nwordssrc"),
        (["--only-source", "--trainpref", str(text), "--destdir", str(a_file)], str(a_file)),
        (["--only-source", "--trainpref", str(tmp_path), "--destdir", str(tmp_path / "d2")], str(tmp_path)),
    ]
    for argv, key in rows:
        code, err = in_process(preprocess.cli_main, argv, capsys)
        one_line(code, err, 2, key)


def test_bad_data_files(data_bin, tmp_path, capsys):
    from fairseq.data.indexed_dataset import make_builder
    from fairseq_cli import train

    # an empty dict.txt
    empty_dict = copy_data(data_bin, tmp_path / "empty_dict")
    (empty_dict / "dict.txt").write_text("")
    # a dictionary shorter than the ids in the .bin
    short_dict = copy_data(data_bin, tmp_path / "short_dict")
    lines = (short_dict / "dict.txt").read_text().splitlines()
    (short_dict / "dict.txt").write_text("\n".join(lines[:5]) + "\n")
    # a training split with no tokens at all
    empty_train = copy_data(data_bin, tmp_path / "empty_train")
    # (written directly: fairseq-preprocess refuses an empty --trainpref)
    make_builder(str(empty_train / "train.bin"), "mmap", vocab_size=1000).finalize(str(empty_train / "train.idx"))
    for data, key in [(empty_dict, "dict.txt"), (short_dict, "holds token id"), (empty_train, "'train'")]:
        code, err = in_process(train.cli_main, [str(data), *TINY_LEGACY, "--save-dir", str(tmp_path / "ck")],
                               capsys)
        one_line(code, err, 2, key)
        assert str(data) in err


def test_bad_checkpoints(data_bin, tmp_path, capsys):
    from fairseq import hub_utils
    from fairseq.checkpoint_utils import CheckpointError
    from fairseq_cli import eval_lm, generate, train

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    no_cfg = tmp_path / "no_cfg.pt"
    torch.save({"model": {}, "extra_state": {}}, no_cfg)
    for path in (empty, no_cfg):
        commands = [
            (train.cli_main, [data_bin, *TINY_LEGACY, "--save-dir", str(tmp_path / "ck"), "--restore-file", str(path)]),
            (eval_lm.cli_main, [data_bin, "--path", str(path), "--num-workers", "0"]),
            (generate.cli_main, [data_bin, "--task", "language_modeling", "--path", str(path), "--num-workers", "0"]),
        ]
        for cli_main, argv in commands:
            code, err = in_process(cli_main, argv, capsys)
            one_line(code, err, 1, str(path))
        with pytest.raises(CheckpointError, match=path.name):
            hub_utils.from_pretrained(str(tmp_path), checkpoint_file=path.name, data_name_or_path=data_bin)
    # the positions the model was trained for bound --tokens-per-sample
    code, err = in_process(eval_lm.cli_main, [str(FIXTURE / "data-bin"), "--path", str(FIXTURE / "checkpoint_last.pt"),
                                              "--tokens-per-sample", "100000", "--num-workers", "0"], capsys)
    one_line(code, err, 2, "tokens_per_sample")


def test_unusable_save_dir_stops_before_training(data_bin, tmp_path, capsys):
    from fairseq_cli import train

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    rows = [(str(a_file / "ck"), "save_dir"), (str(tmp_path / ("x" * 300)), "save_dir"),
            (read_only_dir(tmp_path) + "/ck", "save_dir")]
    for save, key in rows:
        code, err = in_process(train.cli_main, [data_bin, *TINY_LEGACY, "--save-dir", save], capsys)
        one_line(code, err, 2, key)
        assert save in err
    # the Hydra door, through Hydra's app in a real process
    result = cli("fairseq_cli.train_hydra", [f"task.data={data_bin}", f"checkpoint.save_dir={a_file}/ck",
                                              "hydra.run.dir=out", *TINY_HYDRA], tmp_path)
    one_line(result.returncode, result.stderr, 2, "save_dir")


def read_only_dir(tmp_path):
    """A directory no file can be created in: chmod for a normal user; a file system that refuses new entries for root."""
    if os.geteuid() != 0:
        path = tmp_path / "read_only"
        path.mkdir()
        path.chmod(0o500)
        return str(path)
    return "/sys/fairseq_read_only"  # sysfs refuses new entries, even to root


def test_full_disk_while_saving_is_named(data_bin, tmp_path, capsys, monkeypatch):
    """ENOSPC from the atomic write: one line naming the file and 'no space left on device'."""
    from fairseq import checkpoint_utils
    from fairseq_cli import train

    def full_disk(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_utils.torch, "save", full_disk)
    save = tmp_path / "ck"
    code, err = in_process(train.cli_main, [data_bin, *TINY_LEGACY, "--save-dir", str(save)], capsys)
    one_line(code, err, 1, "no space left on device")
    assert str(save) in err and "checkpoint" in err
    assert not [f for f in os.listdir(save) if f.startswith(".tmp")]  # the partial write is gone
