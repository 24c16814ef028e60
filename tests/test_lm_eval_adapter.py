"""The LM Evaluation Harness on this package's checkpoints (``fairseq/lm_eval_adapter.py``).

Offline: the tasks are YAML files over JSONL files written here (``dataset_path: json``), found
through ``--include_path`` / ``TaskManager(include_path=...)``.

* ``loglikelihood_rolling`` of a text is ``fairseq-eval-lm``'s total log-probability of a split
  holding that text, ``-(loss * ln 2 * ntokens)``, for its block settings (``tokens_per_sample``,
  ``sample_break_mode``, ``context_window``): so lm_eval's ``word_perplexity`` over documents is
  ``exp(sum of eval-lm's nats / sum of lm_eval's word counts)``;
* ``python -m fairseq.lm_eval_adapter --model fairseq ...`` runs lm_eval's command line with the
  model registered (perplexity, multiple choice and generation tasks; run as ``-m`` runs it,
  in the test's process, with lm_eval's index of its built-in tasks left out to save 13 s);
* ``loglikelihood`` equals the hub's reference scores of the same tokens, its ``is_greedy``
  agrees with the generator; ``generate_until`` honours ``until`` and ``max_gen_toks``;
* bad settings and a missing checkpoint are one line.
"""
import glob
import json
import math
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)


def texts(data_bin):
    base = Path(data_bin).parent / "text"
    return (base / "test.txt").read_text(encoding="utf-8"), (base / "valid.txt").read_text(encoding="utf-8")


def write_tasks(directory: Path, data_bin: str) -> Path:
    """Three local tasks: a perplexity task over two documents (the test and valid texts), a
    multiple-choice task and a generation task."""
    directory.mkdir(parents=True, exist_ok=True)
    test, valid = texts(data_bin)
    with open(directory / "docs.jsonl", "w", encoding="utf-8") as f:
        for text in (test, valid):
            f.write(json.dumps({"text": text}) + "\n")
    with open(directory / "qa.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps({"q": "The function returns", "choices": ["a value", "the"], "label": 0}) + "\n")
        f.write(json.dumps({"q": "The object", "choices": ["is", "in the"], "label": 1}) + "\n")

    def task(name, data_file, body):
        (directory / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {directory / data_file}\ntest_split: test\n" + body, encoding="utf-8")

    task("local_ppl", "docs.jsonl", 'output_type: loglikelihood_rolling\ndoc_to_text: ""\n'
         'doc_to_target: "{{text}}"\nmetric_list:\n  - metric: word_perplexity\n'
         '  - metric: byte_perplexity\n  - metric: bits_per_byte\n')
    task("local_mc", "qa.jsonl", 'output_type: multiple_choice\ndoc_to_text: "{{q}}"\n'
         'doc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n')
    task("local_gen", "qa.jsonl", 'output_type: generate_until\ndoc_to_text: "{{q}}"\n'
         'doc_to_target: "{{choices[0]}}"\ngeneration_kwargs:\n  until: ["."]\n  max_gen_toks: 6\n'
         'metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n')
    return directory


def eval_lm_nats(checkpoint, data_bin, *flags):
    """``fairseq-eval-lm``'s total log-probability (nats) of a split and its token count."""
    from fairseq_cli import eval_lm

    result = eval_lm.main([data_bin, "--path", str(checkpoint), "--log-format", "none", *flags])
    return -result["loss"] * math.log(2) * result["ntokens"], result["ntokens"]


def request(kind, *args):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=tuple(args), idx=0)


@pytest.fixture(scope="module")
def lm(tiny_checkpoint, data_bin):
    from fairseq.lm_eval_adapter import FairseqLM

    return FairseqLM(path=str(tiny_checkpoint / "checkpoint_last.pt"), data=data_bin, device="cpu", batch_size=8)


@pytest.mark.parametrize("break_mode, context_window", [("none", 0), ("none", 8), ("eos", 0)])
def test_rolling_loglikelihood_is_eval_lms_total_log_probability(lm, tiny_checkpoint, data_bin,
                                                                 break_mode, context_window):
    test, _ = texts(data_bin)
    nats, ntokens = eval_lm_nats(tiny_checkpoint / "checkpoint_last.pt", data_bin, "--sample-break-mode",
                                 break_mode, "--context-window", str(context_window))
    lm.sample_break_mode, lm.context_window = break_mode, context_window
    try:
        (total, count), = lm.rolling_scores([test])
        (rolling,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", test)])
    finally:
        lm.sample_break_mode, lm.context_window = "none", 0
    assert count == ntokens  # eos mode: the lines longer than the model's positions are left out by both
    assert total == pytest.approx(nats, rel=1e-6, abs=1e-3)
    assert rolling == total


def fast_task_index(monkeypatch):
    """lm_eval's command line indexes its thousands of built-in tasks (13 s here): only ours."""
    from lm_eval.tasks import TaskManager

    index = TaskManager.__init__
    monkeypatch.setattr(TaskManager, "__init__",
                        lambda self, *a, **k: index(self, *a, **dict(k, include_defaults=False)))


@pytest.mark.filterwarnings("ignore:'fairseq.lm_eval_adapter' found in sys.modules:RuntimeWarning")
def test_lm_eval_command_line_on_local_tasks_matches_eval_lm(tiny_checkpoint, data_bin, tmp_path, monkeypatch):
    """``python -m fairseq.lm_eval_adapter`` (run here as ``-m`` runs it, in this process)."""
    import runpy

    tasks = write_tasks(tmp_path / "tasks", data_bin)
    checkpoint = tiny_checkpoint / "checkpoint_last.pt"
    fast_task_index(monkeypatch)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        "fairseq.lm_eval_adapter", "--model", "fairseq", "--model_args", f"path={checkpoint},data={data_bin}",
        "--include_path", str(tasks), "--tasks", "local_ppl,local_mc,local_gen", "--batch_size", "8",
        "--device", "cpu", "--output_path", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as e:
        runpy.run_module("fairseq.lm_eval_adapter", run_name="__main__", alter_sys=True)
    assert e.value.code == 0
    [results_file] = glob.glob(str(tmp_path / "out" / "**" / "results_*.json"), recursive=True)
    results = json.loads(Path(results_file).read_text())["results"]

    test, valid = texts(data_bin)
    test_nats, _ = eval_lm_nats(checkpoint, data_bin, "--gen-subset", "test")
    valid_nats, _ = eval_lm_nats(checkpoint, data_bin, "--gen-subset", "valid")
    words = sum(len(re.split(r"\s+", t)) for t in (test, valid))  # lm_eval's word count
    expected = math.exp(-(test_nats + valid_nats) / words)
    assert results["local_ppl"]["word_perplexity,none"] == pytest.approx(expected, rel=1e-6)
    nbytes = sum(len(t.encode("utf-8")) for t in (test, valid))
    assert results["local_ppl"]["bits_per_byte,none"] == pytest.approx(
        -(test_nats + valid_nats) / nbytes / math.log(2), rel=1e-6)
    assert 0.0 <= results["local_mc"]["acc,none"] <= 1.0
    assert "exact_match,none" in results["local_gen"]


def test_simple_evaluate_in_python_with_a_task_manager(tiny_checkpoint, data_bin, tmp_path, lm):
    import lm_eval
    from lm_eval.tasks import TaskManager

    import fairseq.lm_eval_adapter as adapter

    adapter.register()  # importing registered it; again is a no-op
    tasks = write_tasks(tmp_path / "tasks", data_bin)
    out = lm_eval.simple_evaluate(model="fairseq", model_args={"path": str(tiny_checkpoint / "checkpoint_last.pt"),
                                                             "data": data_bin},
                                  tasks=["local_mc"],
                                  task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
                                  device="cpu", log_samples=True)
    samples = out["samples"]["local_mc"]
    # acc is 1 for a document where the label's continuation has the highest log-likelihood
    for sample in samples:
        scores = [lm.loglikelihood([request("loglikelihood", sample["doc"]["q"], " " + c)])[0][0]
                  for c in sample["doc"]["choices"]]
        best = max(range(len(scores)), key=scores.__getitem__)
        assert sample["acc"] == float(best == sample["doc"]["label"])
    assert out["results"]["local_mc"]["acc,none"] == sum(s["acc"] for s in samples) / len(samples)


def test_loglikelihood_is_the_hubs_reference_score_and_greedy_agrees_with_the_generator(lm):
    import torch

    scored = lm.hub.score("The function returns a value .")  # log p of each token after BOS
    expected = float(scored["positional_scores"][3:].double().sum())
    [(value, greedy)] = lm.loglikelihood([request("loglikelihood", "The function returns", " a value .")])
    assert value == pytest.approx(expected, abs=1e-4)
    [(empty_context, _)] = lm.loglikelihood([request("loglikelihood", "", "The function")])
    assert empty_context == pytest.approx(float(scored["positional_scores"][:2].double().sum()), abs=1e-4)

    [generated] = lm.generate_until([request("generate_until", "The function", {"until": [], "max_gen_toks": 3})])
    assert generated.startswith(" ") and len(generated.split()) == 3
    [(_, greedy)] = lm.loglikelihood([request("loglikelihood", "The function", generated)])
    assert greedy is True
    # a newline is EOS: the text after it is scored as a new line of the same document
    [(two_lines, _)] = lm.loglikelihood([request("loglikelihood", "The function\nreturns", " a")])
    eos = lm.src_dict.eos()
    ids = [eos] + lm.encode("The function") + [eos] + lm.encode("returns a")
    with torch.no_grad():
        lprobs = lm._log_probs(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))
    assert two_lines == pytest.approx(float(lprobs[0, -1, ids[-1]]), abs=1e-5)


def test_generate_until_honours_until_and_max_gen_toks(lm):
    [full] = lm.generate_until([request("generate_until", "The value of", {"until": [], "max_gen_toks": 6})])
    words = full.split()
    assert len(words) <= 6 and full.startswith(" ")
    [two] = lm.generate_until([request("generate_until", "The value of", {"until": [], "max_gen_toks": 2})])
    assert two.split() == words[:2]
    stop = words[1]
    [cut] = lm.generate_until([request("generate_until", "The value of", {"until": stop, "max_gen_toks": 6})])
    assert cut == full[:full.find(stop)]
    # batched: prompts of different lengths (and one with a newline) give what each gives alone
    prompts = ["The value of", "A\nThe value of", "The", "The type of"]
    batch = lm.generate_until([request("generate_until", p, {"until": ["\n\n"], "max_gen_toks": 4}) for p in prompts])
    alone = [lm.generate_until([request("generate_until", p, {"until": ["\n\n"], "max_gen_toks": 4})])[0]
             for p in prompts]
    assert batch == alone and batch[0] == " ".join([""] + words[:4])


def test_bad_settings_and_a_missing_checkpoint_are_one_line(tiny_checkpoint, data_bin, tmp_path, capsys,
                                                           monkeypatch):
    from fairseq.errors import ConfigError
    from fairseq.lm_eval_adapter import FairseqLM, main

    fast_task_index(monkeypatch)

    checkpoint = str(tiny_checkpoint / "checkpoint_last.pt")
    with pytest.raises(ConfigError, match="no such setting of the fairseq model; did you mean 'context_window'"):
        FairseqLM(path=checkpoint, data=data_bin, context_windw=4)
    with pytest.raises(ConfigError, match="context_window=32 leaves no new tokens"):
        FairseqLM(path=checkpoint, data=data_bin, context_window=32, device="cpu")
    with pytest.raises(ConfigError, match="path=CHECKPOINT is required"):
        FairseqLM(data=data_bin)
    tasks = write_tasks(tmp_path / "tasks", data_bin)
    rc = main(["--model", "fairseq", "--model_args", f"path={tmp_path / 'nope.pt'},data={data_bin}",
               "--include_path", str(tasks), "--tasks", "local_mc", "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "nope.pt does not exist" in errors[0], err
