"""The output projection and its cross entropy as one step: same loss and gradients as the
plain path, less memory, and the same training curve through the Trainer."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fairseq.modules.fused_cross_entropy import fused_linear_cross_entropy
from op_watch import LargestOutput, OpCalls

PAD = 1


def _inputs(N=37, C=8, V=50, bias=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, generator=g, dtype=torch.float64)
    w = torch.randn(V, C, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    t = torch.randint(0, V, (N,), generator=g)
    t[::5] = PAD  # some ignored positions
    return x, w, b, t


def _grads(fn, x, w, b, t, reduction, weights=None):
    leaves = [v.clone().requires_grad_() for v in (x, w) + ((b,) if b is not None else ())]
    loss = fn(leaves, t, reduction)
    (loss if weights is None else (loss * weights).sum()).backward()
    return loss.detach(), [v.grad for v in leaves]


def _plain(leaves, t, reduction):
    x, w, *b = leaves
    logits = F.linear(x, w, b[0] if b else None)
    return F.cross_entropy(logits.float(), t, ignore_index=PAD, reduction=reduction)


def _fused(block_elements):
    def fn(leaves, t, reduction):
        x, w, *b = leaves
        return fused_linear_cross_entropy(x, w, t, bias=b[0] if b else None, ignore_index=PAD,
                                          reduction=reduction, block_elements=block_elements)
    return fn


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("block_elements", [50 * 8, 10**6])  # 8 rows per block (last one 5), or one block
def test_loss_and_gradients_equal_the_plain_path(bias, reduction, block_elements):
    x, w, b, t = _inputs(bias=bias)
    weights = torch.rand(x.size(0), dtype=torch.float64) if reduction == "none" else None
    ref_loss, ref_grads = _grads(_plain, x, w, b, t, reduction, weights)
    loss, grads = _grads(_fused(block_elements), x, w, b, t, reduction, weights)
    torch.testing.assert_close(loss.double(), ref_loss.double(), rtol=1e-6, atol=1e-6)
    if reduction == "none":
        assert loss.shape == (x.size(0),) and bool((loss[t.eq(PAD)] == 0).all())
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert bool((grads[0][t.eq(PAD)] == 0).all())  # ignored rows get no gradient


def test_bf16_autocast_matches_the_plain_path_within_bf16_rounding():
    x, w, _, t = _inputs(N=64, C=16, V=40)
    x, w = x.float(), w.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_loss, ref_grads = _grads(_plain, x, w, None, t, "sum")
        loss, grads = _grads(_fused(40 * 16), x, w, None, t, "sum")
    assert loss.dtype == torch.float32 and grads[0].dtype == torch.float32 and grads[1].dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, rtol=1e-2, atol=1e-2)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_all_positions_ignored_give_zero_loss_and_zero_gradients():
    x, w, _, t = _inputs()
    t.fill_(PAD)
    loss, grads = _grads(_fused(100), x, w, None, t, "sum")
    assert float(loss) == 0.0 and all(bool((g == 0).all()) for g in grads)


def test_bad_arguments_name_the_problem():
    x, w, _, t = _inputs()
    with pytest.raises(ValueError, match="reduction='mean'"):
        fused_linear_cross_entropy(x, w, t, reduction="mean")
    with pytest.raises(ValueError, match="target"):
        fused_linear_cross_entropy(x, w, t[:-1])


# -- through the criterion and the trainer -------------------------------------------------------

def _build(data_bin, *overrides):
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config

    cfg = compose_config([
        f"task.data={data_bin}", "task.tokens_per_sample=16", "task.sample_break_mode=none",
        "model.decoder_layers=1", "model.decoder_embed_dim=16", "model.decoder_input_dim=16",
        "model.decoder_output_dim=16", "model.decoder_ffn_embed_dim=32", "model.decoder_attention_heads=2",
        "model.dropout=0.1", "dataset.max_tokens=128", "optimizer=adam", "optimization.lr=[0.003]",
        "optimization.clip_norm=0.5", "lr_scheduler=fixed", "common.seed=3", *overrides])
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(3)
    model = task.build_model(cfg.model)
    return cfg, task, model, task.build_criterion(cfg.criterion)


def _samples(cfg, task, n):
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=cfg.dataset.max_tokens,
                                  max_positions=16, seed=1).next_epoch_itr(shuffle=False)
    return [s for s, _ in zip(itr, range(n))]


@pytest.mark.parametrize("tied", [True, False])
def test_criterion_fused_equals_plain_per_token_and_summed(data_bin, tied):
    cfg, task, model, criterion = _build(data_bin, f"model.share_decoder_input_output_embed={str(tied).lower()}")
    from fairseq.criterions.cross_entropy import fusable_output_projection

    assert fusable_output_projection(model) is model.decoder.output_projection
    sample = _samples(cfg, task, 1)[0]
    # blocks of 16 rows: the default rule would take the plain computation at this small size
    criterion.block_elements = 16 * len(task.target_dictionary)
    model.eval()
    results = {}
    for fused in (True, False):
        criterion.fused_output_loss = fused
        with torch.no_grad():
            summed, size, log = criterion(model, sample)
            per_token, _, _ = criterion(model, sample, reduce=False)
        results[fused] = (summed, per_token, size, sorted(log))
    (s1, p1, n1, k1), (s0, p0, n0, k0) = results[True], results[False]
    torch.testing.assert_close(s1, s0, rtol=1e-5, atol=1e-4)
    assert p1.shape == p0.shape == (sample["target"].numel(),)
    torch.testing.assert_close(p1, p0, rtol=1e-5, atol=1e-5)
    assert (n1, k1) == (n0, k0)


def test_fused_path_never_builds_a_tokens_by_vocabulary_tensor(data_bin):
    cfg, task, model, criterion = _build(data_bin)
    sample = _samples(cfg, task, 1)[0]
    N, V = sample["target"].numel(), len(task.target_dictionary)
    criterion.block_elements = 16 * V  # 16 of the 128 rows per block (the default holds 2**21 logits)
    largest = {}
    for fused in (True, False):
        criterion.fused_output_loss = fused
        model.zero_grad(set_to_none=True)
        with LargestOutput() as watch:
            loss, _, _ = criterion(model, sample)
            loss.backward()
        largest[fused] = watch.largest
    assert largest[False] >= N * V  # the plain path holds (N, V) logits
    assert largest[True] < N * V  # the fused path never does, forward or backward


def test_models_the_fused_path_cannot_serve_take_the_plain_path(data_bin):
    from fairseq.criterions.cross_entropy import fusable_output_projection
    from fairseq.modules.transformer_decoder import TransformerDecoder

    _, _, adaptive, _ = _build(data_bin, "model.adaptive_softmax_cutoff=20")
    assert fusable_output_projection(adaptive) is None

    class Scaled(TransformerDecoder):
        def output_layer(self, features):
            return 2.0 * super().output_layer(features)

    cfg, task, model, criterion = _build(data_bin)
    model.decoder.__class__ = Scaled
    assert fusable_output_projection(model) is None
    sample = _samples(cfg, task, 1)[0]
    model.eval()
    with torch.no_grad():
        loss, _, _ = criterion(model, sample)
        logits = model(**sample["net_input"])[0]
    want = F.cross_entropy(logits.reshape(-1, logits.size(-1)), sample["target"].reshape(-1),
                           ignore_index=task.target_dictionary.pad(), reduction="sum")
    torch.testing.assert_close(loss, want)


def test_twenty_updates_follow_the_plain_loss_curve(data_bin):
    """The Trainer with the fused loss (default) and with criterion.fused_output_loss=false:
    same losses over 20 updates (dropout on, clipping on), within float tolerance."""
    from fairseq.trainer import Trainer

    curves = {}
    for fused in ("true", "false"):
        cfg, task, model, criterion = _build(data_bin, f"criterion.fused_output_loss={fused}")
        assert criterion.fused_output_loss is (fused == "true")
        criterion.block_elements = 32 * len(task.target_dictionary)  # the fused blocks, not the fallback
        trainer = Trainer(cfg, task, model, criterion)
        samples = _samples(cfg, task, 20)
        assert len(samples) == 20
        torch.manual_seed(7)  # the same dropout masks in both runs
        losses = []
        for sample in samples:
            out = trainer.train_step([sample])
            losses.append(float(out["logging_outputs"][0]["loss"]) / out["sample_size"])
        curves[fused] = losses
    assert curves["true"][-1] < curves["true"][0]  # it learns
    for a, b in zip(curves["true"], curves["false"]):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), (curves["true"], curves["false"])


class ScalarReads(TorchDispatchMode):
    """Counts the ops that copy a tensor's value to the host (``.item()``, ``float(t)``, ``bool(t)``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_an_update_reads_nothing_back_to_the_host(data_bin):
    """No host synchronisation per update (float32, one process): losses and the gradient norm
    stay tensors until the log interval; gradients are None after the update."""
    from fairseq.trainer import Trainer

    cfg, task, model, criterion = _build(data_bin)
    criterion.block_elements = 32 * len(task.target_dictionary)  # the fused blocks, not the fallback
    trainer = Trainer(cfg, task, model, criterion)
    samples = _samples(cfg, task, 2)
    trainer.train_step([samples[0]])  # builds the optimizer and its state
    with ScalarReads() as reads:
        out = trainer.train_step([samples[1]])
    assert reads.count == 0
    assert torch.is_tensor(out["gnorm"]) and torch.is_tensor(out["logging_outputs"][0]["loss"])
    assert all(p.grad is None for p in model.parameters())


# -- the block size ------------------------------------------------------------------------------

def test_block_rule_gives_large_vocabularies_wide_blocks_within_the_memory_cap():
    from fairseq.modules.fused_cross_entropy import MAX_BLOCK_ELEMENTS, MIN_BLOCK_ROWS, block_rows

    for C in (128, 512):
        for N in (2048, 4096):
            rows = block_rows(N, 42856, hidden_size=C)
            assert rows >= 256, (C, N, rows)  # the old 2**21-logit blocks had 48 rows
            assert rows * 42856 <= max(MAX_BLOCK_ELEMENTS, 42856 * C)
    # small vocabularies: every token in one block (the demo's), or >= MIN_BLOCK_ROWS rows
    assert block_rows(4096, 1400, hidden_size=128) == 4096
    assert block_rows(4096, 8192, hidden_size=512) >= MIN_BLOCK_ROWS
    # a huge vocabulary: fewer rows, but the memory stays bounded
    rows = block_rows(4096, 250_000, hidden_size=64)
    assert 1 <= rows and rows * 250_000 <= MAX_BLOCK_ELEMENTS


@pytest.mark.parametrize("V", [50, 1400, 8192, 42856, 250_000, 2**25])
@pytest.mark.parametrize("C", [8, 128, 512, 2048])
@pytest.mark.parametrize("N", [1, 37, 2048, 5000])
def test_block_rule_bounds_and_equal_blocks(V, C, N):
    from fairseq.modules.fused_cross_entropy import MAX_BLOCK_ELEMENTS, MIN_BLOCK_ROWS, TARGET_BLOCK_ELEMENTS, block_rows

    rows = block_rows(N, V, hidden_size=C)
    cap = max(MAX_BLOCK_ELEMENTS, V * C) // V
    assert 1 <= rows <= N
    assert rows <= max(cap, 1)  # memory: never more logits than the cap (one row at least)
    assert rows >= min(N, MIN_BLOCK_ROWS, cap) // 2  # matmuls: wide blocks (halved at most by balancing)
    if N * V <= min(TARGET_BLOCK_ELEMENTS, MAX_BLOCK_ELEMENTS) or N <= min(MIN_BLOCK_ROWS, cap):
        assert rows == N  # it all fits: one block
    blocks = -(-N // rows)
    assert N - (blocks - 1) * rows >= rows - blocks  # the last block is not a thin remainder


def test_explicit_block_elements_are_taken_as_given():
    from fairseq.modules.fused_cross_entropy import block_rows

    assert block_rows(37, 50, 50 * 8) == 8
    assert block_rows(37, 50, 10) == 1
    assert block_rows(37, 50, 10**6) == 37


def test_large_vocabulary_in_several_blocks_equals_the_plain_path():
    """V = 42,856 (tiny hidden size, so that it is fast): the default rule makes 2 blocks of 200
    rows of 400 tokens; loss and gradients as the plain path's."""
    from fairseq.modules.fused_cross_entropy import block_rows

    N, C, V = 400, 4, 42856
    assert block_rows(N, V, hidden_size=C) == 200
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, generator=g)
    w = torch.randn(V, C, generator=g)
    t = torch.randint(0, V, (N,), generator=g)
    t[::7] = PAD
    ref_loss, ref_grads = _grads(_plain, x, w, None, t, "sum")
    with LargestOutput() as watch:
        loss, grads = _grads(_fused(None), x, w, None, t, "sum")
    assert watch.largest < N * V  # blocks, not the (N, V) logits
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    per_token, _ = _grads(_fused(None), x, w, None, t, "none", torch.ones(N))
    torch.testing.assert_close(per_token, F.cross_entropy(x @ w.T, t, ignore_index=PAD, reduction="none"),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("needs", ["x", "weight"])
def test_gradient_of_only_one_input(needs):
    x, w, _, t = _inputs()
    xs, ws = x.clone().requires_grad_(needs == "x"), w.clone().requires_grad_(needs == "weight")
    fused_linear_cross_entropy(xs, ws, t, ignore_index=PAD, block_elements=50 * 8).backward()
    xr, wr = x.clone().requires_grad_(needs == "x"), w.clone().requires_grad_(needs == "weight")
    _plain([xr, wr], t, "sum").backward()
    got, want = (xs.grad, xr.grad) if needs == "x" else (ws.grad, wr.grad)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert (ws.grad if needs == "x" else xs.grad) is None


def test_a_second_backward_through_the_same_graph_is_a_clear_error():
    x, w, _, t = _inputs()
    x.requires_grad_()
    loss = fused_linear_cross_entropy(x, w, t, ignore_index=PAD, block_elements=50 * 8)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_where_the_fused_path_does_not_win_the_plain_computation_runs():
    """All logits within one target block and V < 4 C: the plain computation, the same values
    as F.cross_entropy of F.linear exactly; larger problems or vocabularies take the blocks."""
    from fairseq.modules.fused_cross_entropy import takes_plain_path

    assert takes_plain_path(2048, 1400, 512) and takes_plain_path(64, 50, 16)
    assert not takes_plain_path(2048, 1400, 128)  # the demo's vocabulary at its width: fused
    assert not takes_plain_path(8192, 1400, 512)  # over one block: fused (memory)
    assert not takes_plain_path(2048, 8192, 512) and not takes_plain_path(2048, 42856, 512)
    x, w, _, t = _inputs(N=64, C=16, V=50)
    ref_loss, ref_grads = _grads(_plain, x, w, None, t, "sum")
    with OpCalls() as ops:
        loss, grads = _grads(_fused(None), x, w, None, t, "sum")
    assert "nll_loss_forward" in ops.names  # F.cross_entropy's
    assert torch.equal(loss, ref_loss) and all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    x, w, _, t = _inputs(N=64, C=8, V=50)  # V >= 4 C: the fused blocks
    with OpCalls() as ops:
        _grads(_fused(None), x, w, None, t, "sum")
    assert "nll_loss_forward" not in ops.names and "log_softmax" in ops.names


def test_the_criterion_uses_the_rule_by_default(data_bin):
    from fairseq.criterions.cross_entropy import CrossEntropyCriterion

    assert CrossEntropyCriterion.block_elements is None
    cfg, task, model, criterion = _build(data_bin)
    assert criterion.block_elements is None


# -- scoring without gradients: slices of the vocabulary -------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("N,V", [(300, 15000), (40, 50)])  # sliced (4.5M logits), and at once
def test_target_log_probs_equal_the_log_softmax_of_the_logits(N, V, bias):
    from fairseq.modules.fused_cross_entropy import SCORE_PLAIN_ELEMENTS, linear_target_log_probs

    x, w, b, t = (v.float() if v is not None and v.is_floating_point() else v for v in _inputs(N=N, C=8, V=V, bias=bias))
    expected = F.log_softmax(F.linear(x, w, b), dim=-1).gather(1, t.unsqueeze(1)).squeeze(1)
    with LargestOutput() as watch:
        got = linear_target_log_probs(x, w, t, b)
    assert got.dtype == torch.float32 and got.shape == (N,)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
    if N * V > SCORE_PLAIN_ELEMENTS:  # never the whole (N, V) logits
        assert watch.largest <= N * V // 4


def test_validation_losses_take_the_slices_and_equal_the_training_losses():
    """Without gradients, fused_linear_cross_entropy scores by slices of the vocabulary; its
    losses equal the gradient path's (ignored positions 0)."""
    x, w, _, t = (v.float() if v is not None and v.is_floating_point() else v for v in _inputs(N=300, C=8, V=15000))
    with_grad = fused_linear_cross_entropy(x.requires_grad_(), w, t, ignore_index=PAD, reduction="none")
    with torch.no_grad():
        without = fused_linear_cross_entropy(x, w, t, ignore_index=PAD, reduction="none")
        total = fused_linear_cross_entropy(x, w, t, ignore_index=PAD, reduction="sum")
    torch.testing.assert_close(without, with_grad.detach(), atol=2e-5, rtol=1e-5)
    assert torch.all(without[t == PAD] == 0)
    torch.testing.assert_close(total, without.sum())


def _lm(vocab=40, seed=0):
    from fairseq.data import Dictionary
    from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig

    d = Dictionary()
    for i in range(vocab):
        d.add_symbol(f"w{i}")

    class Task:
        source_dictionary = target_dictionary = d

    torch.manual_seed(seed)
    cfg = TransformerLanguageModelConfig(decoder_layers=1, decoder_embed_dim=16, decoder_ffn_embed_dim=32,
                                         decoder_attention_heads=2, dropout=0.0, max_target_positions=32)
    return TransformerLanguageModel.build_model(cfg, Task()).eval(), d


def test_the_scorer_takes_the_models_own_scoring_and_gets_the_same_scores(monkeypatch):
    import fairseq.modules.fused_cross_entropy as fce
    from fairseq.models.transformer_lm import TransformerLanguageModel
    from fairseq.sequence_scorer import SequenceScorer

    monkeypatch.setattr(fce, "SCORE_PLAIN_ELEMENTS", 0)  # slices even at this size
    model, d = _lm()
    tokens = torch.randint(4, len(d), (3, 9))
    tokens[2, 6:] = d.pad()
    sample = {"net_input": {"src_tokens": tokens[:, :-1], "src_lengths": torch.tensor([8, 8, 5])},
              "target": tokens[:, 1:]}
    calls = []
    original = TransformerLanguageModel.score_targets
    monkeypatch.setattr(TransformerLanguageModel, "score_targets",
                        lambda self, *a: calls.append(1) or original(self, *a))
    fast = SequenceScorer(d).generate([model], sample)
    assert calls == [1]
    monkeypatch.setattr(TransformerLanguageModel, "score_targets", lambda self, *a: None)
    slow = SequenceScorer(d).generate([model], sample)
    for (a,), (b,) in zip(fast, slow):
        assert torch.equal(a["tokens"], b["tokens"])
        torch.testing.assert_close(a["positional_scores"], b["positional_scores"], atol=1e-5, rtol=1e-5)


def test_a_model_that_changes_its_normalisation_is_scored_through_it():
    from fairseq.models.transformer_lm import TransformerLanguageModel

    class Tempered(TransformerLanguageModel):
        def get_normalized_probs(self, net_output, log_probs, sample=None):
            return super().get_normalized_probs((net_output[0] / 2,) + tuple(net_output[1:]), log_probs, sample)

    model, d = _lm()
    model.__class__ = Tempered
    tokens = torch.randint(4, len(d), (2, 6))
    assert model.score_targets({"src_tokens": tokens}, tokens) is None
    model.__class__ = TransformerLanguageModel
    assert model.score_targets({"src_tokens": tokens}, tokens) is not None


def test_torch_log_softmax_may_write_over_its_input():
    """The fused forward relies on it: log_softmax(x, out=x) equals the out-of-place result
    (each row's max and sum are taken before the row is written)."""
    x = torch.randn(3, 40000) * 4
    expected = torch.log_softmax(x, dim=1)
    torch.log_softmax(x, dim=1, out=x)
    assert torch.equal(x, expected)


def test_an_adaptive_softmax_model_is_not_run_twice_to_find_it_cannot_score_itself():
    from fairseq.data import Dictionary
    from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig

    d = Dictionary()
    for i in range(40):
        d.add_symbol(f"w{i}")

    class Task:
        source_dictionary = target_dictionary = d

    cfg = TransformerLanguageModelConfig(decoder_layers=1, decoder_embed_dim=16, decoder_ffn_embed_dim=32,
                                         decoder_attention_heads=2, adaptive_softmax_cutoff="20")
    model = TransformerLanguageModel.build_model(cfg, Task()).eval()

    def no_forward(*args, **kwargs):
        raise AssertionError("score_targets ran the model")

    model.decoder.forward = no_forward
    tokens = torch.randint(4, len(d), (2, 6))
    assert model.score_targets({"src_tokens": tokens}, tokens) is None
