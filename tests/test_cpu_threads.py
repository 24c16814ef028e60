"""The CPU threads a run uses: the config's value, else OMP_NUM_THREADS, else the CPUs this
process may use divided among the processes of the machine; stated in the run header."""
import logging

import pytest
import torch

from fairseq.cpu_threads import available_cpus, choose_cpu_threads, set_cpu_threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_config_value_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_cpu_threads(2) == (2, "common.cpu_threads")


def test_omp_num_threads_is_respected(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_cpu_threads(0, local_processes=4) == (1, "OMP_NUM_THREADS")


@pytest.mark.parametrize("value", ["", "0", "many"])
def test_without_a_usable_variable_the_available_cpus_are_shared(value, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    cpus = available_cpus()
    threads, why = choose_cpu_threads(0)
    assert threads == cpus and f"{cpus} CPUs available" in why
    threads, why = choose_cpu_threads(0, local_processes=cpus * 2)
    assert threads == 1 and "processes on this machine" in why  # never 0


def test_set_cpu_threads_sets_torch_and_says_so(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    line = set_cpu_threads(1)
    assert torch.get_num_threads() == 1 and line == "1 CPU thread (common.cpu_threads)"


@pytest.mark.parametrize("door", ["legacy", "hydra"])
def test_the_flag_reaches_the_run_and_its_header(door, data_bin, tmp_path, caplog, monkeypatch):
    from fairseq_cli import train, train_hydra

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    tiny = {"legacy": [data_bin, "--arch", "transformer_lm", "--optimizer", "adam", "--decoder-layers", "1", "--decoder-embed-dim", "16",
                       "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample", "32",
                       "--max-tokens", "256", "--num-workers", "0", "--max-update", "1", "--no-save",
                       "--cpu-threads", "1", "--save-dir", str(tmp_path / "ck")],
            "hydra": [f"task.data={data_bin}", "model.decoder_layers=1", "model.decoder_embed_dim=16",
                      "model.decoder_ffn_embed_dim=32", "model.decoder_attention_heads=2", "task.tokens_per_sample=32",
                      "dataset.max_tokens=256", "dataset.num_workers=0", "optimization.max_update=1",
                      "checkpoint.no_save=true", "common.cpu_threads=1", f"checkpoint.save_dir={tmp_path / 'ck'}",
                      f"hydra.run.dir={tmp_path / 'run'}"]}[door]
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        (train.cli_main if door == "legacy" else train_hydra.cli_main)(tiny)
    assert torch.get_num_threads() == 1
    # Hydra sends the job's log to its own handlers (a file in the run directory), around caplog's
    logged = [r.getMessage() for r in caplog.records]
    logged += [line for log in (tmp_path / "run").glob("*.log") for line in log.read_text().splitlines()]
    assert any("1 CPU thread (common.cpu_threads)" in line for line in logged), logged
    logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers
                                       if not isinstance(h, logging.StreamHandler) or h.stream is not None]


def test_an_evaluation_command_never_takes_the_training_runs_value():
    from fairseq.cpu_threads import given_cpu_threads

    assert given_cpu_threads({}) == 0  # the checkpoint's common.cpu_threads is not looked at
    assert given_cpu_threads({"cpu_threads": 1}) == 1  # --cpu-threads 1
    assert given_cpu_threads({"common.cpu_threads": 3}) == 3  # common.cpu_threads=3


def test_torchrun_processes_share_the_cpus(monkeypatch):
    from fairseq.cpu_threads import local_processes

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert local_processes() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "")
    assert local_processes() == 1


@pytest.mark.parametrize("command", ["eval_lm", "validate", "generate", "interactive"])
def test_the_evaluation_commands_set_and_state_the_threads(command, tiny_checkpoint, data_bin, caplog,
                                                           monkeypatch, capsys):
    import io
    import sys

    from fairseq_cli import eval_lm, generate, interactive, validate

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    path = str(tiny_checkpoint / "checkpoint_last.pt")
    run = {
        "eval_lm": lambda: eval_lm.main([data_bin, "--path", path, "--cpu-threads", "1", "--num-workers", "0"]),
        "validate": lambda: validate.cli_main([data_bin, "--path", path, "--cpu-threads", "1", "--max-tokens", "512",
                                               "--num-workers", "0"]),
        "generate": lambda: generate.main([data_bin, "--path", path, "--cpu-threads", "1", "--gen-subset", "valid",
                                           "--beam", "1", "--max-len-b", "2", "--batch-size", "32",
                                           "--skip-invalid-size-inputs-valid-test"]),
        "interactive": lambda: interactive.main([data_bin, "--path", path, "--cpu-threads", "1", "--beam", "1",
                                                 "--max-len-b", "3"]),
    }[command]
    monkeypatch.setattr(sys, "stdin", io.StringIO("the function\n"))
    with caplog.at_level(logging.INFO):
        run()
    assert torch.get_num_threads() == 1
    assert "1 CPU thread (common.cpu_threads)" in [r.getMessage() for r in caplog.records]
