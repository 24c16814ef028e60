"""Dynamic loss scaling for float16 training.

The loss is multiplied by ``scale`` before backward so small float16 gradients do not underflow.
An update whose gradients overflow (inf/nan) is skipped and the scale divided by
``scale_factor`` (once the share of overflowing updates since the last change reaches
``tolerance``); after ``scale_window`` updates without overflow it is multiplied back.
"""
from typing import Any, Dict, Optional


class DynamicLossScaler:
    def __init__(self, init_scale: float = 2.0**7, scale_factor: float = 2.0, scale_window: int = 2000,
                 tolerance: float = 0.0, threshold: Optional[float] = None,
                 min_loss_scale: float = 1e-4):
        self.loss_scale = float(init_scale)
        self.scale_factor = scale_factor
        self.scale_window = max(int(scale_window), 1)
        self.tolerance = tolerance
        self.threshold = threshold
        self.min_loss_scale = min_loss_scale
        self._iter = 0
        self._last_overflow_iter = -1
        self._last_rescale_iter = -1
        self._overflows_since_rescale = 0

    def update(self, overflow: bool) -> None:
        """Record one step; lower the scale after an overflow, raise it after a quiet window."""
        if overflow:
            self._last_overflow_iter = self._iter
            self._overflows_since_rescale += 1
            since_rescale = self._iter - self._last_rescale_iter
            if self._overflows_since_rescale / float(since_rescale) >= self.tolerance:
                self.loss_scale /= self.scale_factor
                self._last_rescale_iter = self._iter
                self._overflows_since_rescale = 0
        elif (self._iter - self._last_overflow_iter) % self.scale_window == 0:
            self.loss_scale *= self.scale_factor
            if self.threshold is not None:
                self.loss_scale = min(self.loss_scale, float(self.threshold))
            self._last_rescale_iter = self._iter
        self._iter += 1

    def below_minimum(self) -> bool:
        return self.loss_scale < self.min_loss_scale

    def state_dict(self) -> Dict[str, Any]:
        return {"loss_scale": self.loss_scale, "iter": self._iter,
                "last_overflow_iter": self._last_overflow_iter,
                "last_rescale_iter": self._last_rescale_iter,
                "overflows_since_rescale": self._overflows_since_rescale}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.loss_scale = float(state["loss_scale"])
        self._iter = int(state["iter"])
        self._last_overflow_iter = int(state["last_overflow_iter"])
        self._last_rescale_iter = int(state["last_rescale_iter"])
        self._overflows_since_rescale = int(state["overflows_since_rescale"])
