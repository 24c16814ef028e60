"""``LegacyFairseqTask``: the base of tasks configured by a flat ``argparse.Namespace``.

Tasks written for fairseq's older API declare their flags in ``add_args(parser)`` and read them
from ``self.args``, with no config dataclass. Registered with ``@register_task("name")`` (no
``dataclass=``), their ``add_args`` flags are offered once ``--task name`` is chosen, and
``fairseq.tasks.setup_task(args)`` builds them from the namespace.
"""
import os
from argparse import ArgumentParser, Namespace
from typing import Any, Dict

from fairseq.tasks.fairseq_task import FairseqTask


class LegacyFairseqTask(FairseqTask):
    """A task whose configuration is the legacy namespace ``args`` (also ``self.cfg``).

    Args:
        args: the parsed command line.
    """

    def __init__(self, args: Namespace):
        super().__init__(args)
        self.args = args
        self.datasets: Dict[str, Any] = {}
        self.dataset_to_epoch_iter: Dict[Any, Any] = {}

    @classmethod
    def add_args(cls, parser: ArgumentParser) -> None:
        """Add this task's flags to ``parser`` (override; nothing by default)."""

    @classmethod
    def setup_task(cls, args: Namespace, **kwargs: Any) -> "LegacyFairseqTask":
        """Build the task (subclasses load dictionaries here)."""
        return cls(args, **kwargs)

    def has_sharded_data(self, split: str) -> bool:
        """Whether ``args.data`` lists several shards (``path1:path2``)."""
        # optional: a legacy task's Namespace comes from its own add_args, which may not define data
        return os.pathsep in str(getattr(self.args, "data", "") or "")

    def build_model(self, args: Namespace, from_checkpoint: bool = False):
        """Build the model ``args.arch`` names, for this task."""
        from fairseq import models

        del from_checkpoint
        return models.build_model(args, self)

    def build_criterion(self, args: Namespace):
        """Build the criterion ``args.criterion`` names, for this task."""
        from fairseq import criterions

        return criterions.build_criterion(args, self)


__all__ = ["LegacyFairseqTask"]
