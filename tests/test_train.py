"""End to end through the legacy door: resume, rerun, checkpoints, evaluation."""
import os
import warnings

import pytest
import torch

from conftest import train_losses


def tiny_args(data, save_dir, log_file, max_update, extra=()):
    return [
        data, "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "32",
        "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-attention-heads", "2", "--share-decoder-input-output-embed",
        "--optimizer", "adam", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "5", "--tokens-per-sample", "32", "--max-tokens", "128",
        "--max-update", str(max_update), "--log-format", "json", "--log-interval", "1",
        "--num-workers", "0", "--save-dir", save_dir, "--log-file", log_file,
        "--save-interval-updates", "3", "--seed", "7",
    ] + list(extra)


def train(argv):
    from fairseq_cli import train as train_cli

    train_cli.cli_main(argv)


def test_resume_continues_from_the_saved_update_with_equal_losses(data_bin, tmp_path):
    full_log, part_log = str(tmp_path / "full.log"), str(tmp_path / "part.log")
    train(tiny_args(data_bin, str(tmp_path / "full"), full_log, 8))
    train(tiny_args(data_bin, str(tmp_path / "part"), part_log, 5))
    state = torch.load(tmp_path / "part" / "checkpoint_last.pt", weights_only=True)
    assert state["num_updates"] == 5
    assert 0 < state["extra_state"]["train_iterator"]["iterations_in_epoch"]  # stopped mid-epoch
    train(tiny_args(data_bin, str(tmp_path / "part"), part_log, 8))
    full, part = train_losses(full_log), train_losses(part_log)
    assert len(full) == 8 and len(part) == 8
    assert part == full


def test_rerunning_a_finished_command_resumes_and_does_nothing(data_bin, tmp_path):
    log = str(tmp_path / "log")
    args = tiny_args(data_bin, str(tmp_path / "ck"), log, 3)
    train(args)
    before = os.path.getmtime(tmp_path / "ck" / "checkpoint_last.pt")
    train(args)
    assert len(train_losses(log)) == 3
    assert os.path.getmtime(tmp_path / "ck" / "checkpoint_last.pt") == before


def test_checkpoint_names_and_contents(data_bin, tmp_path):
    train(tiny_args(data_bin, str(tmp_path / "ck"), str(tmp_path / "log"), 6))
    names = sorted(os.listdir(tmp_path / "ck"))
    assert names == ["checkpoint_1_3.pt", "checkpoint_1_6.pt", "checkpoint_best.pt", "checkpoint_last.pt",
                     "config.json"]
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=True)
    cfg = state["cfg"]
    assert cfg["model"]["decoder_layers"] == 2 and cfg["optimizer"]["lr"] == [0.003]
    assert cfg["model"]["max_target_positions"] == 32  # resolved, not an interpolation
    assert cfg["task"]["data"] == os.path.abspath(data_bin)


@pytest.mark.slow
def test_eval_lm_trained_is_far_better_than_untrained(data_bin, tmp_path):
    from fairseq.checkpoint_utils import load_model_for_inference
    from fairseq_cli import eval_lm

    train(tiny_args(data_bin, str(tmp_path / "ck"), str(tmp_path / "log"), 40))
    path = str(tmp_path / "ck" / "checkpoint_last.pt")
    trained = eval_lm.main([data_bin, "--path", path, "--gen-subset", "valid"])
    model, task, cfg = load_model_for_inference(path, data=data_bin)
    torch.manual_seed(0)
    untrained_model = task.build_model(cfg.model).eval()
    task.load_dataset("valid")
    batches = task.eval_lm_dataloader(task.dataset("valid"), max_tokens=1024, num_workers=0)
    untrained = eval_lm.eval_lm([untrained_model], task.source_dictionary, batches)
    assert trained["ntokens"] == untrained["ntokens"] > 0
    assert trained["perplexity"] < 0.5 * untrained["perplexity"]
    assert untrained["perplexity"] > 0.5 * len(task.target_dictionary)  # roughly uniform


def test_fp16_on_cpu_warns_once_and_trains_in_float32(data_bin, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny_args(data_bin, str(tmp_path / "ck"), str(tmp_path / "log"), 2, ["--fp16"]))
    messages = [str(w.message) for w in caught if "fp16" in str(w.message)]
    assert len(messages) == 1 and "float32" in messages[0]
    assert len(train_losses(str(tmp_path / "log"))) == 2


def test_eval_time_flags_win_over_the_checkpoint_config(data_bin, tmp_path, monkeypatch):
    from fairseq import checkpoint_utils
    from fairseq_cli import eval_lm

    train(tiny_args(data_bin, str(tmp_path / "ck"), str(tmp_path / "log"), 2))
    seen = {}
    real = checkpoint_utils.load_model_ensemble_and_task

    def spy(filenames, *args, **kwargs):
        models, cfg, task = real(filenames, *args, **kwargs)
        seen["cfg"] = cfg
        return models, cfg, task

    monkeypatch.setattr(checkpoint_utils, "load_model_ensemble_and_task", spy)
    path = str(tmp_path / "ck" / "checkpoint_last.pt")
    eval_lm.main([data_bin, "--path", path, "--tokens-per-sample", "16", "--num-workers", "1",
                  "--gen-subset", "valid"])
    assert seen["cfg"].task.tokens_per_sample == 16
    # 1 is the dataclass default: given explicitly, it still wins over the checkpoint's 0
    assert seen["cfg"].dataset.num_workers == 1
    assert seen["cfg"].model.max_target_positions == 32  # the model is rebuilt as it was trained
    eval_lm.main([data_bin, "--path", path, "--gen-subset", "valid"])
    assert seen["cfg"].task.tokens_per_sample == 32
