"""A thin wrapper giving every torch optimizer the same interface."""
from typing import Any, Dict, List, Optional

import torch


def first_lr(lr: Any) -> float:
    """The first value of a per-epoch lr list (``optimization.lr``), or the value itself."""
    if isinstance(lr, (int, float)):
        return float(lr)
    values = list(lr)
    if not values:
        raise ValueError("optimization.lr is an empty list; give at least one value, e.g. [0.0005]")
    return float(values[0])


class FairseqOptimizer:
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
