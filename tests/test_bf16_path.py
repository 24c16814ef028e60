"""The bfloat16 path: training close to float32, the loss's log-sum-exp in float32, bf16 in
eval-lm and generation, and the one-line notice on a CPU without bfloat16 matmuls."""
import logging

import pytest
import torch

from conftest import TINY_MODEL, read_json_log
from fairseq import precision
from fairseq.modules import fused_cross_entropy as fce

TINY = [*TINY_MODEL, "--optimizer", "adam", "--lr", "0.003", "--warmup-updates", "3", "--tokens-per-sample", "32",
        "--max-tokens", "256", "--num-workers", "0", "--log-format", "json", "--log-interval", "1", "--seed", "3",
        "--no-save"]


@pytest.fixture
def fresh_notice(monkeypatch):
    """The notice's once-per-process memory and the cached detection, reset for this test."""
    monkeypatch.setattr(precision, "_noticed", False)
    precision.bf16_matmul_supported.cache_clear()
    yield
    precision.bf16_matmul_supported.cache_clear()


def _losses(data_bin, tmp_path, name, *extra):
    from fairseq_cli.train import cli_main

    log = tmp_path / f"{name}.log"
    cli_main([data_bin, *TINY, "--save-dir", str(tmp_path / name), "--log-file", str(log), *extra])
    return [r["loss"] for r in read_json_log(log) if "update" in r]


def test_bf16_training_stays_close_to_float32_and_says_once_when_slow(data_bin, tmp_path, monkeypatch,
                                                                     caplog, fresh_notice):
    """On a CPU the detection calls slow (here: flags without avx512_bf16), a bf16 run logs one
    line at its start, once per process; a float32 run logs none."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    with caplog.at_level(logging.WARNING, logger="fairseq.precision"):
        fp32 = _losses(data_bin, tmp_path, "fp32", "--max-update", "4")
        assert not [r for r in caplog.records if r.name == "fairseq.precision"]
        bf16 = _losses(data_bin, tmp_path, "bf16", "--max-update", "4", "--bf16")
        _losses(data_bin, tmp_path, "again", "--max-update", "1", "--amp")  # amp on a CPU: bf16 too
    assert len(fp32) == len(bf16) == 4
    assert bf16 != fp32  # bfloat16 matmuls really ran
    assert max(abs(a - b) for a, b in zip(fp32, bf16)) < 0.05
    lines = [r.getMessage() for r in caplog.records if r.name == "fairseq.precision"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "common.bf16=true" in lines[0] and "avx512_bf16" in lines[0] and "float32" in lines[0]


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_fused_loss_log_sum_exp_is_float32_under_bf16_autocast(monkeypatch, reduction):
    """The blocks' logits are bf16 products, but every log-softmax (max, sum of exp, log) runs on
    float32 logits; the loss equals float32 cross entropy of the bf16-rounded logits."""
    seen = []
    real = torch.log_softmax

    def spy(x, *args, **kwargs):
        seen.append(x.dtype)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(fce.torch, "log_softmax", spy)
    torch.manual_seed(0)
    x = torch.randn(64, 16, requires_grad=True)
    w = torch.randn(300, 16, requires_grad=True)
    target = torch.randint(0, 300, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fce.fused_linear_cross_entropy(x, w, target, reduction=reduction, block_elements=300 * 16)
    assert seen and set(seen) == {torch.float32}
    assert loss.dtype == torch.float32
    logits = (x.detach().bfloat16() @ w.detach().bfloat16().t()).float()
    expected = torch.nn.functional.cross_entropy(logits, target, reduction=reduction)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-4)
    loss.sum().backward()
    assert x.grad.dtype == w.grad.dtype == torch.float32


def test_detection_reads_the_cpu_flags(monkeypatch, fresh_notice):
    monkeypatch.setattr(precision, "_torch_cpu_check", lambda: True)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert precision.bf16_matmul_supported("cpu") is False
    precision.bf16_matmul_supported.cache_clear()
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.bf16_matmul_supported("cpu") is True
    precision.bf16_matmul_supported.cache_clear()
    monkeypatch.setattr(precision, "cpu_flags", lambda: None)  # no /proc/cpuinfo: torch decides
    monkeypatch.setattr(precision, "_torch_cpu_check", lambda: False)
    assert precision.bf16_matmul_supported("cpu") is False
    precision.bf16_matmul_supported.cache_clear()
    monkeypatch.setattr(precision, "_torch_cpu_check", lambda: None)  # unknown: no notice
    assert precision.bf16_matmul_supported("cpu") is True


def test_detection_is_cheap(fresh_notice):
    import time

    start = time.perf_counter()
    precision.bf16_matmul_supported("cpu")
    assert time.perf_counter() - start < 0.05


def test_no_notice_where_bf16_is_fast(monkeypatch, caplog, fresh_notice):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(precision, "_torch_cpu_check", lambda: True)
    with caplog.at_level(logging.WARNING, logger="fairseq.precision"):
        assert precision.notice_if_bf16_is_slow("cpu") is False
    assert not caplog.records


def test_eval_lm_bf16_holds_bf16_weights_and_scores_close_to_float32(tiny_checkpoint, data_bin, monkeypatch):
    from fairseq_cli import eval_lm

    held = []
    real = precision.cast_for_inference

    def spy(models, bf16, device):
        real(models, bf16, device)
        held.extend({p.dtype for p in m.parameters()} for m in models)

    monkeypatch.setattr(precision, "cast_for_inference", spy)
    argv = [data_bin, "--path", str(tiny_checkpoint / "checkpoint_last.pt"), "--num-workers", "0"]
    fp32 = eval_lm.main(argv)
    bf16 = eval_lm.main(argv + ["--bf16"])
    assert held == [{torch.float32}, {torch.bfloat16}]
    assert bf16["ntokens"] == fp32["ntokens"]
    assert bf16["loss"] != fp32["loss"] and bf16["loss"] == pytest.approx(fp32["loss"], abs=0.05)


def test_generate_bf16_runs_and_scores_in_float32(tiny_checkpoint, data_bin, capsys):
    from fairseq_cli import generate

    argv = [data_bin, "--task", "language_modeling", "--path", str(tiny_checkpoint / "checkpoint_last.pt"),
            "--gen-subset", "valid", "--sample-break-mode", "eos", "--tokens-per-sample", "128",
            "--beam", "2", "--max-len-b", "6", "--batch-size", "8",
            "--skip-invalid-size-inputs-valid-test", "--bf16"]
    generate.main(argv)
    out = capsys.readouterr().out
    hyps = [line for line in out.splitlines() if line.startswith("H-")]
    assert hyps
    for line in hyps:
        score = float(line.split("\t")[1])
        assert score == score and score <= 0.0  # a finite log-probability


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_reused_bf16_block_buffer_changes_no_bit(monkeypatch, reduction):
    """bf16 blocks write their product and their softmax - onehot into one reused buffer; the
    loss and gradients are bit for bit those of fresh tensors per block."""
    torch.manual_seed(1)
    x, w, b = torch.randn(50, 8), torch.randn(200, 8), torch.randn(200)
    target = torch.randint(0, 200, (50,))
    target[4] = 1

    def run():
        xx, ww, bb = (t.clone().requires_grad_() for t in (x, w, b))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fce.fused_linear_cross_entropy(xx, ww, target, bb, ignore_index=1, reduction=reduction,
                                                  block_elements=200 * 16)
        loss.sum().backward()
        return loss.detach(), xx.grad, ww.grad, bb.grad

    reused = run()
    monkeypatch.setattr(fce, "_narrow_block", lambda *args: None)
    fresh = run()
    assert all(torch.equal(a, c) for a, c in zip(reused, fresh))


def test_an_update_casts_each_weight_to_bf16_once_whatever_its_micro_batches(data_bin, tmp_path):
    """The micro-batches of one update (``--update-freq``) share one autocast region, their
    backward passes in a nested disabled one, so a layer's weight is cast to bf16 once per
    update; each further micro-batch adds only its gradient's cast back to float32. The fused
    loss's output weight is cast once per update as well (``weight_casts_per_update``)."""
    from torch.profiler import profile

    from fairseq_cli.train import cli_main

    from fairseq.data import Dictionary

    in_proj = [48, 16]  # the tiny model's fused q/k/v weight: no activation has this shape
    out_proj = [len(Dictionary.load(f"{data_bin}/dict.txt")), 16]  # the (untied) output weight's
    casts, out_casts = {}, {}
    for update_freq in (1, 3):
        with profile(record_shapes=True) as prof:
            cli_main([data_bin, *TINY, "--save-dir", str(tmp_path / f"uf{update_freq}"), "--max-update", "2",
                      "--bf16", "--update-freq", str(update_freq), "--disable-validation", "--log-format", "none"])
        copies = [list(e.input_shapes[0]) for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes]
        casts[update_freq], out_casts[update_freq] = copies.count(in_proj), copies.count(out_proj)
    updates, extra_batches = 2, 3 - 1
    assert casts[1] == 2 * updates  # per update: the weight to bf16, its gradient back
    assert casts[3] - casts[1] == updates * extra_batches  # (per-batch regions: twice that)
    # the fused loss casts the output weight itself, with autocast off: once per update too (its
    # gradient is accumulated in float32, so nothing is cast back)
    assert out_casts[1] == out_casts[3] == updates


def test_the_fused_loss_reuses_a_weight_cast_inside_an_update_until_the_weight_changes():
    from torch.profiler import profile

    torch.manual_seed(0)
    x = torch.randn(64, 16, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(200, 16))
    target = torch.randint(0, 200, (64,))

    def weight_casts(calls):
        with profile(record_shapes=True) as prof:
            calls()
        return sum(1 for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes
                   and list(e.input_shapes[0]) == [200, 16])

    def three_losses():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return [fce.fused_linear_cross_entropy(x, weight, target, block_elements=64 * 200) for _ in range(3)]

    def in_one_update():
        with fce.weight_casts_per_update():
            first = three_losses()
            with torch.no_grad():
                weight.mul_(0.5)  # an in-place change: the next call casts again
            return first + three_losses()

    assert weight_casts(three_losses) == 3
    assert weight_casts(in_one_update) == 2
    assert fce._update_casts is None  # nothing kept after the update
    # the reused cast gives the same losses as a fresh one
    with fce.weight_casts_per_update():
        reused = three_losses()
    assert all(torch.equal(a, b) for a, b in zip(reused, three_losses()))
