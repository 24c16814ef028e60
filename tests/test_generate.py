"""fairseq-generate and fairseq-interactive for language models: fairseq's output lines."""
import io
import re
import subprocess
import sys

import pytest

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
    proc = subprocess.run([sys.executable, "-m", "fairseq_cli.generate", data_bin, "--path",
                           str(tiny_checkpoint / "checkpoint_last.pt"), "--gen-subset", "valid",
                           "--sample-break-mode", "eos", "--tokens-per-sample", "128", "--max-len-b", "5",
                           "--batch-size", "4"],
                          capture_output=True, text=True)
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
    proc = subprocess.run([sys.executable, "-m", "fairseq_cli.interactive", data_bin, "--path",
                           str(tiny_checkpoint / "checkpoint_last.pt"), *flags],
                          input="the function\n", capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
