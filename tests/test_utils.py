"""fairseq.utils: the tensor, sample and config helpers fairseq users import."""
import argparse
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from fairseq import utils


def test_make_positions_counts_from_padding_idx_plus_one_on_either_side():
    pad = 1
    left = torch.tensor([[5, 5, 5], [1, 5, 5], [1, 1, 5]])
    right = torch.tensor([[5, 5, 5], [5, 5, 1], [5, 1, 1]])
    assert utils.make_positions(left, pad).tolist() == [[2, 3, 4], [1, 2, 3], [1, 1, 2]]
    assert utils.make_positions(right, pad).tolist() == [[2, 3, 4], [2, 3, 1], [2, 1, 1]]


def test_convert_padding_direction_round_trip():
    pad = 0
    left = torch.tensor([[3, 4, 5], [0, 6, 7], [0, 0, 8]])
    right = torch.tensor([[3, 4, 5], [6, 7, 0], [8, 0, 0]])
    assert torch.equal(utils.convert_padding_direction(left, pad, left_to_right=True), right)
    assert torch.equal(utils.convert_padding_direction(right, pad, right_to_left=True), left)
    # already in the asked direction: unchanged
    assert torch.equal(utils.convert_padding_direction(right, pad, left_to_right=True), right)
    with pytest.raises(ValueError):
        utils.convert_padding_direction(left, pad)


def test_clip_grad_norm_returns_the_norm_before_clipping_and_clips():
    frozen = torch.nn.Parameter(torch.zeros(4)).requires_grad_(False)
    norm = utils.clip_grad_norm_(frozen, 1.0)
    assert torch.is_tensor(norm) and norm.item() == 0.0

    params = [torch.nn.Parameter(torch.zeros(4)) for _ in range(2)]
    for p in params:
        p.grad = torch.full((4,), 3.0)
    norm = utils.clip_grad_norm_(params, 1.0)
    assert norm.item() == pytest.approx(torch.full((8,), 3.0).norm().item())
    after = torch.cat([p.grad for p in params]).norm().item()
    assert after == pytest.approx(1.0, rel=1e-5)
    # max_norm=0 only measures; aggregate_norm_fn sees the local norm
    seen = []
    norm = utils.clip_grad_norm_(params, 0, aggregate_norm_fn=lambda n: seen.append(n) or n * 2)
    assert seen[0].item() == pytest.approx(1.0, rel=1e-5) and norm.item() == pytest.approx(2.0, rel=1e-5)


def test_resolve_max_positions_keeps_the_strictest_limit():
    assert utils.resolve_max_positions(None, (2000, 100, 2000), 12000) == (2000, 100, 2000)
    assert utils.resolve_max_positions(512, None, 1024) == 512
    assert utils.resolve_max_positions((10, None), (5, 7)) == (5, 7)
    assert utils.resolve_max_positions({"a": 3, "b": 9}, 5) == {"a": 3, "b": 5}
    assert utils.resolve_max_positions(None, None) is None


def test_apply_to_sample_and_move_to_cpu_keep_structure():
    sample = {"net_input": {"src_tokens": torch.ones(2, 3, dtype=torch.half)}, "ids": [torch.arange(2)],
              "n": 5, "pair": (torch.zeros(1), "x")}
    moved = utils.move_to_cpu(sample)
    assert moved["net_input"]["src_tokens"].dtype == torch.float32
    assert torch.equal(moved["ids"][0], torch.arange(2)) and moved["n"] == 5 and moved["pair"][1] == "x"
    doubled = utils.apply_to_sample(lambda t: t * 2, {"a": [torch.ones(1)]})
    assert doubled["a"][0].item() == 2.0
    assert utils.apply_to_sample(lambda t: t, []) == {}


def test_small_helpers():
    assert utils.item(torch.tensor(3.5)) == 3.5 and utils.item([7]) == 7
    assert utils.strip_pad(torch.tensor([4, 1, 5, 1]), 1).tolist() == [4, 5]
    assert utils.buffered_arange(4).tolist() == [0, 1, 2, 3]
    assert utils.buffered_arange(2).tolist() == [0, 1]
    half = torch.zeros(2, dtype=torch.half)
    assert torch.isinf(utils.fill_with_neg_inf(half)).all() and half.dtype == torch.half
    assert utils.get_perplexity(3.0) == 8.0 and utils.get_perplexity(None) == 0.0
    assert utils.get_perplexity(1e6) == float("inf")
    x = torch.randn(2, 5, dtype=torch.bfloat16)
    assert utils.log_softmax(x, dim=-1).dtype == torch.float32
    assert utils.softmax(x, dim=-1).sum(-1).allclose(torch.ones(2))
    assert utils.has_parameters(torch.nn.Linear(2, 2)) and not utils.has_parameters(torch.nn.ReLU())
    assert utils.eval_str_list("[1, 2]", int) == [1, 2] and utils.eval_str_list("3", int) == [3]
    assert utils.eval_bool("True") is True and utils.eval_bool(None, default=True) is True


def test_get_activation_fn_by_name():
    x = torch.tensor([-1.0, 2.0])
    assert utils.get_activation_fn("relu")(x).tolist() == [0.0, 2.0]
    assert utils.get_activation_fn("relu_squared")(x).tolist() == [0.0, 4.0]
    assert torch.allclose(utils.get_activation_fn("swish")(x), x * torch.sigmoid(x))
    assert utils.get_activation_fn("linear")(x) is x
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        utils.get_activation_fn("gelu_fast")
    assert any("gelu_accurate" in str(w.message) for w in caught)
    with pytest.raises(RuntimeError, match="not supported"):
        utils.get_activation_fn("nope")


def test_set_torch_seed_is_repeatable_and_restores_the_outer_stream():
    torch.manual_seed(0)
    with utils.set_torch_seed(7):
        a = torch.rand(3)
    outer = torch.rand(3)
    torch.manual_seed(0)
    with utils.set_torch_seed(7):
        b = torch.rand(3)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), outer)


def test_safe_getattr_on_namespaces_and_configs():
    ns = argparse.Namespace(a=1, b=None)
    cfg = OmegaConf.create({"a": 1, "b": None})
    assert utils.safe_getattr(ns, "a") == 1 and utils.safe_getattr(ns, "c", 5) == 5
    assert utils.safe_getattr(cfg, "b", 3) == 3 and utils.safe_getattr(cfg, "a") == 1
    assert utils.safe_hasattr(ns, "a") and not utils.safe_hasattr(ns, "b")


def test_checkpoint_paths_newest_first(tmp_path):
    for name in ("checkpoint2.pt", "checkpoint10.pt", "checkpoint_last.pt", "checkpoint1.pt"):
        (tmp_path / name).write_bytes(b"")
    paths = utils.checkpoint_paths(str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["checkpoint10.pt", "checkpoint2.pt", "checkpoint1.pt"]


def test_import_user_module_imports_a_plugin_dir_once(tmp_path):
    plugin = tmp_path / "my_api_plugin_pkg"
    plugin.mkdir()
    (plugin / "__init__.py").write_text("import builtins\nbuiltins._api_plugin_hits = getattr(builtins, '_api_plugin_hits', 0) + 1\n")
    import builtins

    utils.import_user_module(argparse.Namespace(user_dir=str(plugin)))
    utils.import_user_module(argparse.Namespace(user_dir=str(plugin)))
    utils.import_user_module(argparse.Namespace(user_dir=None))
    assert builtins._api_plugin_hits == 1
