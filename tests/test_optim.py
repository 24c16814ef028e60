"""The optimizers: NAG and Adam against updates computed by hand, and all three config doors."""
import dataclasses
from argparse import Namespace

import pytest
import torch
from omegaconf import OmegaConf

from fairseq.optim import build_optimizer
from fairseq.optim.adam import FairseqAdamConfig
from fairseq.optim.adamw import FairseqAdamWConfig
from fairseq.optim.nag import NAG, FairseqNAGConfig
from fairseq.optim.sgd import FairseqSGDConfig


def nag_by_hand(p, b, g, lr, lr_old, m, wd):
    """The NAG rule on plain tensors; returns the new (p, b)."""
    c = lr / lr_old
    p = p * (1 - lr * wd)
    p = p + m * m * c * b
    p = p - (1 + m) * lr * g
    b = m * c * b - lr * g
    return p, b


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_nag_two_steps_with_an_lr_change_match_the_rule(foreach, wd):
    torch.manual_seed(0)
    start = torch.randn(5, dtype=torch.float64)
    g1, g2 = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    param = torch.nn.Parameter(start.clone())
    frozen = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))  # never gets a gradient
    opt = NAG([param, frozen], lr=0.1, momentum=0.9, weight_decay=wd, foreach=foreach)

    param.grad = g1.clone()
    opt.step()
    p, b = nag_by_hand(start, torch.zeros(5, dtype=torch.float64), g1, lr=0.1, lr_old=0.1, m=0.9, wd=wd)
    torch.testing.assert_close(param.detach(), p)
    torch.testing.assert_close(opt.state[param]["momentum_buffer"], b)

    opt.param_groups[0]["lr"] = 0.05  # what a scheduler does between updates
    param.grad = g2.clone()
    opt.step()
    p, b = nag_by_hand(p, b, g2, lr=0.05, lr_old=0.1, m=0.9, wd=wd)
    torch.testing.assert_close(param.detach(), p)
    torch.testing.assert_close(opt.state[param]["momentum_buffer"], b)
    assert opt.param_groups[0]["lr_old"] == 0.05
    assert torch.equal(frozen.detach(), torch.ones(3, dtype=torch.float64)) and frozen not in opt.state


def test_nag_after_a_zero_lr_step_uses_no_correction():
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = NAG([param], lr=0.0, momentum=0.5)
    param.grad = torch.tensor([1.0, 1.0])
    opt.step()  # lr 0: nothing moves, the buffer stays 0
    opt.param_groups[0]["lr"] = 0.1
    opt.step()
    torch.testing.assert_close(param.detach(), torch.tensor([1.0, -2.0]) - 1.5 * 0.1)


def test_nag_weight_decay_alone_shrinks_by_lr_times_wd():
    param = torch.nn.Parameter(torch.tensor([2.0, -4.0]))
    opt = NAG([param], lr=0.5, momentum=0.9, weight_decay=0.1)
    param.grad = torch.zeros(2)
    opt.step()
    torch.testing.assert_close(param.detach(), torch.tensor([2.0, -4.0]) * (1 - 0.5 * 0.1))


def test_adam_amsgrad_matches_the_update_by_hand():
    lr, (b1, b2), eps, wd = 0.1, (0.9, 0.98), 1e-8, 0.01
    cfg = FairseqAdamConfig(_name="adam", lr=[lr], adam_betas=[b1, b2], adam_eps=eps, weight_decay=wd,
                            amsgrad=True)
    param = torch.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    opt = build_optimizer(cfg, [param])
    assert opt.optimizer.param_groups[0]["amsgrad"] is True
    p = param.detach().clone()
    m, v, v_max = (torch.zeros(2, dtype=torch.float64) for _ in range(3))
    # a large gradient then small ones: AMSGrad keeps dividing by the largest second moment
    for t, grad in enumerate([[3.0, -3.0], [0.1, 0.1], [0.1, -0.2]], start=1):
        g = torch.tensor(grad, dtype=torch.float64)
        param.grad = g.clone()
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v_max = torch.maximum(v_max, v)
        p = p * (1 - lr * wd)
        p = p - lr * (m / (1 - b1 ** t)) / ((v_max / (1 - b2 ** t)).sqrt() + eps)
        torch.testing.assert_close(param.detach(), p)
    assert torch.all(opt.optimizer.state[param]["max_exp_avg_sq"] > opt.optimizer.state[param]["exp_avg_sq"])


# -- three doors -----------------------------------------------------------------------------------
CONFIGS = [
    FairseqAdamConfig(_name="adam", lr=[0.003], adam_betas=[0.9, 0.98], adam_eps=1e-6, weight_decay=0.01,
                      amsgrad=True),
    FairseqAdamWConfig(_name="adamw", lr=[0.003], adam_betas=[0.8, 0.9]),
    FairseqNAGConfig(_name="nag", lr=[0.25], momentum=0.9, weight_decay=1e-4),
    FairseqSGDConfig(_name="sgd", lr=[0.5], momentum=0.5, weight_decay=1e-3),
]


def hyperparameters(cfg):
    opt = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(3))])
    return [{k: v for k, v in group.items() if k != "params"} for group in opt.optimizer.param_groups]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c._name)
def test_each_optimizer_is_the_same_from_dataclass_dictconfig_and_namespace(config):
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "_name"}
    from_dataclass = hyperparameters(config)
    assert from_dataclass == hyperparameters(OmegaConf.structured(config))
    assert from_dataclass == hyperparameters(Namespace(optimizer=config._name, **values))
    assert from_dataclass[0]["lr"] == config.lr[0]


def test_defaults_of_adamw_sgd_and_nag():
    assert hyperparameters(FairseqAdamWConfig(_name="adamw", lr=[0.1]))[0]["weight_decay"] == 0.01
    assert hyperparameters(FairseqAdamConfig(_name="adam", lr=[0.1]))[0]["amsgrad"] is False
    assert hyperparameters(FairseqSGDConfig(_name="sgd", lr=[0.1]))[0]["momentum"] == 0.0
    nag = hyperparameters(FairseqNAGConfig(_name="nag", lr=[0.1]))[0]
    assert (nag["momentum"], nag["weight_decay"], nag["lr_old"]) == (0.99, 0.0, 0.1)


def adam_node(adam_betas):
    """An untyped config node, as a YAML file or an old checkpoint gives it: strings stay strings."""
    return OmegaConf.create({"_name": "adam", "lr": [0.1], "adam_betas": adam_betas, "adam_eps": 1e-8,
                             "weight_decay": 0.0, "amsgrad": False})


@pytest.mark.parametrize("betas", ["(0.9, 0.98)", "[0.9, 0.98]", "0.9,0.98", [0.9, 0.98], (0.9, 0.98)])
def test_adam_betas_in_every_spelling(betas):
    assert hyperparameters(adam_node(betas))[0]["betas"] == (0.9, 0.98)
    if not isinstance(betas, str):  # typed doors: the dataclass and the legacy namespace
        assert hyperparameters(Namespace(optimizer="adam", lr=[0.1], adam_betas=betas))[0]["betas"] == (0.9, 0.98)
        config = FairseqAdamConfig(_name="adam", lr=[0.1], adam_betas=betas)
        assert hyperparameters(config)[0]["betas"] == (0.9, 0.98)


def test_adam_betas_string_flag_of_the_legacy_door():
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = ["data-bin", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--amsgrad", "--lr", "0.1"]
    args = options.parse_args_and_arch(options.get_training_parser(input_args=argv), argv)
    group = hyperparameters(convert_namespace_to_omegaconf(args).optimizer)[0]
    assert (group["betas"], group["amsgrad"], group["lr"]) == ((0.9, 0.98), True, 0.1)


@pytest.mark.parametrize("betas", ["(0.9, oops)", "(0.9,)", "[0.9, 1.5]", "0.9"])
def test_malformed_adam_betas_name_the_key(betas):
    with pytest.raises(ValueError, match=r"optimizer\.adam_betas=.*e\.g\. \[0\.9,0\.98\]"):
        hyperparameters(adam_node(betas))


def test_out_of_range_adam_betas_name_the_key_in_the_typed_doors():
    with pytest.raises(ValueError, match=r"optimizer\.adam_betas=\[0\.9, 1\.5\]"):
        hyperparameters(Namespace(optimizer="adam", lr=[0.1], adam_betas=[0.9, 1.5]))


@pytest.mark.parametrize("cfg, key", [
    (FairseqNAGConfig(_name="nag", lr=[0.1], momentum=-0.5), "optimizer.momentum=-0.5"),
    (FairseqSGDConfig(_name="sgd", lr=[0.1], weight_decay=-1.0), "optimizer.weight_decay=-1.0"),
    (FairseqAdamWConfig(_name="adamw", lr=[0.1], adam_eps=-1.0), "optimizer.adam_eps=-1.0"),
])
def test_negative_hyperparameters_name_the_key(cfg, key):
    with pytest.raises(ValueError, match=key):
        hyperparameters(cfg)
