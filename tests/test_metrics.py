"""fairseq.logging.metrics: aggregation contexts, meters and their state (fairseq.metrics alias)."""
import uuid

import pytest
import torch

from fairseq.logging import metrics


@pytest.fixture(autouse=True)
def fresh_metrics():
    metrics.reset()
    yield
    metrics.reset()


def test_alias_is_the_same_module():
    import fairseq.metrics

    assert fairseq.metrics is metrics


def test_nested_aggregators_all_see_values_logged_inside_them():
    with metrics.aggregate() as outer:
        metrics.log_scalar("loss", 1)
        with metrics.aggregate() as inner:
            metrics.log_scalar("loss", 3)
    assert outer.get_smoothed_values()["loss"] == 2
    assert inner.get_smoothed_values()["loss"] == 3
    assert metrics.get_smoothed_values("default")["loss"] == 2


def test_new_root_hides_values_from_enclosing_aggregators_until_it_ends():
    with metrics.aggregate() as a:
        metrics.log_scalar("loss", 1)
        with metrics.aggregate(new_root=True) as b:
            metrics.log_scalar("loss", 5)
            with metrics.aggregate() as c:
                metrics.log_scalar("loss", 7)
        metrics.log_scalar("loss", 3)
    assert a.get_smoothed_values()["loss"] == 2
    assert b.get_smoothed_values()["loss"] == 6
    assert c.get_smoothed_values()["loss"] == 7


def test_named_aggregators_persist_and_count_nested_reuse_once():
    name = str(uuid.uuid4())
    with metrics.aggregate(name):
        metrics.log_scalar("loss", 2)
    metrics.log_scalar("loss", 100)  # outside the block: not in `name`
    with metrics.aggregate(name):
        metrics.log_scalar("loss", 4)
        with metrics.aggregate() as other, metrics.aggregate(name):
            metrics.log_scalar("loss", 6)
    assert metrics.get_smoothed_values(name)["loss"] == 4
    assert other.get_smoothed_values()["loss"] == 6
    metrics.reset_meters(name)
    assert metrics.get_meter(name, "loss").avg is None


def test_an_exception_inside_a_block_leaves_the_stack_clean():
    with pytest.raises(RuntimeError):
        with metrics.aggregate("boom"):
            raise RuntimeError("x")
    assert len(metrics.get_active_aggregators()) == 1
    with pytest.raises(ValueError):
        with metrics.aggregate("default"):
            pass


def test_weights_rounding_sums_and_derived_values():
    with metrics.aggregate("m") as agg:
        metrics.log_scalar("loss", 1.0, weight=1, round=2)
        metrics.log_scalar("loss", 2.0, weight=3, round=2)
        metrics.log_scalar("lr", 0.5, weight=0)  # weight 0: the latest value
        metrics.log_scalar_sum("ntokens", 10)
        metrics.log_scalar_sum("ntokens", torch.tensor(5))
        metrics.log_derived("ppl", lambda meters: 2 ** meters["loss"].avg)
        metrics.log_scalar("_hidden", 1)
    values = metrics.get_smoothed_values("m")
    assert values["loss"] == 1.75 and values["lr"] == 0.5 and int(values["ntokens"]) == 15
    assert values["ppl"] == pytest.approx(2 ** 1.75)
    assert "_hidden" not in values
    assert list(agg)[:3] == ["loss", "lr", "ntokens"]  # priority 10 before derived (20)
    assert metrics.get_smoothed_value("m", "loss") == 1.75
    with pytest.raises(KeyError):
        metrics.get_smoothed_values("never-logged")


def test_timers_and_speed():
    with metrics.aggregate("t"):
        metrics.log_start_time("wall")
        metrics.log_stop_time("wall")
        metrics.log_speed("wps", 0)
        metrics.log_speed("wps", 100)
    values = metrics.get_smoothed_values("t")
    assert values["wall"] >= 0 and values["wps"] > 0


def test_state_dict_round_trip_skips_derived_meters():
    with metrics.aggregate("train"):
        metrics.log_scalar("loss", 3.0, weight=2, round=3)
        metrics.log_scalar_sum("n", 4)
        metrics.log_derived("ppl", lambda m: 2 ** m["loss"].avg)
    state = metrics.state_dict()
    metrics.reset()
    metrics.load_state_dict(state)
    assert metrics.get_smoothed_values("train") == {"loss": 3.0, "n": 4}
    with metrics.aggregate("train"):
        metrics.log_scalar("loss", 1.0, weight=2)
    assert metrics.get_smoothed_values("train")["loss"] == 2.0
    # values logged after loading still reach the loaded "default" aggregator (3.0 x 2, then 5.0)
    metrics.load_state_dict(state)
    metrics.log_scalar("loss", 5.0)
    assert metrics.get_smoothed_value("default", "loss") == round(11 / 3, 3)  # round=3 is kept
