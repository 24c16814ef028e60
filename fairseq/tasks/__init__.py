"""Tasks: the registry and ``setup_task``."""
from argparse import Namespace
from typing import Any, Optional, Union

from omegaconf import DictConfig

from fairseq.registry import import_submodules, setup_registry
from fairseq.tasks.fairseq_task import FairseqTask

TASK_REGISTRY = setup_registry("task", base_class=FairseqTask, default="language_modeling")


def register_task(name: str, dataclass: Optional[type] = None):
    """Class decorator registering a task (and its config dataclass) under ``name``."""
    return TASK_REGISTRY.register(name, dataclass)


def setup_task(cfg: Union[DictConfig, Namespace, Any], **kwargs: Any) -> FairseqTask:
    """Build the task a ``cfg.task`` node (or a legacy namespace with ``task``) selects."""
    return TASK_REGISTRY.build(cfg, **kwargs)


import_submodules(__name__, __path__)

from fairseq.tasks.legacy import LegacyFairseqTask as LegacyFairseqTask  # noqa: E402  (fairseq's import path)
