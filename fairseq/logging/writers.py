"""Optional metric sinks beside the log lines: TensorBoard and Weights & Biases.

TensorBoard needs the ``tensorboard`` package and Weights & Biases the ``wandb`` package; they
are imported only when ``common.tensorboard_logdir`` or ``common.wandb_project`` is set, and a
missing package gives one warning instead of a crash.
"""
import logging
import numbers
import os
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)


class MetricWriters:
    """Writes each tagged group of scalars (``train_inner``, ``train``, ``valid``) to the sinks."""

    def __init__(self, common: Optional[Any]):
        self.logdir = getattr(common, "tensorboard_logdir", None) if common is not None else None
        self._tb: Dict[str, Any] = {}
        self._wandb = None
        project = getattr(common, "wandb_project", None) if common is not None else None
        if self.logdir:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError:
                logger.warning("common.tensorboard_logdir is set but the tensorboard package is not "
                               "installed (pip install tensorboard): no TensorBoard events")
                self.logdir = None
        if project:
            try:
                import wandb
            except ImportError:
                logger.warning("common.wandb_project is set but the wandb package is not installed "
                               "(pip install wandb): not logging to Weights & Biases")
            else:
                self._wandb = wandb.init(project=project, reinit=True)

    def _writer(self, tag: str):
        if tag not in self._tb:
            from torch.utils.tensorboard import SummaryWriter

            self._tb[tag] = SummaryWriter(os.path.join(self.logdir, tag))
        return self._tb[tag]

    def log(self, tag: str, stats: Dict[str, Any], step: int) -> None:
        scalars = {k: float(v) for k, v in stats.items()
                   if isinstance(v, numbers.Number) and not isinstance(v, bool)}
        if self.logdir:
            writer = self._writer(tag)
            for key, value in scalars.items():
                writer.add_scalar(key, value, step)
            writer.flush()
        if self._wandb is not None:
            self._wandb.log({f"{tag}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        for writer in self._tb.values():
            writer.close()
        self._tb.clear()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
