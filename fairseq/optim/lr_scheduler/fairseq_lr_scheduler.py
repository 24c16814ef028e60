"""The lr scheduler base: the trainer calls ``step_update`` after every update."""
from typing import Any, Dict, Optional

from fairseq.dataclass.flags import DataclassFlags


class FairseqLRScheduler(DataclassFlags):
    """Sets the optimizer's lr from the number of updates (and, at epoch ends, validation)."""

    def __init__(self, cfg: Any, optimizer: Any):
        self.cfg = cfg
        self.optimizer = optimizer
        self.best: Optional[float] = None

    @classmethod
    def build_lr_scheduler(cls, cfg: Any, optimizer: Any) -> "FairseqLRScheduler":
        return cls(cfg, optimizer)

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.best = state_dict.get("best")

    def step_begin_epoch(self, epoch: int) -> float:
        return self.optimizer.get_lr()

    def step(self, epoch: int, val_loss: Optional[float] = None) -> float:
        """At the end of an epoch; records the best validation loss."""
        if val_loss is not None:
            self.best = val_loss if self.best is None else min(self.best, val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates: int) -> float:
        """After update ``num_updates``; returns the lr now in force."""
        return self.optimizer.get_lr()
