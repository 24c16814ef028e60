"""A criterion written for fairseq 0.12 trains here unchanged: built from its ``__init__``
parameters (``task`` and its config's fields), reporting through ``metrics.log_scalar`` /
``log_derived`` in ``reduce_metrics`` (returning nothing), its own metrics in the logs."""
import pytest

from conftest import read_json_log, write_plugin
from test_faults import TINY, losses_by_update, run_script, train_code

PLUGIN = '''
import math
from dataclasses import dataclass, field

import torch.nn.functional as F
from omegaconf import II

from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass


@dataclass
class PlainNllConfig(FairseqDataclass):
    sentence_avg: bool = II("optimization.sentence_avg")
    report_scale: float = field(default=2.0, metadata={"help": "a field read by __init__"})


@register_criterion("plain_nll", dataclass=PlainNllConfig)
class PlainNll(FairseqCriterion):
    def __init__(self, task, sentence_avg, report_scale=1.0):
        super().__init__(task)
        self.sentence_avg = sentence_avg
        self.report_scale = report_scale

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        lprobs = lprobs.view(-1, lprobs.size(-1))
        target = model.get_targets(sample, net_output).view(-1)
        loss = F.nll_loss(lprobs, target, ignore_index=self.padding_idx, reduction="sum")
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {"loss": loss.data, "ntokens": sample["ntokens"],
                          "nsentences": sample["target"].size(0), "sample_size": sample_size,
                          "scaled_tokens": sample["ntokens"] * self.report_scale}
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss_sum = sum(log.get("loss", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        scaled = sum(log.get("scaled_tokens", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        metrics.log_scalar("loss", loss_sum / sample_size / math.log(2), sample_size, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["loss"].avg))
        metrics.log_scalar("token_ratio", scaled / ntokens, round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
'''


@pytest.fixture
def plugin_dir(tmp_path):
    return write_plugin(tmp_path, "fs_plugins", PLUGIN)


@pytest.mark.slow
def test_a_fairseq_style_criterion_trains_and_its_metrics_reach_the_logs(data_bin, tmp_path, plugin_dir):
    args = [data_bin] + TINY + ["--max-update", "4", "--validate-interval-updates", "4"]
    ref_log, log = str(tmp_path / "ref.log"), str(tmp_path / "plugin.log")
    ref = run_script(train_code(args + ["--no-fused-output-loss", "--save-dir", str(tmp_path / "ref"),
                                        "--log-file", ref_log]), tmp_path)
    assert ref.returncode == 0, ref.stderr
    result = run_script(train_code(args + ["--user-dir", plugin_dir, "--criterion", "plain_nll",
                                           "--save-dir", str(tmp_path / "ck"), "--log-file", log]), tmp_path)
    assert result.returncode == 0, result.stderr
    # the same loss as the built-in cross entropy, update by update
    expected, got = losses_by_update(ref_log), losses_by_update(log)
    assert sorted(got) == [1, 2, 3, 4]
    assert all(abs(got[n] - expected[n]) < 1e-3 for n in got), (got, expected)
    records = read_json_log(log)
    inner = [r for r in records if "update" in r and "loss" in r]
    assert inner and all(r["token_ratio"] == 2.0 for r in inner)  # report_scale=2.0 from its config
    assert all(r["ppl"] == pytest.approx(2 ** r["loss"], rel=2e-2) for r in inner)
    valid = [r for r in records if "valid_loss" in r]
    assert valid and valid[-1]["valid_token_ratio"] == 2.0
