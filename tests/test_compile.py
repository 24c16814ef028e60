"""``common.compile=true`` (``--compile``): the training forward through torch.compile, the same
losses as eager, plain checkpoints, eager evaluation, and an eager fallback with a warning.

The compiled tests use the ``aot_eager`` backend (dynamo's graph capture and AOTAutograd's
forward/backward graphs, run by eager kernels) through ``FAIRSEQ_COMPILE_BACKEND``: inductor's
C++ code generation costs ~20 s of CPU even for a tiny model, too much for the suite;
``benchmarks/bench_compile.py`` checks inductor's losses against eager.
"""
import math
import warnings
from typing import Callable, List

import pytest
import torch

from conftest import train_losses


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()  # other tests' compiled frames count towards the recompile limit
    yield
    torch._dynamo.reset()


_CURRENT_BACKEND: dict = {}


def register_backend(name: str, fn: Callable) -> str:
    """Make ``name`` a torch.compile backend that runs ``fn`` (registered once per session, the
    function swapped per test)."""
    import torch._dynamo
    from torch._dynamo.backends.registry import list_backends

    torch._dynamo.reset()
    _CURRENT_BACKEND[name] = fn
    if name not in list_backends(exclude_tags=()):
        torch._dynamo.register_backend(name=name)(
            lambda gm, example_inputs: _CURRENT_BACKEND[name](gm, example_inputs))
    return name


def counting_aot_eager(graphs: List[int]) -> str:
    """A backend that counts the graphs it compiles and hands them to ``aot_eager``."""
    from torch._dynamo.backends.registry import lookup_backend

    aot_eager = lookup_backend("aot_eager")

    def backend(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return aot_eager(gm, example_inputs)

    return register_backend("fairseq_test_counting_aot_eager", backend)


def broken_backend() -> str:
    """A backend that fails the way a missing compiler does, at the first compilation."""

    def backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler found (test backend)")

    return register_backend("fairseq_test_broken", backend)


def tiny_trainer(data_bin: str, extra: List[str]):
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config
    from fairseq.trainer import Trainer

    cfg = compose_config([
        f"task.data={data_bin}", "task.tokens_per_sample=32", "dataset.max_tokens=256",
        "model.decoder_layers=2", "model.decoder_embed_dim=32", "model.decoder_input_dim=32",
        "model.decoder_output_dim=32", "model.decoder_ffn_embed_dim=64", "model.decoder_attention_heads=2",
        "model.dropout=0.0", "optimizer=adam", "optimization.lr=[0.003]", "common.cpu=true",
    ] + extra)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(3)
    model = task.build_model(cfg.model)
    return Trainer(cfg, task, model, task.build_criterion(cfg.criterion))


def train_updates(trainer, n: int) -> List[float]:
    itr = trainer.task.get_batch_iterator(trainer.task.dataset("train"), max_tokens=256,
                                          max_positions=32, seed=1).next_epoch_itr(shuffle=False)
    losses = []
    for _ in range(n):
        out = trainer.train_step([next(itr)])
        losses.append(float(sum(log["loss"] for log in out["logging_outputs"])))
    return losses


@pytest.mark.slow
def test_compiled_training_equals_eager_and_leaves_evaluation_and_checkpoints_plain(data_bin, monkeypatch):
    from fairseq.compile_utils import TrainingForward

    graphs: List[int] = []
    monkeypatch.setenv("FAIRSEQ_COMPILE_BACKEND", counting_aot_eager(graphs))
    eager, compiled = tiny_trainer(data_bin, []), tiny_trainer(data_bin, ["common.compile=true"])
    eager_losses = train_updates(eager, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: it really ran compiled
        compiled_losses = train_updates(compiled, 3)
    assert graphs, "the compiled forward never reached the backend"
    assert isinstance(compiled.model.forward, TrainingForward) and compiled.model.forward.compiled is not None
    assert compiled.model is compiled.unwrapped_model  # compiled in place, not wrapped
    assert torch.allclose(torch.tensor(compiled_losses), torch.tensor(eager_losses), rtol=1e-5, atol=1e-5)
    # the checkpoint holds the plain parameter names and loads into an uncompiled model
    state = compiled.state_dict()["model"]
    assert list(state) == list(eager.state_dict()["model"])
    assert not any("_orig_mod" in key for key in state)
    for key, value in eager.state_dict()["model"].items():
        assert torch.allclose(state[key], value, rtol=1e-4, atol=1e-5), key
    fresh = compiled.task.build_model(compiled.cfg.model)
    fresh.load_state_dict(state, strict=True)
    # validation and cached decoding (eval, no gradients) run eagerly: nothing more is compiled
    compiled_graphs = len(graphs)
    batch = next(compiled.task.get_batch_iterator(compiled.task.dataset("train"), max_tokens=256,
                                                  max_positions=32, seed=1).next_epoch_itr(shuffle=False))
    assert compiled.valid_step(batch)["loss"] == pytest.approx(float(eager.valid_step(batch)["loss"]), rel=1e-5)
    model = compiled.model.eval()
    tokens = batch["net_input"]["src_tokens"][:2, :5]
    with torch.no_grad():
        state_dict: dict = {}
        steps = [model(tokens[:, i:i + 1], incremental_state=state_dict)[0] for i in range(tokens.size(1))]
        full = model(tokens)[0]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert len(graphs) == compiled_graphs


def test_compiler_failure_warns_once_and_trains_eagerly_with_the_same_losses(data_bin, monkeypatch):
    monkeypatch.setenv("FAIRSEQ_COMPILE_BACKEND", broken_backend())
    eager_losses = train_updates(tiny_trainer(data_bin, []), 2)
    trainer = tiny_trainer(data_bin, ["common.compile=true"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = train_updates(trainer, 2)
    messages = [str(w.message) for w in caught if "common.compile" in str(w.message)]
    assert len(messages) == 1, messages
    assert "no C++ compiler found" in messages[0] and "eager mode" in messages[0]
    assert trainer.model.forward.compiled is None  # later calls go straight to eager
    assert losses == eager_losses


def test_an_error_of_the_model_itself_is_raised_not_hidden_by_the_fallback(monkeypatch):
    from fairseq.compile_utils import compile_training_forward

    monkeypatch.setenv("FAIRSEQ_COMPILE_BACKEND", broken_backend())
    model = torch.nn.Linear(4, 3).train()
    assert compile_training_forward(model)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(torch.zeros(2, 5))  # wrong width: eager fails too, so its error is raised
    with pytest.raises(ValueError, match="already compiled"):
        compile_training_forward(model)


def test_unsupported_platform_warns_and_runs_eagerly(monkeypatch):
    import torch._dynamo

    from fairseq.compile_utils import compile_training_forward

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    model = torch.nn.Linear(4, 3).train()
    x = torch.randn(2, 4)
    expected = model(x)
    with pytest.warns(RuntimeWarning, match="does not support this platform.*eager mode"):
        assert not compile_training_forward(model)
    assert torch.equal(model(x), expected)


@pytest.mark.slow
def test_compile_flag_from_the_legacy_door_and_eval_lm_loads_the_checkpoint(data_bin, tmp_path, monkeypatch):
    from fairseq_cli import eval_lm
    from test_train import tiny_args, train

    graphs: List[int] = []
    monkeypatch.setenv("FAIRSEQ_COMPILE_BACKEND", counting_aot_eager(graphs))
    log = str(tmp_path / "log")
    train(tiny_args(data_bin, str(tmp_path / "ck"), log, 3, ["--compile", "--dropout", "0", "--cpu"]))
    assert graphs and len(train_losses(log)) == 3
    path = tmp_path / "ck" / "checkpoint_last.pt"
    saved = torch.load(path, weights_only=True)
    assert saved["cfg"]["common"]["compile"] is True
    assert not any("_orig_mod" in key for key in saved["model"])
    result = eval_lm.main([data_bin, "--path", str(path), "--gen-subset", "valid", "--cpu"])
    assert result["ntokens"] > 0 and math.isfinite(result["perplexity"])
