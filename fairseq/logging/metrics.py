"""Metrics logged from anywhere and aggregated by context (``fairseq.logging.metrics``).

A value logged with :func:`log_scalar` (or another ``log_*``) is recorded by every *active*
aggregator: the global ``"default"`` one and each :func:`aggregate` block that encloses the
call. Named aggregators (``"train"``, ``"valid"``) persist between blocks, so values logged in
several blocks of the same name are averaged together::

    with metrics.aggregate("train"):
        for batch in batches:
            with metrics.aggregate("train_inner") as inner:
                metrics.log_scalar("loss", loss, sample_size, round=3)
    metrics.get_smoothed_values("train")["loss"]

The meters here follow fairseq's semantics (``round``, ``state_dict``, priorities); they are
independent of the lighter step meters in :mod:`fairseq.logging.meters`.
"""
import bisect
import contextlib
import sys
import time
import uuid
from collections import OrderedDict, defaultdict
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple


def _type_as(a: Any, b: Any) -> Any:
    """``a`` moved to ``b``'s device and dtype when both are tensors (accumulators keep up with
    tensor updates without a host sync)."""
    torch = sys.modules.get("torch")  # only tensors need it, and they imply torch is loaded
    if torch is not None and torch.is_tensor(a) and torch.is_tensor(b):
        return a.to(b)
    return a


def safe_round(number: Any, ndigits: int) -> Any:
    """``round(number, ndigits)`` for floats, one-element tensors and numpy scalars; anything
    else is returned unchanged."""
    if hasattr(number, "__round__") and not hasattr(number, "numel"):
        return round(number, ndigits)
    if hasattr(number, "numel") and number.numel() == 1:
        return safe_round(number.item(), ndigits)
    if hasattr(number, "item") and getattr(number, "ndim", None) == 0:
        return safe_round(number.item(), ndigits)
    return number


# -- meters --------------------------------------------------------------------------------------
class Meter:
    """Base of the meters: a value that is updated, reset, saved and shown smoothed."""

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        pass

    def reset(self) -> None:
        raise NotImplementedError

    @property
    def smoothed_value(self) -> Any:
        """The value shown in logs."""
        raise NotImplementedError

    def _rounded(self, value: Any) -> Any:
        round_to = getattr(self, "round", None)
        if round_to is not None and value is not None:
            return safe_round(value, round_to)
        return value


class AverageMeter(Meter):
    """Weighted average of the values logged; a weight of 0 only records the latest value."""

    def __init__(self, round: Optional[int] = None):  # noqa: A002 -- fairseq's name
        self.round = round
        self.reset()

    def reset(self) -> None:
        self.val: Any = None
        self.sum: Any = 0
        self.count: Any = 0

    def update(self, val: Any, n: Any = 1) -> None:
        if val is None:
            return
        self.val = val
        if n > 0:
            self.sum = _type_as(self.sum, val) + val * n
            self.count = _type_as(self.count, n) + n

    def state_dict(self) -> Dict[str, Any]:
        return {"val": self.val, "sum": self.sum, "count": self.count, "round": self.round}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.val = state_dict["val"]
        self.sum = state_dict["sum"]
        self.count = state_dict["count"]
        self.round = state_dict.get("round")

    @property
    def avg(self) -> Any:
        return self.sum / self.count if self.count > 0 else self.val

    @property
    def smoothed_value(self) -> Any:
        return self._rounded(self.avg)


class SumMeter(Meter):
    """Sum of the values logged."""

    def __init__(self, round: Optional[int] = None):  # noqa: A002
        self.round = round
        self.reset()

    def reset(self) -> None:
        self.sum: Any = 0

    def update(self, val: Any) -> None:
        if val is not None:
            self.sum = _type_as(self.sum, val) + val

    def state_dict(self) -> Dict[str, Any]:
        return {"sum": self.sum, "round": self.round}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.sum = state_dict["sum"]
        self.round = state_dict.get("round")

    @property
    def smoothed_value(self) -> Any:
        return self._rounded(self.sum)


class TimeMeter(Meter):
    """Occurrences per second since the meter was (re)started; ``init`` seconds already elapsed."""

    def __init__(self, init: float = 0, n: Any = 0, round: Optional[int] = None):  # noqa: A002
        self.round = round
        self.reset(init, n)

    def reset(self, init: float = 0, n: Any = 0) -> None:
        self.init = init
        self.start = time.perf_counter()
        self.n = n
        self.i = 0

    def update(self, val: Any = 1) -> None:
        self.n = _type_as(self.n, val) + val
        self.i += 1

    def state_dict(self) -> Dict[str, Any]:
        return {"init": self.elapsed_time, "n": self.n, "round": self.round}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if "start" in state_dict:  # an old layout without ``n``
            self.reset(init=state_dict["init"])
        else:
            self.reset(init=state_dict["init"], n=state_dict["n"])
            self.round = state_dict.get("round")

    @property
    def elapsed_time(self) -> float:
        return self.init + (time.perf_counter() - self.start)

    @property
    def avg(self) -> Any:
        return self.n / self.elapsed_time

    @property
    def smoothed_value(self) -> Any:
        return self._rounded(self.avg)


class StopwatchMeter(Meter):
    """Total (or, with weights, average) duration of timed events, in seconds."""

    def __init__(self, round: Optional[int] = None):  # noqa: A002
        self.round = round
        self.sum = 0.0
        self.n: Any = 0
        self.start_time: Optional[float] = None

    def start(self) -> None:
        self.start_time = time.perf_counter()

    def stop(self, n: Any = 1, prehook: Optional[Callable[[], Any]] = None) -> None:
        if self.start_time is None:
            return
        if prehook is not None:
            prehook()
        self.sum += time.perf_counter() - self.start_time
        self.n = _type_as(self.n, n) + n

    def reset(self) -> None:
        self.sum = 0.0
        self.n = 0
        self.start()

    def state_dict(self) -> Dict[str, Any]:
        return {"sum": self.sum, "n": self.n, "round": self.round}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.sum = state_dict["sum"]
        self.n = state_dict["n"]
        self.start_time = None
        self.round = state_dict.get("round")

    @property
    def avg(self) -> float:
        return self.sum / self.n if self.n > 0 else self.sum

    @property
    def elapsed_time(self) -> float:
        return 0.0 if self.start_time is None else time.perf_counter() - self.start_time

    @property
    def smoothed_value(self) -> Any:
        return self._rounded(self.avg if self.sum > 0 else self.elapsed_time)


class MetersDict(OrderedDict):
    """Meters by key, kept in order of priority (then of insertion)."""

    class _DerivedMeter(Meter):
        """A value computed from the other meters when it is read (never saved)."""

        def __init__(self, fn: Callable[["MetersDict"], Any]):
            self.fn = fn

        def reset(self) -> None:
            pass

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.priorities: List[Tuple[int, int, str]] = []

    def __setitem__(self, key: str, value: Tuple[int, Meter]) -> None:
        if key in self:
            raise KeyError(f"meter {key!r} already exists; MetersDict does not reassign")
        priority, meter = value
        bisect.insort(self.priorities, (priority, len(self.priorities), key))
        super().__setitem__(key, meter)
        for _, _, name in self.priorities:
            self.move_to_end(name)

    def add_meter(self, key: str, meter: Meter, priority: int) -> None:
        self[key] = (priority, meter)  # type: ignore[assignment]

    def state_dict(self) -> List[Tuple[int, str, str, Dict[str, Any]]]:
        return [(priority, key, type(self[key]).__name__, self[key].state_dict())
                for priority, _, key in self.priorities
                if not isinstance(self[key], MetersDict._DerivedMeter)]

    def load_state_dict(self, state_dict: List[Tuple[int, str, str, Dict[str, Any]]]) -> None:
        self.clear()
        self.priorities.clear()
        for priority, key, class_name, meter_state in state_dict:
            if class_name not in METER_CLASSES:
                raise KeyError(f"unknown meter class {class_name!r} for {key!r}")
            meter = METER_CLASSES[class_name]()
            meter.load_state_dict(meter_state)
            self.add_meter(key, meter, priority)

    def get_smoothed_value(self, key: str) -> Any:
        meter = self[key]
        if isinstance(meter, MetersDict._DerivedMeter):
            return meter.fn(self)
        return meter.smoothed_value

    def get_smoothed_values(self) -> Dict[str, Any]:
        """Every smoothed value except keys starting with ``_`` (hidden helpers)."""
        return OrderedDict((key, self.get_smoothed_value(key)) for key in self if not key.startswith("_"))

    def reset(self) -> None:
        for meter in self.values():
            meter.reset()


METER_CLASSES: Dict[str, Callable[[], Meter]] = {
    cls.__name__: cls for cls in (AverageMeter, SumMeter, TimeMeter, StopwatchMeter)
}


# -- aggregation contexts --------------------------------------------------------------------
_aggregators: "OrderedDict[str, MetersDict]" = OrderedDict()
_active_aggregators: "OrderedDict[str, MetersDict]" = OrderedDict()
_active_aggregators_cnt: Dict[str, int] = defaultdict(int)


def reset() -> None:
    """Forget every aggregator; only a fresh ``"default"`` one stays active."""
    _aggregators.clear()
    _active_aggregators.clear()
    _active_aggregators_cnt.clear()
    _aggregators["default"] = MetersDict()
    _active_aggregators["default"] = _aggregators["default"]
    _active_aggregators_cnt["default"] = 1


reset()


@contextlib.contextmanager
def aggregate(name: Optional[str] = None, new_root: bool = False) -> Iterator[MetersDict]:
    """Record the values logged inside the block in the aggregator ``name``.

    Args:
        name: the aggregator's name; the same name reuses the same meters (across blocks, and
            when nested twice). ``None`` makes a temporary aggregator for this block only.
            ``"default"`` is reserved for the global aggregator.
        new_root: values logged inside the block reach only this aggregator and those opened
            inside it, not the enclosing ones (nor ``"default"``).

    Yields:
        The aggregator's :class:`MetersDict`.
    """
    if name is None:
        name = str(uuid.uuid4())
        agg = MetersDict()
    else:
        if name == "default":
            raise ValueError("'default' is the global aggregator; choose another name")
        agg = _aggregators.setdefault(name, MetersDict())
    if new_root:
        saved_active = _active_aggregators.copy()
        saved_counts = dict(_active_aggregators_cnt)
        _active_aggregators.clear()
        _active_aggregators_cnt.clear()
    _active_aggregators[name] = agg
    _active_aggregators_cnt[name] += 1
    try:
        yield agg
    finally:
        _active_aggregators_cnt[name] -= 1
        if _active_aggregators_cnt[name] == 0 and name in _active_aggregators:
            del _active_aggregators[name]
        if new_root:
            _active_aggregators.clear()
            _active_aggregators.update(saved_active)
            _active_aggregators_cnt.clear()
            _active_aggregators_cnt.update(saved_counts)


def get_active_aggregators() -> List[MetersDict]:
    """The aggregators a value logged now reaches."""
    return list(_active_aggregators.values())


# -- logging -----------------------------------------------------------------------------------
def log_scalar(key: str, value: Any, weight: float = 1, priority: int = 10,
               round: Optional[int] = None) -> None:  # noqa: A002
    """Log ``value`` into a weighted average (weight 0: only the latest value counts).

    Args:
        key: the metric's name.
        value: a number or a one-element tensor (kept on its device until read).
        weight: its weight in the average (e.g. the sample size).
        priority: smaller values are shown first.
        round: digits shown.
    """
    for agg in get_active_aggregators():
        if key not in agg:
            agg.add_meter(key, AverageMeter(round=round), priority)
        agg[key].update(value, weight)


def log_scalar_sum(key: str, value: Any, priority: int = 10, round: Optional[int] = None) -> None:  # noqa: A002
    """Log ``value`` into a sum."""
    for agg in get_active_aggregators():
        if key not in agg:
            agg.add_meter(key, SumMeter(round=round), priority)
        agg[key].update(value)


def log_derived(key: str, fn: Callable[[MetersDict], Any], priority: int = 20) -> None:
    """Show ``fn(meters)`` under ``key``, computed from the other meters when read
    (e.g. perplexity from the loss)."""
    for agg in get_active_aggregators():
        if key not in agg:
            agg.add_meter(key, MetersDict._DerivedMeter(fn), priority)


def log_speed(key: str, value: Any, priority: int = 30, round: Optional[int] = None) -> None:  # noqa: A002
    """Log a rate per second: the first call starts the clock, later calls add ``value``."""
    for agg in get_active_aggregators():
        if key not in agg:
            agg.add_meter(key, TimeMeter(round=round), priority)
            agg[key].reset()
        else:
            agg[key].update(value)


def log_start_time(key: str, priority: int = 40, round: Optional[int] = None) -> None:  # noqa: A002
    """Start timing an event; :func:`log_stop_time` records its duration."""
    for agg in get_active_aggregators():
        if key not in agg:
            agg.add_meter(key, StopwatchMeter(round=round), priority)
        agg[key].start()


def log_stop_time(key: str, weight: float = 0.0, prehook: Optional[Callable[[], Any]] = None) -> None:
    """Stop timing ``key``. With ``weight > 0`` the average duration is shown, else the total.

    ``prehook`` runs just before the clock stops (e.g. ``torch.cuda.synchronize``).
    """
    for agg in get_active_aggregators():
        if key in agg:
            agg[key].stop(weight, prehook)


def log_custom(new_meter_fn: Callable[[], Meter], key: str, *args: Any, priority: int = 50,
               **kwargs: Any) -> None:
    """Log into a meter of your own: ``new_meter_fn()`` makes it, ``update(*args, **kwargs)`` feeds it."""
    for agg in get_active_aggregators():
        if key not in agg:
            agg.add_meter(key, new_meter_fn(), priority)
        agg[key].update(*args, **kwargs)


# -- reading -----------------------------------------------------------------------------------
def reset_meter(name: str, key: str) -> None:
    """Reset one meter of aggregator ``name`` (nothing if absent)."""
    meter = get_meter(name, key)
    if meter is not None:
        meter.reset()


def reset_meters(name: str) -> None:
    """Reset every meter of aggregator ``name`` (nothing if absent)."""
    meters = get_meters(name)
    if meters is not None:
        meters.reset()


def get_meter(name: str, key: str) -> Optional[Meter]:
    """The meter ``key`` of aggregator ``name``, or ``None``."""
    if name not in _aggregators:
        return None
    return _aggregators[name].get(key)


def get_meters(name: str) -> Optional[MetersDict]:
    """The meters of aggregator ``name``, or ``None`` if nothing was logged under it."""
    return _aggregators.get(name)


def get_smoothed_value(name: str, key: str) -> Any:
    """One smoothed value. Raises ``KeyError`` when absent."""
    return _aggregators[name].get_smoothed_value(key)


def get_smoothed_values(name: str) -> Dict[str, Any]:
    """Every smoothed value of aggregator ``name``. Raises ``KeyError`` when absent."""
    return _aggregators[name].get_smoothed_values()


def state_dict() -> "OrderedDict[str, Any]":
    """The state of every aggregator (derived meters are not saved)."""
    return OrderedDict((name, agg.state_dict()) for name, agg in _aggregators.items())


def load_state_dict(state_dict: Dict[str, Any]) -> None:
    """Restore what :func:`state_dict` returned (replacing aggregators of the same names)."""
    for name, agg_state in state_dict.items():
        _aggregators[name] = MetersDict()
        _aggregators[name].load_state_dict(agg_state)
        if name in _active_aggregators:
            _active_aggregators[name] = _aggregators[name]


def xla_metrics_report() -> None:
    """No-op: XLA devices are outside this project's scope."""


__all__ = [
    "AverageMeter", "Meter", "MetersDict", "StopwatchMeter", "SumMeter", "TimeMeter", "aggregate",
    "get_active_aggregators", "get_meter", "get_meters", "get_smoothed_value", "get_smoothed_values",
    "load_state_dict", "log_custom", "log_derived", "log_scalar", "log_scalar_sum", "log_speed",
    "log_start_time", "log_stop_time", "reset", "reset_meter", "reset_meters", "safe_round", "state_dict",
]
