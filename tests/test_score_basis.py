"""What the hub's ``score`` scores: fairseq 0.12's positions (n for n words, no final ``</s>``),
and with ``include_eos=True`` eval-lm's basis: the same per-token log-probabilities and mean as
``fairseq-eval-lm --sample-break-mode eos`` on a data-bin made from the same lines."""
import math
import re
from pathlib import Path

import pytest
import torch

from fairseq.hub_utils import GeneratorHubInterface, HubError

LINES = ["the function returns a value",
         "a class may define a method with the same name",
         "if the value is zorblax , an exception is raised",  # zorblax: not in dict.txt, <unk>
         "return"]


@pytest.fixture(scope="module")
def lm(tiny_checkpoint, data_bin) -> GeneratorHubInterface:
    from fairseq.models.transformer_lm import TransformerLanguageModel

    return TransformerLanguageModel.from_pretrained(str(tiny_checkpoint), "checkpoint_last.pt",
                                                    data_name_or_path=data_bin)


@pytest.fixture(scope="module")
def eval_lm_run(tiny_checkpoint, data_bin, tmp_path_factory):
    """fairseq-eval-lm on a data-bin of ``LINES``: (its result, the log-probabilities of each line)."""
    from fairseq_cli import eval_lm, preprocess

    base = tmp_path_factory.mktemp("score_basis")
    text = base / "lines.txt"
    text.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    preprocess.cli_main(["--only-source", "--srcdict", str(Path(data_bin) / "dict.txt"), "--testpref", str(text),
                         "--destdir", str(base / "bin"), "--workers", "1"])
    result = eval_lm.main([str(base / "bin"), "--path", str(tiny_checkpoint / "checkpoint_last.pt"),
                           "--sample-break-mode", "eos", "--max-tokens", "512", "--num-workers", "0",
                           "--output-word-probs", "--results-path", str(base / "results")])
    per_line = {}
    for line in (base / "results" / "eval_lm-test.txt").read_text().splitlines():
        m = re.match(r"(?:.*\| )?(\d+) (\S+ \[.*)$", line)
        if m:
            per_line[int(m.group(1))] = [float(p) for p in re.findall(r" \[(-?[\d.]+|-?inf)\]", " " + m.group(2))]
    assert sorted(per_line) == list(range(len(LINES))), per_line
    return result, per_line


def test_score_has_fairseq_0_12_positions_one_per_word(lm):
    out = lm.score("the function returns a value of the type")
    assert len(out["positional_scores"]) == 8 and len(out["tokens"]) == 8  # 8 words, no </s>
    assert int(out["tokens"][-1]) != lm.src_dict.eos()
    assert out["score"].item() == pytest.approx(out["positional_scores"].mean().item(), abs=1e-6)


def test_include_eos_adds_the_final_eos_and_nothing_else(lm):
    plain = lm.score(LINES[:2])
    full = lm.score(LINES[:2], include_eos=True)
    for a, b in zip(plain, full):
        assert len(b["positional_scores"]) == len(a["positional_scores"]) + 1
        assert int(b["tokens"][-1]) == lm.src_dict.eos()
        assert torch.equal(b["tokens"][:-1], a["tokens"])
        assert torch.allclose(b["positional_scores"][:-1], a["positional_scores"], atol=1e-5)


def test_include_eos_is_eval_lms_basis(lm, eval_lm_run):
    result, per_line = eval_lm_run
    scored = lm.score(LINES, include_eos=True)
    total, count = 0.0, 0
    for i, out in enumerate(scored):
        ours = out["positional_scores"].tolist()
        # eval-lm prints 6 decimals
        assert ours == pytest.approx(per_line[i], abs=1e-5), i
        total += sum(ours)
        count += len(ours)
    assert result["ntokens"] == count
    assert result["loss"] == pytest.approx(-total / count / math.log(2), abs=1e-5)
    # one line: exp(-score) is eval-lm's perplexity of that line (natural log, eval-lm base 2)
    one = scored[0]
    assert math.exp(-one["score"].item()) == pytest.approx(
        2 ** (-sum(per_line[0]) / len(per_line[0]) / math.log(2)), rel=1e-4)


def test_include_eos_needs_scoring(lm):
    with pytest.raises(HubError, match="include_eos=True applies to scoring only"):
        lm.generate(lm.encode("the function"), include_eos=True)
