"""A thin wrapper giving every torch optimizer the same interface."""
from typing import Any, Dict, List, Optional

import torch

from fairseq.dataclass.flags import DataclassFlags
from fairseq.errors import ConfigError


def first_lr(lr: Any) -> float:
    """The first value of a per-epoch lr list (``optimization.lr``), or the value itself."""
    if isinstance(lr, (int, float)):
        return float(lr)
    values = list(lr)
    if not values:
        raise ConfigError("optimization.lr is an empty list; give at least one value, e.g. [0.0005]")
    return float(values[0])


class FairseqOptimizer(DataclassFlags):
    """Wraps ``self._optimizer`` (a ``torch.optim.Optimizer``) built by a subclass."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self._optimizer: Optional[torch.optim.Optimizer] = None

    @classmethod
    def build_optimizer(cls, cfg: Any, params: List[torch.nn.Parameter]) -> "FairseqOptimizer":
        return cls(cfg, params)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            raise RuntimeError("the optimizer has not been built")
        return self._optimizer

    @property
    def params(self):
        for group in self.optimizer.param_groups:
            yield from group["params"]

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> Dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore the state; the lr stays whatever the scheduler sets next."""
        lr = self.get_lr()
        self.optimizer.load_state_dict(state_dict)
        self.set_lr(lr)

    def step(self) -> None:
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)


def check_non_negative(cfg: Any, *keys: str) -> None:
    """Raise unless every ``optimizer.<key>`` of ``cfg`` is a number >= 0.

    Raises:
        ConfigError: naming the first offending key and its value.
    """
    for key in keys:
        value = float(getattr(cfg, key))
        if not value >= 0.0:  # also catches NaN
            raise ConfigError(f"optimizer.{key}={value}: must be >= 0")


def fast_path(params: List[torch.nn.Parameter]) -> Dict[str, bool]:
    """``{"fused": True}`` when every parameter is a floating tensor on one CPU or CUDA device.

    Otherwise ``{"foreach": True}``, which works for any mix of devices and dtypes. Both give
    the same result as the per-parameter loop, only faster.
    """
    devices = {p.device.type for p in params}
    if len(devices) == 1 and devices <= {"cuda", "cpu"} and all(p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}
