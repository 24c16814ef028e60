"""fairseq-validate: a checkpoint's loss on chosen subsets, equal to what training and eval-lm report."""
import json
import os
from pathlib import Path

import pytest

from conftest import ROOT, run_in, run_forked

FIXTURE = ROOT / "tests" / "fixtures" / "fairseq_0_12"

TINY = ["--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "32",
        "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-attention-heads", "2", "--share-decoder-input-output-embed", "--optimizer", "adam",
        "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5",
        "--tokens-per-sample", "32", "--max-tokens", "128", "--max-update", "10", "--num-workers", "0",
        "--seed", "5", "--log-format", "json", "--log-interval", "1"]


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    """(checkpoint, training log) of a tiny model trained by this package."""
    from fairseq_cli import train

    save_dir = tmp_path_factory.mktemp("validate_ck")
    log = str(save_dir / "train.log")
    train.cli_main([data_bin, *TINY, "--save-dir", str(save_dir), "--log-file", log])
    return str(save_dir / "checkpoint_last.pt"), log


def run_cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return run_forked("module", "fairseq_cli.validate", args, cwd, env=env, base_timeout=180)


def validate_in_process(args, cwd, capsys):
    """fairseq-validate run in-process from ``cwd``: its exit status, stdout and stderr (for the
    error tests; the summary test reads a real process's stdout)."""
    from fairseq_cli import validate

    return run_in(cwd, validate.cli_main, args, capsys)


def test_valid_loss_equals_the_one_training_logged_for_the_saved_model(trained, data_bin):
    from fairseq_cli import validate

    checkpoint, log = trained
    logged = [json.loads(line[line.index("{"):]) for line in Path(log).read_text().splitlines()
              if '"valid_loss"' in line][-1]
    results = validate.main(_namespace([data_bin, "--path", checkpoint, "--valid-subset", "valid,test",
                                        "--num-workers", "0"]))
    assert set(results) == {"valid", "test"}
    assert results["valid"]["loss"] == pytest.approx(float(logged["valid_loss"]), abs=1e-3)
    assert results["test"]["ntokens"] > 0


def test_validation_computes_in_the_runs_precision_as_training_does(trained, data_bin):
    """fairseq-validate runs the loop training validates with (Trainer.valid_step): --bf16
    computes in bfloat16 on the CPU too (it used to be ignored), close to float32."""
    from fairseq_cli import validate

    checkpoint, _ = trained
    argv = [data_bin, "--path", checkpoint, "--valid-subset", "valid", "--num-workers", "0"]
    fp32 = validate.main(_namespace(argv))["valid"]
    bf16 = validate.main(_namespace(argv + ["--bf16"]))["valid"]
    assert bf16["ntokens"] == fp32["ntokens"]
    assert bf16["loss"] != fp32["loss"] and bf16["loss"] == pytest.approx(fp32["loss"], abs=0.05)


def test_fairseq_checkpoint_validates_to_fairseqs_eval_lm_loss():
    """On fairseq's test split, validation and fairseq-eval-lm compute the same mean loss."""
    from fairseq_cli import validate

    results = validate.main(_namespace([str(FIXTURE / "data-bin"), "--path", str(FIXTURE / "checkpoint_last.pt"),
                                        "--valid-subset", "test", "--max-tokens", "1024", "--num-workers", "0"]))
    assert results["test"]["loss"] == pytest.approx(6.3361, abs=1e-3)  # README: fairseq-eval-lm
    assert results["test"]["ppl"] == pytest.approx(80.79, abs=0.01)


def test_override_args_win_over_the_checkpoint(trained, data_bin):
    from fairseq import options
    from fairseq_cli import validate

    checkpoint, _ = trained
    argv = [data_bin, "--path", checkpoint, "--valid-subset", "valid", "--num-workers", "0",
            "--tokens-per-sample", "16"]
    overrides = options.parse_args_and_arch(validate.get_validation_parser(input_args=argv), argv,
                                            suppress_defaults=True)
    short = validate.main(_namespace(argv), override_args=overrides)
    full = validate.main(_namespace(argv[:-2]), override_args=None)
    assert short["valid"]["nsentences"] > full["valid"]["nsentences"]  # blocks of 16, not 32
    assert short["valid"]["ntokens"] == full["valid"]["ntokens"]


def test_command_line_prints_one_summary_per_subset(trained, data_bin, tmp_path):
    checkpoint, _ = trained
    result = run_cli([data_bin, "--path", checkpoint, "--valid-subset", "valid,test", "--num-workers", "0"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    for subset in ("valid", "test"):
        lines = [line for line in result.stdout.splitlines() if f"valid on '{subset}' subset" in line]
        assert len(lines) == 1 and "loss" in lines[0] and "ppl" in lines[0]


@pytest.mark.parametrize("args, code, expected", [
    (["--valid-subset", "valid,tset"], 2, "split 'tset' not found"),
    (["--model-overrides", "{'dropout'"], 2, "is not a Python dict literal"),
    (["--valid-subset", ","], 2, "names no split"),
])
def test_bad_values_end_with_one_line(trained, data_bin, tmp_path, capsys, args, code, expected):
    checkpoint, _ = trained
    result = validate_in_process([data_bin, "--path", checkpoint, "--num-workers", "0", *args], tmp_path, capsys)
    assert result.returncode == code and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr


def test_missing_path_and_missing_checkpoint_are_named(data_bin, tmp_path, capsys):
    result = validate_in_process([data_bin], tmp_path, capsys)
    assert result.returncode == 2 and "--path CHECKPOINT" in result.stderr
    result = validate_in_process([data_bin, "--path", str(tmp_path / "nope.pt")], tmp_path, capsys)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "nope.pt" in result.stderr


def _namespace(argv):
    from fairseq import options
    from fairseq_cli import validate

    return options.parse_args_and_arch(validate.get_validation_parser(input_args=argv), argv)


def test_the_progress_total_is_the_steps_max_valid_steps_allows(trained, data_bin, tmp_path, capsys, monkeypatch):
    """``--max-valid-steps N``: the bar counts min(N, batches), not the whole split."""
    from fairseq.logging import progress_bar as pb

    totals = []
    real = pb.progress_bar

    def recording(iterable, *args, **kwargs):
        totals.append((kwargs.get("total"), len(iterable)))
        return real(iterable, *args, **kwargs)

    monkeypatch.setattr(pb, "progress_bar", recording)
    checkpoint, _ = trained
    base = [data_bin, "--path", checkpoint, "--num-workers", "0", "--max-tokens", "64", "--valid-subset", "valid"]
    assert validate_in_process([*base, "--max-valid-steps", "2"], tmp_path, capsys).returncode == 0
    assert validate_in_process(base, tmp_path, capsys).returncode == 0
    (capped, batches), (whole, batches_again) = totals
    assert batches > 2 and capped == 2 and whole == batches == batches_again
