"""The contract between the loss (and the scorer) and the model: the model offers its output
projection (``plain_output_projection()``), the loss asks it through whatever wraps the model.

* the transformer LM offers it, and the fused loss runs, bare, behind a wrapper that answers the
  model's methods (no process group), behind DDP (one process, gloo) and compiled;
* a subclass that changes ``forward``/``output_layer``/``get_targets``/``get_normalized_probs``
  (its own, its decoder's, or through a mixin) gets the plain path and its own loss; one that
  declares ``plain_output = True`` again keeps the fused path;
* in every case the loss equals the plain computation of the model's own logits.
"""
import gc
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fairseq.criterions.cross_entropy import CrossEntropyCriterion, fusable_output_projection
from fairseq.data import Dictionary
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig
from fairseq.modules import fused_cross_entropy
from fairseq.modules.transformer_decoder import TransformerDecoder

VOCAB = 40


class Task:
    source_dictionary = target_dictionary = Dictionary()


for _i in range(VOCAB):
    Task.target_dictionary.add_symbol(f"w{_i}")


class Proxy(nn.Module):
    """A wrapper that is not DDP and answers the model's methods (as ModuleProxyDDP does)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def tiny_lm(cls=TransformerLanguageModel, seed=0):
    torch.manual_seed(seed)
    cfg = TransformerLanguageModelConfig(decoder_layers=1, decoder_embed_dim=16, decoder_ffn_embed_dim=32,
                                         decoder_attention_heads=2, dropout=0.0, max_target_positions=32)
    model = TransformerLanguageModel.build_model(cfg, Task())
    model.__class__ = cls
    return model


def sample(seed=1):
    d = Task.target_dictionary
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(d.nspecial, len(d), (3, 9), generator=g)
    tokens[2, 6:] = d.pad()
    target = tokens[:, 1:].clone()
    return {"net_input": {"src_tokens": tokens[:, :-1], "src_lengths": torch.tensor([8, 8, 5])},
            "target": target, "ntokens": int(target.ne(d.pad()).sum()), "nsentences": 3}


def criterion(fused=True):
    cfg = {"sentence_avg": False, "fused_output_loss": fused}
    crit = CrossEntropyCriterion(type("Cfg", (), cfg), Task())
    crit.block_elements = 4 * VOCAB  # several blocks even at this size
    return crit


@pytest.fixture
def fused_calls(monkeypatch):
    calls = []
    original = fused_cross_entropy.fused_linear_cross_entropy

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fused_cross_entropy, "fused_linear_cross_entropy", spy)
    return calls


def plain_loss(model, batch):
    """What the loss must be: cross entropy of the model's own logits, as the model gives them."""
    logits = model(**batch["net_input"])[0]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), batch["target"].reshape(-1),
                           ignore_index=Task.target_dictionary.pad(), reduction="sum")


def test_the_transformer_lm_offers_its_projection_and_the_fused_loss_equals_the_plain_one(fused_calls):
    model, batch = tiny_lm(), sample()
    assert model.plain_output_projection() is model.decoder.output_projection
    assert fusable_output_projection(model) is model.decoder.output_projection
    losses, grads = {}, {}
    for fused in (True, False):
        model.zero_grad(set_to_none=True)
        loss, _, _ = criterion(fused)(model, batch)
        loss.backward()
        losses[fused], grads[fused] = loss.detach(), model.decoder.output_projection.weight.grad.clone()
    assert len(fused_calls) == 1  # the fused run only
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses[True], plain_loss(model, batch).detach(), rtol=1e-5, atol=1e-5)


def test_an_adaptive_softmax_decoder_offers_nothing():
    torch.manual_seed(0)
    cfg = TransformerLanguageModelConfig(decoder_layers=1, decoder_embed_dim=16, decoder_ffn_embed_dim=32,
                                         decoder_attention_heads=2, adaptive_softmax_cutoff="20")
    model = TransformerLanguageModel.build_model(cfg, Task())
    assert model.decoder.plain_output_projection() is None and model.plain_output_projection() is None


class ScaledDecoder(TransformerDecoder):
    def output_layer(self, features):
        return 2.0 * super().output_layer(features)


class TemperedLM(TransformerLanguageModel):
    def forward(self, src_tokens, src_lengths=None, incremental_state=None, **kwargs):
        x, extra = super().forward(src_tokens, src_lengths, incremental_state, **kwargs)
        return x / 3.0, extra


class ShiftForward:
    """A mixin: the override reaches the class through its MRO, not its own body."""

    def forward(self, src_tokens, src_lengths=None, incremental_state=None, **kwargs):
        x, extra = super().forward(src_tokens, src_lengths, incremental_state, **kwargs)
        return x + torch.linspace(0, 1, x.size(-1)), extra


class MixedLM(ShiftForward, TransformerLanguageModel):
    pass


class OutputLayerLM(TransformerLanguageModel):
    def output_layer(self, features):
        return super().output_layer(features)


@pytest.mark.parametrize("case", ["decoder output_layer", "model forward", "mixin forward", "model output_layer"])
def test_a_subclass_that_changes_the_output_gets_the_plain_path_and_its_own_loss(case, fused_calls):
    model = tiny_lm(TemperedLM if case == "model forward" else MixedLM if case == "mixin forward"
                    else OutputLayerLM if case == "model output_layer" else TransformerLanguageModel)
    if case == "decoder output_layer":
        model.decoder.__class__ = ScaledDecoder
    batch = sample()
    assert type(model).plain_output is False or type(model.decoder).plain_output is False
    assert model.plain_output_projection() is None and fusable_output_projection(model) is None
    loss, _, _ = criterion(True)(model, batch)
    assert fused_calls == []
    want = plain_loss(model, batch)
    torch.testing.assert_close(loss, want)
    if case != "model output_layer":  # the change matters: the unchanged model's loss differs
        base = tiny_lm()
        assert not torch.allclose(want, plain_loss(base, batch), rtol=1e-3)


def test_a_subclass_may_declare_the_capability_again(fused_calls):
    class Vouched(TransformerLanguageModel):
        plain_output = True  # its forward only logs: the logits stay the decoder's

        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    class Child(Vouched):  # inherits the vouched methods unchanged
        pass

    for cls in (Vouched, Child):
        model, batch = tiny_lm(cls), sample()
        assert model.plain_output_projection() is model.decoder.output_projection
        loss, _, _ = criterion(True)(model, batch)
        torch.testing.assert_close(loss, plain_loss(model, batch), rtol=1e-5, atol=1e-5)
    assert len(fused_calls) == 2


def test_a_class_made_at_run_time_without_overrides_keeps_it():
    """FSDP2 swaps a model's class for ``type("FSDP<name>", (FSDPModule, cls), ...)``: a new
    subclass that changes none of the methods."""
    class Unrelated:
        def reshard(self):
            pass

    made = type("FSDPTransformerLanguageModel", (Unrelated, TransformerLanguageModel), {})
    assert made.plain_output is True and MixedLM.plain_output is False
    assert TransformerLanguageModel.plain_output is True  # a subclass never changes its base


def test_the_scorer_asks_the_same_question():
    from fairseq.sequence_scorer import SequenceScorer

    batch = sample()
    for cls, offered in ((TransformerLanguageModel, True), (TemperedLM, False)):
        model = tiny_lm(cls).eval()
        assert (model.score_targets(batch["net_input"], batch["target"]) is not None) == offered
        hypos = SequenceScorer(Task.target_dictionary).generate([model], batch)
        with torch.no_grad():
            logp = model.get_normalized_probs(model(**batch["net_input"]), log_probs=True)
        want = logp.gather(-1, batch["target"].unsqueeze(-1)).squeeze(-1)
        for i, (hypo,) in enumerate(hypos):
            keep = batch["target"][i].ne(Task.target_dictionary.pad())
            torch.testing.assert_close(hypo["positional_scores"], want[i][keep], rtol=1e-5, atol=1e-5)


def test_a_wrapper_that_answers_the_models_methods_gets_the_fused_path(fused_calls):
    model, batch = tiny_lm(), sample()
    wrapped = Proxy(model)
    assert fusable_output_projection(wrapped) is model.decoder.output_projection
    loss, _, _ = criterion(True)(wrapped, batch)
    assert len(fused_calls) == 1
    torch.testing.assert_close(loss, plain_loss(model, batch), rtol=1e-5, atol=1e-5)


def test_ddp_gets_the_fused_path_unless_it_searches_for_unused_parameters(tmp_path, fused_calls):
    import torch.distributed as dist

    from fairseq.distributed.utils import ModuleProxyDDP

    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    wrapped = []
    try:
        batch = sample()
        want = plain_loss(tiny_lm(), batch).detach()
        for find_unused, fused in ((False, True), (True, False)):
            model = tiny_lm()  # one DDP per model: its hooks stay on the parameters
            ddp = ModuleProxyDDP(model, find_unused_parameters=find_unused)
            wrapped.append(ddp)
            assert (fusable_output_projection(ddp) is not None) == fused
            loss, _, _ = criterion(True)(ddp, batch)
            loss.backward()
            torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-5)
            assert model.decoder.output_projection.weight.grad is not None
        assert len(fused_calls) == 1
    finally:
        # the DDP reducers go first, while their process group is alive: a Gloo group whose last
        # reference goes with a reducer after destroy_process_group can hang joining its threads
        # (seen once in CI: the worker waited in ~ProcessGroupGloo for minutes)
        del wrapped[:]
        ddp = model = loss = None
        gc.collect()
        dist.destroy_process_group()
    assert not any(os.environ.get(k) for k in ("RANK", "WORLD_SIZE"))


def test_a_compiled_model_gets_the_fused_path(fused_calls):
    model, batch = tiny_lm(), sample()
    compiled = torch.compile(model, backend="eager")
    assert fusable_output_projection(compiled) is model.decoder.output_projection
    loss, _, _ = criterion(True)(compiled, batch)
    assert len(fused_calls) == 1
    torch.testing.assert_close(loss, plain_loss(model, batch), rtol=1e-5, atol=1e-5)


def test_the_decoder_holds_no_cpu_tuning_of_the_product():
    """The few-rows product lives with the output projection (the decoder's output layer calls
    it); the decoder's module defines no tuning constant (it re-exports two for older imports)."""
    import ast
    import inspect

    from fairseq.modules import output_projection, transformer_decoder

    tree = ast.parse(inspect.getsource(transformer_decoder))
    assigned = {target.id for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)}
    assert not {"FEW_ROWS", "FEW_ROWS_MIN_VOCAB"} & assigned
    assert transformer_decoder.FEW_ROWS is output_projection.FEW_ROWS
    d = TransformerDecoder.__dict__["output_layer"]
    assert "vocabulary_logits" in inspect.getsource(d)
