"""fairseq-generate and fairseq-interactive for language models: fairseq's output lines."""
import io
import os
import re
import sys

import pytest

from conftest import run_forked
from fairseq_cli import generate, interactive

LINE = re.compile(r"^([SHDPTW])-(\d+)\t(.*)$")


def parse_output(text: str):
    """fairseq's output lines as {id: {"S": ..., "H": [(score, text)], "P": [[...]]}}."""
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        kind, sid, rest = m.group(1), int(m.group(2)), m.group(3)
        entry = out.setdefault(sid, {"H": [], "D": [], "P": []})
        if kind in "HD":
            score, hyp = rest.split("\t", 1)
            entry[kind].append((float(score), hyp))
        elif kind == "P":
            entry["P"].append([float(x) for x in rest.split()])
        else:
            entry[kind] = rest
    return out


def test_interactive_prints_fairseq_lines_for_each_prompt(tiny_checkpoint, data_bin, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("the function returns\na value of\n"))
    interactive.main([data_bin, "--task", "language_modeling", "--path",
                      str(tiny_checkpoint / "checkpoint_last.pt"), "--beam", "2", "--nbest", "2",
                      "--max-len-b", "10", "--buffer-size", "2", "--batch-size", "2"])
    out = parse_output(capsys.readouterr().out)
    assert sorted(out) == [0, 1]
    assert out[0]["S"] == "the function returns" and out[1]["S"] == "a value of"
    for sid, entry in out.items():
        assert len(entry["H"]) == 2 and len(entry["P"]) == 2
        best_score, best = entry["H"][0]
        assert best.startswith(entry["S"])
        assert entry["H"][0][0] >= entry["H"][1][0]
        # H's score is the mean of P's base-2 scores (normalized by length)
        assert best_score == pytest.approx(sum(entry["P"][0]) / len(entry["P"][0]), abs=1e-3)
        assert len(entry["P"][0]) == len(best.split()) + 1  # + EOS


def test_sampling_is_reproducible_with_a_seed(tiny_checkpoint, data_bin, capsys, monkeypatch):
    runs = []
    for _ in range(2):
        monkeypatch.setattr(sys, "stdin", io.StringIO("the function\n"))
        interactive.main([data_bin, "--path", str(tiny_checkpoint / "checkpoint_last.pt"), "--beam", "1",
                          "--sampling", "--sampling-topk", "20", "--temperature", "1.2", "--seed", "7",
                          "--max-len-b", "12"])
        runs.append(parse_output(capsys.readouterr().out)[0]["H"])
    assert runs[0] == runs[1]


def test_generate_continues_every_sentence_of_a_split(tiny_checkpoint, data_bin, capsys):
    generate.main([data_bin, "--task", "language_modeling", "--path", str(tiny_checkpoint / "checkpoint_last.pt"),
                   "--gen-subset", "valid", "--sample-break-mode", "eos", "--tokens-per-sample", "128",
                   "--beam", "3", "--max-len-b", "5", "--batch-size", "8",
                   "--skip-invalid-size-inputs-valid-test"])
    out = parse_output(capsys.readouterr().out)
    assert len(out) > 5
    for entry in out.values():
        prompt = entry["S"].split()
        hyp = entry["H"][0][1].split()
        # the sentence is the prompt; with max_len_b=5, at most 5 tokens are generated in all
        assert hyp == prompt[:5] or (hyp[:len(prompt)] == prompt and len(hyp) <= 5)
        assert entry["T"] is not None


def test_sentences_longer_than_the_model_are_named_not_a_traceback(tiny_checkpoint, data_bin):
    proc = run_forked("module", "fairseq_cli.generate",
                      [data_bin, "--path", str(tiny_checkpoint / "checkpoint_last.pt"), "--gen-subset", "valid",
                       "--sample-break-mode", "eos", "--tokens-per-sample", "128", "--max-len-b", "5",
                       "--batch-size", "4"], os.getcwd(), env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    assert "longer than the maximum size" in proc.stderr and "--skip-invalid-size-inputs-valid-test" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_generate_accepts_fairseqs_namespace(tiny_checkpoint, data_bin, capsys):
    from fairseq import options

    parser = options.get_generation_parser()
    args = options.parse_args_and_arch(parser, [
        data_bin, "--path", str(tiny_checkpoint / "checkpoint_last.pt"), "--beam", "3", "--batch-size", "64",
        "--max-len-b", "5", "--gen-subset", "valid", "--no-progress-bar", "--num-workers", "0",
        "--task", "language_modeling", "--sample-break-mode", "eos", "--tokens-per-sample", "128",
        "--skip-invalid-size-inputs-valid-test"])
    generate.main(args)
    assert len(parse_output(capsys.readouterr().out)) > 5
    args.buffer_size, args.input, args.batch_size = 0, "-", None
    sys_stdin = sys.stdin
    try:
        sys.stdin = io.StringIO("the value\n")
        interactive.main(args)
    finally:
        sys.stdin = sys_stdin
    assert parse_output(capsys.readouterr().out)[0]["S"] == "the value"


@pytest.mark.parametrize("flags, message", [
    (["--max-len-b", "100000"], "max_len_b=100000 is beyond"),
    (["--max-len-b", "32"], "give --max-len-b 31 or less"),
    (["--sampling-topk", "5"], "add --sampling"),
    (["--sampling", "--sampling-topp", "1.5"], "sampling_topp=1.5"),
    (["--temperature", "0"], "temperature=0"),
    (["--diverse-beam-groups", "2"], "not supported for language models"),
])
def test_bad_generation_flags_end_in_one_line(tiny_checkpoint, data_bin, flags, message):
    proc = run_forked("module", "fairseq_cli.interactive",
                      [data_bin, "--path", str(tiny_checkpoint / "checkpoint_last.pt"), *flags], os.getcwd(),
                      env=dict(os.environ), stdin="the function\n")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_generation_flag_is_read_refused_warned_or_applied(tiny_checkpoint, data_bin, capsys, caplog):
    """Declared once, really: each GenerationConfig field does something or says why not."""
    import dataclasses

    import torch

    from fairseq import checkpoint_utils
    from fairseq.dataclass.configs import GenerationConfig
    from fairseq.modules.multihead_attention import MultiheadAttention
    from fairseq.sequence_generator import GenerationSettingError, build_generator

    model, task, _ = checkpoint_utils.load_model_for_inference(str(tiny_checkpoint / "checkpoint_last.pt"))
    model.eval()
    tgt = task.target_dictionary
    refused = {"replace_unk": "x.txt", "sacrebleu": True, "eos_token": "</x>", "diverse_beam_groups": 2,
               "diverse_beam_strength": 0.7, "diversity_rate": 0.3, "lm_path": "lm.pt", "match_source_len": True}
    for key, value in refused.items():
        with pytest.raises(GenerationSettingError, match=f"generation.{key}=.* not supported for language models \\("):
            build_generator([model], {key: value}, tgt)
    caplog.clear()
    build_generator([model], {"no_early_stop": True, "no_beamable_mm": True}, tgt)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "generation.no_early_stop has no effect" in warned and "generation.no_beamable_mm has no effect" in warned
    # retain_dropout: dropout and attention back in training mode, the rest stays in eval mode
    build_generator([model], {"retain_dropout": True}, tgt)
    modes = {"Dropout" if isinstance(m, torch.nn.Dropout) else type(m).__name__: m.training for m in model.modules()
             if isinstance(m, (torch.nn.Dropout, MultiheadAttention, torch.nn.LayerNorm))}
    assert modes["Dropout"] and modes["MultiheadAttention"] and not modes["LayerNorm"] and not model.training
    # print_step: an I- line after each hypothesis
    generate.main([data_bin, "--task", "language_modeling", "--path", str(tiny_checkpoint / "checkpoint_last.pt"),
                   "--gen-subset", "valid", "--batch-size", "4", "--max-len-b", "4", "--beam", "2",
                   "--print-step", "--nbest", "2"])
    out = capsys.readouterr().out
    steps = re.findall(r"^I-(\d+)\t(\d+)$", out, re.M)
    hyps = re.findall(r"^H-(\d+)\t", out, re.M)
    assert steps and len(steps) == len(hyps)
    handled = set(refused) | {"no_early_stop", "no_beamable_mm", "retain_dropout", "print_step", "no_seed_provided"}
    unread = {f.name for f in dataclasses.fields(GenerationConfig)} & {
        "replace_unk", "sacrebleu", "eos_token", "diverse_beam_strength", "retain_dropout", "print_step",
        "no_early_stop", "no_beamable_mm", "no_seed_provided"}
    assert unread <= handled


def test_no_seed_provided_leaves_the_random_generator_unseeded(tiny_checkpoint, data_bin, capsys, monkeypatch):
    import torch

    seeded = []
    real = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda seed: seeded.append(seed) or real(seed))

    def run(*extra):
        seeded.clear()
        generate.main([data_bin, "--task", "language_modeling", "--path", str(tiny_checkpoint / "checkpoint_last.pt"),
                       "--gen-subset", "valid", "--batch-size", "4", "--max-len-b", "4", "--beam", "1",
                       "--sampling", "--seed", "7", *extra])
        capsys.readouterr()
        return list(seeded)

    assert 7 in run()  # common.seed seeds sampling
    assert 7 not in run("--no-seed-provided")  # the caller's random state is used as it is


def test_blocks_that_fill_the_model_get_one_warning_and_short_prompts_continue(tiny_checkpoint, data_bin,
                                                                            capsys, caplog):
    """On an LM data-bin the default blocks fill tokens_per_sample: nothing can be added, the
    H- lines repeat the S- lines, and one warning names the flags that leave room."""
    path = str(tiny_checkpoint / "checkpoint_last.pt")
    with caplog.at_level("WARNING"):
        generate.main([data_bin, "--path", path, "--gen-subset", "valid", "--batch-size", "4",
                       "--max-len-b", "5"])
    warnings = [r.getMessage() for r in caplog.records if "no token can be added" in r.getMessage()]
    assert len(warnings) == 1 and "--sample-break-mode eos" in warnings[0]
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level("WARNING"):
        generate.main([data_bin, "--path", path, "--gen-subset", "valid", "--batch-size", "4",
                       "--max-len-b", "5", "--prefix-size", "4"])
    assert not [r for r in caplog.records if "no token can be added" in r.getMessage()]
    out = parse_output(capsys.readouterr().out)
    assert out and any(len(e["H"][0][1].split()) > 4 for e in out.values()), out
