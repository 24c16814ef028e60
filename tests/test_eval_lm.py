"""fairseq-eval-lm: fairseq's numbers on fairseq's checkpoint, context windows, the three ways in."""
import math
import os

import pytest
import torch

from conftest import ROOT, run_in

pytestmark = pytest.mark.usefixtures("restore_root_log_handlers")

FIXTURE = ROOT / "tests" / "fixtures" / "fairseq_0_12"

TINY = ["--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "32",
        "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-attention-heads", "2", "--share-decoder-input-output-embed", "--optimizer", "adam",
        "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5",
        "--tokens-per-sample", "32", "--max-tokens", "128", "--max-update", "12", "--num-workers", "0",
        "--seed", "7", "--log-format", "json"]


@pytest.fixture(scope="module")
def checkpoint(data_bin, tmp_path_factory) -> str:
    """A tiny transformer_lm trained for a few updates by this package."""
    from fairseq_cli import train

    save_dir = tmp_path_factory.mktemp("eval_lm_ck")
    train.cli_main([data_bin, *TINY, "--save-dir", str(save_dir)])
    return str(save_dir / "checkpoint_last.pt")


def run_cli(args, cwd, capsys):
    """fairseq-eval-lm run in-process from ``cwd``: its exit status, stdout and stderr."""
    from fairseq_cli import eval_lm

    return run_in(cwd, eval_lm.cli_main, args, capsys)


# -- fairseq's own numbers ---------------------------------------------------------------------
@pytest.mark.parametrize("context_window, loss, ppl", [(0, 6.3361, 80.79), (16, 6.3344, 80.70)])
def test_fairseq_checkpoint_gives_fairseqs_loss(context_window, loss, ppl):
    """The README's fairseq-eval-lm commands on the fairseq 0.12.2 checkpoint and data-bin."""
    from fairseq_cli import eval_lm

    results = eval_lm.main([str(FIXTURE / "data-bin"), "--path", str(FIXTURE / "checkpoint_last.pt"),
                            "--tokens-per-sample", "32", "--max-tokens", "1024", "--gen-subset", "test",
                            "--context-window", str(context_window), "--num-workers", "0"])
    assert abs(results["loss"] - loss) < 1e-3
    assert abs(results["perplexity"] - ppl) < 0.01
    assert results["ntokens"] == 3626  # every token of the test split, scored once


# -- what a context window computes --------------------------------------------------------------
def reference_loss(model, task, split: str, block: int, context: int) -> float:
    """Mean loss (base 2) of scoring the split's token stream in blocks of ``block`` tokens, each
    fed with up to ``context`` tokens of the stream before it, computed directly on the stream."""
    from fairseq.data import indexed_dataset

    sentences = indexed_dataset.make_dataset(os.path.join(task.cfg.data, split), impl="mmap")
    stream = torch.cat([sentences[i].long() for i in range(len(sentences))])
    inputs = torch.cat([stream.new_tensor([task.source_dictionary.eos()]), stream[:-1]])
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(stream), block):
            end = min(start + block, len(stream))
            first = max(0, start - context)
            logits, _ = model(inputs[first:end].unsqueeze(0))
            lprobs = torch.log_softmax(logits.float(), dim=-1)[0, start - first:]
            total += lprobs.gather(-1, stream[start:end].unsqueeze(-1)).sum().item()
            count += end - start
    return -total / count / math.log(2)


@pytest.mark.parametrize("context_window", [0, 8, 24])
def test_context_window_scores_each_block_after_its_preceding_tokens(checkpoint, data_bin, context_window):
    from fairseq.checkpoint_utils import load_model_for_inference
    from fairseq_cli import eval_lm

    results = eval_lm.main([data_bin, "--path", checkpoint, "--context-window", str(context_window),
                            "--max-tokens", "256", "--num-workers", "0"])
    model, task, _ = load_model_for_inference(checkpoint, data=data_bin)
    expected = reference_loss(model, task, "test", 32 - context_window, context_window)
    assert results["loss"] == pytest.approx(expected, abs=1e-4)


def test_softmax_batch_and_batch_size_do_not_change_the_loss(checkpoint, data_bin):
    from fairseq_cli import eval_lm

    base = eval_lm.main([data_bin, "--path", checkpoint, "--num-workers", "0"])
    chunked = eval_lm.main([data_bin, "--path", checkpoint, "--num-workers", "0", "--softmax-batch", "7",
                            "--batch-size", "3", "--context-window", "0"])
    assert chunked["ntokens"] == base["ntokens"]
    assert chunked["loss"] == pytest.approx(base["loss"], abs=1e-5)


def test_word_probs_and_word_stats_are_logged(checkpoint, data_bin, caplog):
    from fairseq_cli import eval_lm

    with caplog.at_level("INFO", logger="fairseq_cli.eval_lm"):
        results = eval_lm.main([data_bin, "--path", checkpoint, "--num-workers", "0",
                                "--output-word-probs", "--output-word-stats"])
    messages = [r.getMessage() for r in caplog.records if r.name == "fairseq_cli.eval_lm"]
    word_lines = [m for m in messages if m.split(" ", 1)[0].isdigit() and "[" in m]
    scored = sum(len(m.split(" ", 1)[1].split("\t")) for m in word_lines)
    assert scored == results["ntokens"]
    stats = [m.split("\t") for m in messages if m.count("\t") == 5]
    assert sum(int(s[1]) for s in stats) == results["ntokens"]  # counts add up to every word
    assert any(m.startswith("Evaluated ") and "tokens/s" in m for m in messages)
    assert any(m.startswith("Loss (base 2): ") and ", Perplexity: " in m for m in messages)


# -- the three ways in ---------------------------------------------------------------------------
def test_namespace_and_dictconfig_give_the_command_lines_result(checkpoint, data_bin):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import eval_lm

    argv = [data_bin, "--path", checkpoint, "--context-window", "8", "--num-workers", "0"]
    from_argv = eval_lm.main(argv)
    args = options.parse_args_and_arch(options.get_eval_lm_parser(input_args=argv), argv)
    from_namespace = eval_lm.main(args)
    from_dictconfig = eval_lm.main(convert_namespace_to_omegaconf(args))
    assert from_namespace["loss"] == pytest.approx(from_argv["loss"], abs=1e-6)
    assert from_dictconfig["loss"] == pytest.approx(from_argv["loss"], abs=1e-6)


# -- what a user can get wrong -------------------------------------------------------------------
@pytest.mark.parametrize("extra, expected", [
    (["--context-window", "-3"], "context_window=-3 is negative"),
    (["--context-window", "32"], "give a --context-window below 32"),
    (["--tokens-per-sample", "64"], "exceeds the 32 positions"),
    (["--gen-subset", "tset"], "split 'tset' not found"),
])
def test_bad_values_end_with_one_line(checkpoint, data_bin, tmp_path, capsys, extra, expected):
    result = run_cli([data_bin, "--path", checkpoint, "--num-workers", "0", *extra], tmp_path, capsys)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr


def test_missing_checkpoint_is_named(data_bin, tmp_path, capsys):
    result = run_cli([data_bin, "--path", str(tmp_path / "nope.pt")], tmp_path, capsys)
    assert result.returncode == 2 and "Traceback" not in result.stderr  # a wrong argument
    assert "nope.pt" in result.stderr and "does not exist" in result.stderr


def test_an_ensemble_averages_the_models_probabilities(checkpoint, tiny_checkpoint, data_bin):
    from fairseq.checkpoint_utils import load_model_for_inference
    from fairseq_cli import eval_lm

    other = str(tiny_checkpoint / "checkpoint_last.pt")
    results = eval_lm.main([data_bin, "--path", f"{checkpoint}{os.pathsep}{other}", "--num-workers", "0"])
    first, task, _ = load_model_for_inference(checkpoint, data=data_bin)
    second, _, _ = load_model_for_inference(other, data=data_bin)
    task.load_dataset("test")
    dataset = task.dataset("test")
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(dataset)):
            source, target = dataset[i]["source"].unsqueeze(0), dataset[i]["target"]
            probs = [m.get_normalized_probs(m(source), log_probs=False)[0].gather(1, target.unsqueeze(1))
                     for m in (first, second)]
            total += -torch.log2((probs[0] + probs[1]) / 2).sum().item()
            count += target.numel()
    assert results["ntokens"] == count
    assert results["loss"] == pytest.approx(total / count, abs=1e-4)
    single = eval_lm.main([data_bin, "--path", checkpoint, "--num-workers", "0"])
    assert results["loss"] != pytest.approx(single["loss"], abs=1e-4)


def test_results_path_receives_word_probabilities_and_the_summary(checkpoint, data_bin, tmp_path, capsys):
    from fairseq_cli import eval_lm

    out = tmp_path / "results"
    results = eval_lm.main([data_bin, "--path", checkpoint, "--num-workers", "0", "--output-word-probs",
                            "--results-path", str(out)])
    lines = (out / "eval_lm-test.txt").read_text(encoding="utf-8").splitlines()
    assert lines[-1] == f"Loss (base 2): {results['loss']:.4f}, Perplexity: {results['perplexity']:.2f}"
    assert any(line.startswith("Evaluated ") and "tokens/s" in line for line in lines)
    word_lines = [line for line in lines if line.split(" ", 1)[0].isdigit()]
    assert word_lines and "[" in word_lines[0]
    bad = run_cli([data_bin, "--path", checkpoint, "--results-path", "/proc/no/such/dir"], tmp_path, capsys)
    assert bad.returncode == 2 and "results_path" in bad.stderr and "Traceback" not in bad.stderr
