"""Small meters for rates and times, cheap enough to update every step."""
import time
from typing import Optional


class AverageMeter:
    """Running weighted average."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sum = 0.0
        self.count = 0.0

    def update(self, value: float, n: float = 1) -> None:
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else 0.0


class TimeMeter:
    """Counts items per second since the meter started (or was reset)."""

    def __init__(self, init: float = 0.0) -> None:
        self.reset(init)

    def reset(self, init: float = 0.0, n: float = 0.0) -> None:
        self.init = init
        self.start = time.perf_counter()
        self.n = n

    def update(self, n: float = 1) -> None:
        self.n += n

    @property
    def elapsed_time(self) -> float:
        return self.init + (time.perf_counter() - self.start)

    @property
    def avg(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.n / elapsed if elapsed > 0 else 0.0


class StopwatchMeter:
    """Accumulates the time spent between ``start()`` and ``stop()``."""

    def __init__(self, init: float = 0.0) -> None:
        self.sum = init
        self.n = 0
        self._started: Optional[float] = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self, n: int = 1) -> None:
        if self._started is not None:
            self.sum += time.perf_counter() - self._started
            self.n += n
            self._started = None

    @property
    def elapsed_time(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.sum + running
