"""The lr schedulers: each lr checked against a closed form written here, built three ways."""
import dataclasses
import json
import math
import shlex
from argparse import Namespace
from pathlib import Path
from typing import Callable, List

import pytest
import torch
from omegaconf import OmegaConf

from fairseq.optim.fairseq_optimizer import FairseqOptimizer
from fairseq.optim.lr_scheduler import build_lr_scheduler
from fairseq.optim.lr_scheduler.cosine_lr_scheduler import CosineLRScheduleConfig
from fairseq.optim.lr_scheduler.fixed_schedule import FixedLRScheduleConfig
from fairseq.optim.lr_scheduler.polynomial_decay_schedule import PolynomialDecayLRScheduleConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fairseq_0_12"

# In the flat legacy namespace an interpolated field reads the attribute of the key it follows.
LEGACY_SOURCE = {"total_num_update": "max_update"}


class OneParamSGD(FairseqOptimizer):
    """The smallest optimizer a scheduler can drive: torch SGD over a single parameter."""

    def __init__(self):
        super().__init__(cfg=None)
        self._optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)


def three_ways(config) -> List:
    """The scheduler ``config`` describes, built from the instance, a DictConfig and a Namespace."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "_name"}
    namespace = Namespace(lr_scheduler=config._name, **{LEGACY_SOURCE.get(k, k): v for k, v in values.items()})
    return [build_lr_scheduler(cfg, OneParamSGD())
            for cfg in (config, OmegaConf.structured(config), namespace)]


def lrs_after_updates(scheduler, updates) -> List[float]:
    """The lr the optimizer holds after ``step_update(n)`` for each ``n``."""
    out = []
    for n in updates:
        returned = scheduler.step_update(n)
        assert returned == scheduler.optimizer.get_lr()
        out.append(returned)
    return out


def check_all_ways(config, updates, expected: Callable[[int], float]) -> None:
    for scheduler in three_ways(config):
        assert lrs_after_updates(scheduler, updates) == pytest.approx([expected(n) for n in updates])


# -- fairseq 0.12.2's own numbers ------------------------------------------------------------------
FAIRSEQ_SCHEDULES = json.loads((FIXTURES / "lr_schedules.json").read_text())


def legacy_scheduler(flags: str):
    """The scheduler ``fairseq-train DATA <flags>`` builds, through the legacy door."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = ["data-bin", "--optimizer", "sgd", *shlex.split(flags)]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(input_args=argv),
                                                                     argv))
    return build_lr_scheduler(cfg.lr_scheduler, OneParamSGD())


@pytest.mark.parametrize("name", sorted(FAIRSEQ_SCHEDULES))
def test_lr_after_every_update_equals_fairseq_0_12(name):
    """Index 0 is the lr after ``step_begin_epoch(1)``, index n the lr after ``step_update(n)``."""
    case = FAIRSEQ_SCHEDULES[name]
    scheduler = legacy_scheduler(case["flags"])
    assert scheduler.cfg._name == name
    ours = [scheduler.step_begin_epoch(1)]
    assert ours[0] == scheduler.optimizer.get_lr()
    ours += lrs_after_updates(scheduler, range(1, len(case["lr_after_update"])))
    assert ours == pytest.approx(case["lr_after_update"], rel=1e-8, abs=1e-12)


def test_cosine_restarts_after_the_last_update_as_fairseq():
    # --max-update 20 with 3 warmup updates: one 17-update cycle, so the lr after update 20 is the
    # next cycle's peak (lr * lr_shrink); training stops there and no update uses it
    scheduler = legacy_scheduler(FAIRSEQ_SCHEDULES["cosine"]["flags"])
    assert scheduler.step_update(19) == pytest.approx(0.5 * 0.005 * (1 + math.cos(math.pi * 16 / 17)))
    assert scheduler.step_update(20) == pytest.approx(0.005 * 0.1)
    assert scheduler.step_update(37) == pytest.approx(0.005 * 0.01)


def test_polynomial_decay_in_the_trainer_sequence_starts_from_zero_like_fairseq():
    """The trainer calls ``step_update(0)`` once built: with a warmup the first update uses lr 0."""
    scheduler = legacy_scheduler(FAIRSEQ_SCHEDULES["polynomial_decay"]["flags"])
    assert scheduler.optimizer.get_lr() == pytest.approx(0.002)  # built: lr / warmup_updates
    assert scheduler.step_update(0) == 0.0
    assert scheduler.step_begin_epoch(1) == 0.0  # the last warmup factor times the peak
    assert lrs_after_updates(scheduler, [0, 1, 2, 3]) == pytest.approx([0.0, 0.002, 0.004, 0.004 * 17 / 18])


# -- cosine ----------------------------------------------------------------------------------------
def cosine_expected(n, *, min_lr, max_lr, warmup, init, period, t_mult, shrink):
    """Walks the cycles one by one (the scheduler jumps there with a logarithm)."""
    if n < warmup:
        return init + (max_lr - init) * n / warmup
    k = n - warmup
    cycle, start, length = 0, 0.0, float(period)
    while k >= start + length:
        start, length, cycle = start + length, length * t_mult, cycle + 1
    s = shrink ** cycle
    return min_lr * s + 0.5 * (max_lr * s - min_lr * s) * (1 + math.cos(math.pi * (k - start) / length))


def test_cosine_warmup_then_equal_periods_with_shrinking_restarts():
    config = CosineLRScheduleConfig(_name="cosine", warmup_updates=4, lr=[1.0], min_lr=0.1, lr_period_updates=10,
                                    lr_shrink=0.5, max_update=1000)
    check_all_ways(config, range(0, 40), lambda n: cosine_expected(
        n, min_lr=0.1, max_lr=1.0, warmup=4, init=0.1, period=10, t_mult=1, shrink=0.5))
    scheduler = three_ways(config)[0]
    assert scheduler.optimizer.get_lr() == pytest.approx(0.1)  # built: warmup_init_lr=-1 means min_lr
    assert scheduler.step_update(0) == pytest.approx(0.1)
    assert scheduler.step_update(2) == pytest.approx(0.55)
    assert scheduler.step_update(4) == pytest.approx(1.0)  # warmup end: the peak, --lr
    assert scheduler.step_update(9) == pytest.approx(0.55)  # half a period: the midpoint
    assert scheduler.step_update(14) == pytest.approx(0.5)  # first restart: peak * lr_shrink
    assert scheduler.step_update(24) == pytest.approx(0.25)


def test_cosine_restart_periods_grow_with_t_mult_2():
    config = CosineLRScheduleConfig(_name="cosine", lr=[1.0], t_mult=2.0, lr_period_updates=4,
                                    lr_shrink=0.5, max_update=0)
    check_all_ways(config, range(0, 60), lambda n: cosine_expected(
        n, min_lr=0.0, max_lr=1.0, warmup=0, init=0.0, period=4, t_mult=2, shrink=0.5))
    scheduler = three_ways(config)[0]
    # cycles cover updates [0, 4), [4, 12), [12, 28)
    assert scheduler.step_update(2) == pytest.approx(0.5)
    assert scheduler.step_update(4) == pytest.approx(0.5)
    assert scheduler.step_update(8) == pytest.approx(0.25)
    assert scheduler.step_update(12) == pytest.approx(0.25)
    assert scheduler.step_update(20) == pytest.approx(0.125)


def test_cosine_restart_is_exact_where_the_logarithm_rounds_down():
    # cycle 3 starts at 1 + 10 + 100 = 111, and log10(1000) evaluates to 2.9999999999999996
    config = CosineLRScheduleConfig(_name="cosine", lr=[1.0], t_mult=10.0, lr_period_updates=1,
                                    lr_shrink=0.5, max_update=0)
    scheduler = three_ways(config)[0]
    assert scheduler.step_update(111) == pytest.approx(0.125)
    assert scheduler.step_update(110) == pytest.approx(0.25 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_cosine_period_defaults_to_the_run_after_warmup():
    config = CosineLRScheduleConfig(_name="cosine", warmup_updates=4, warmup_init_lr=0.0, lr=[1e-3],
                                    min_lr=1e-6, max_update=20)
    check_all_ways(config, range(0, 21), lambda n: cosine_expected(
        n, min_lr=1e-6, max_lr=1e-3, warmup=4, init=0.0, period=16, t_mult=1, shrink=0.1))
    scheduler = three_ways(config)[0]
    assert scheduler.step_update(19) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * 15 / 16)))


@pytest.mark.parametrize("changes, message", [
    (dict(min_lr=1e-3, lr=[1e-4]), r"optimization.lr=\[0.0001\] with lr_scheduler.min_lr=0.001"),
    (dict(min_lr=1e-3, lr=[1e-3]), r"need lr > min_lr"),
    (dict(lr=[1e-4, 1e-5]), "takes one lr"),
    (dict(lr_period_updates=-1, max_update=0), "lr_period_updates=-1.*optimization.max_update=0"),
    (dict(lr_period_updates=-1, max_update=5, warmup_updates=5), "warmup_updates=5"),
    (dict(t_mult=0.5), "lr_scheduler.t_mult=0.5"),
    (dict(lr_shrink=0.0), "lr_scheduler.lr_shrink=0.0"),
])
def test_cosine_rejects_bad_settings_naming_the_key(changes, message):
    values = dict(_name="cosine", lr=[1e-3], min_lr=1e-5, lr_period_updates=10, max_update=100)
    config = CosineLRScheduleConfig(**{**values, **changes})
    for build in (lambda: build_lr_scheduler(config, OneParamSGD()),
                  lambda: build_lr_scheduler(OmegaConf.structured(config), OneParamSGD())):
        with pytest.raises(ValueError, match=message):
            build()


# -- polynomial_decay -------------------------------------------------------------------------------
def test_polynomial_decay_warmup_then_power_2_to_the_end_lr():
    config = PolynomialDecayLRScheduleConfig(_name="polynomial_decay", warmup_updates=5, end_learning_rate=0.01,
                                             power=2.0, total_num_update=25, lr=[0.5])

    def expected(n):
        if n < 5:
            return 0.5 * n / 5
        if n >= 25:
            return 0.01
        return (0.5 - 0.01) * (1 - (n - 5) / 20) ** 2 + 0.01

    check_all_ways(config, range(0, 40), expected)
    scheduler = three_ways(config)[0]
    assert scheduler.step_update(0) == 0.0
    assert scheduler.step_update(5) == pytest.approx(0.5)
    assert scheduler.step_update(15) == pytest.approx(0.49 * 0.25 + 0.01)
    assert scheduler.step_update(30) == pytest.approx(0.01)


def test_polynomial_decay_force_anneal_restarts_the_curve_each_epoch():
    config = PolynomialDecayLRScheduleConfig(_name="polynomial_decay", force_anneal=2, total_num_update=10,
                                             lr=[1.0])
    for scheduler in three_ways(config):
        used = [lr for _, _, lr in run_like_the_trainer(scheduler, epochs=3, updates_per_epoch=2)]
        # epoch 1 follows 1 - n/10; entering epoch 2 re-anchors the peak at 0.8, epoch 3 at 0.48
        assert used == pytest.approx([1.0, 0.9, 0.64, 0.56, 0.288, 0.48 * 0.5])
        assert scheduler.state_dict() == {"best": 7.0, "epoch": 3, "peak_lr": pytest.approx(0.48)}
        scheduler.step_begin_epoch(3)  # as after a resume inside epoch 3: not re-anchored again
        assert scheduler.step_update(6) == pytest.approx(0.48 * 0.4) and scheduler.peak_lr == pytest.approx(0.48)


def test_polynomial_decay_total_at_or_before_the_warmup_end_jumps_to_the_end_lr():
    config = PolynomialDecayLRScheduleConfig(_name="polynomial_decay", warmup_updates=4, total_num_update=4,
                                             end_learning_rate=0.01, lr=[1.0])
    check_all_ways(config, range(0, 8), lambda n: n / 4 if n <= 4 else 0.01)


@pytest.mark.parametrize("changes, message", [
    (dict(total_num_update=0), r"lr_scheduler.total_num_update=0(\.0)?: must be > 0; set --total-num-update"),
    (dict(lr=[0.1, 0.2]), "takes one lr"),
    (dict(power=0.0), "lr_scheduler.power=0.0"),
    (dict(end_learning_rate=-1.0), "lr_scheduler.end_learning_rate=-1.0"),
    (dict(force_anneal=0), "lr_scheduler.force_anneal=0"),
])
def test_polynomial_decay_rejects_bad_settings_naming_the_key(changes, message):
    values = dict(_name="polynomial_decay", total_num_update=100, lr=[0.1])
    with pytest.raises(ValueError, match=message):
        build_lr_scheduler(PolynomialDecayLRScheduleConfig(**{**values, **changes}), OneParamSGD())


# -- fixed -----------------------------------------------------------------------------------------
def fixed_expected(epoch, n, lrs, force_anneal, shrink, warmup):
    """fairseq's rule: epoch ``force_anneal`` is the first shrunk one."""
    lr = lrs[min(epoch, len(lrs)) - 1] if epoch < force_anneal else lrs[-1] * shrink ** (epoch - force_anneal + 1)
    return lr * (n + 1) / warmup if n < warmup else lr


def run_like_the_trainer(scheduler, epochs: int, updates_per_epoch: int):
    """(epoch, updates before, lr used) of each update, calling the scheduler as the trainer does."""
    used = []
    num_updates = 0
    scheduler.step_update(num_updates)  # at build
    for epoch in range(1, epochs + 1):
        scheduler.step_begin_epoch(epoch)  # Trainer.lr_step_begin_epoch: step_begin_epoch, step_update
        scheduler.step_update(num_updates)
        for _ in range(updates_per_epoch):
            used.append((epoch, num_updates, scheduler.optimizer.get_lr()))
            num_updates += 1
            scheduler.step_update(num_updates)
        scheduler.step(epoch, val_loss=10.0 - epoch)  # Trainer.lr_step: step, then step_update
        scheduler.step_update(num_updates)
    return used


def test_fixed_per_epoch_lrs_warmup_and_force_anneal_through_the_trainer_sequence():
    config = FixedLRScheduleConfig(_name="fixed", force_anneal=5, lr_shrink=0.1, warmup_updates=4,
                                   lr=[1.0, 0.5, 0.25])
    states = []
    for scheduler in three_ways(config):
        used = run_like_the_trainer(scheduler, epochs=7, updates_per_epoch=3)
        assert [lr for _, _, lr in used] == pytest.approx(
            [fixed_expected(e, n, [1.0, 0.5, 0.25], 5, 0.1, 4) for e, n, _ in used])
        # spelled out: warmup spans epochs 1 and 2; epoch 5 is the first annealed one
        assert [lr for _, _, lr in used][:6] == pytest.approx([0.25, 0.5, 0.75, 0.5, 0.5, 0.5])
        assert [lr for e, _, lr in used if e >= 4][::3] == pytest.approx([0.25, 0.025, 0.0025, 0.00025])
        # as in fairseq, the end of an epoch keeps its lr; the next step_begin_epoch switches
        assert scheduler.optimizer.get_lr() == pytest.approx(0.25 * 0.1 ** 3)
        states.append(scheduler.state_dict())
        assert scheduler.step_begin_epoch(8) == pytest.approx(0.25 * 0.1 ** 4)
    assert states[0] == states[1] == states[2] == {"best": 3.0, "epoch": 7, "lr": pytest.approx(0.25e-3)}


def test_fixed_without_force_anneal_keeps_the_last_lr_and_step_begin_epoch_agrees():
    scheduler = three_ways(FixedLRScheduleConfig(_name="fixed", lr=[0.3, 0.2]))[0]
    assert scheduler.step_update(0) == pytest.approx(0.3)
    assert scheduler.step(1) == pytest.approx(0.3)  # the epoch just finished keeps its lr
    assert scheduler.step_begin_epoch(2) == pytest.approx(0.2)
    assert scheduler.step_update(7) == pytest.approx(0.2)  # no warmup: the epoch lr stays
    assert scheduler.step(2) == pytest.approx(0.2)
    assert scheduler.step_begin_epoch(3) == pytest.approx(0.2)
    assert scheduler.step_begin_epoch(9) == pytest.approx(0.2)


def test_fixed_state_round_trip_restores_the_epoch_lr():
    config = FixedLRScheduleConfig(_name="fixed", lr=[0.3, 0.2, 0.1])
    before = three_ways(config)[0]
    run_like_the_trainer(before, epochs=2, updates_per_epoch=2)
    after = build_lr_scheduler(config, OneParamSGD())
    after.load_state_dict(before.state_dict())
    assert after.step_update(4) == pytest.approx(0.2) == before.optimizer.get_lr()
    assert after.step_begin_epoch(3) == pytest.approx(0.1) == before.step_begin_epoch(3)


@pytest.mark.parametrize("changes, message", [
    (dict(lr=[]), "optimization.lr=\\[\\]"),
    (dict(force_anneal=0), "lr_scheduler.force_anneal=0"),
    (dict(lr_shrink=-1.0), "lr_scheduler.lr_shrink=-1.0"),
    (dict(warmup_updates=-3), "lr_scheduler.warmup_updates=-3"),
])
def test_fixed_rejects_bad_settings_naming_the_key(changes, message):
    with pytest.raises(ValueError, match=message):
        build_lr_scheduler(FixedLRScheduleConfig(**{"_name": "fixed", "lr": [0.1], **changes}), OneParamSGD())
