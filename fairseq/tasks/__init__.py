"""Tasks: the registry and ``setup_task``."""
import importlib
import pkgutil
from argparse import Namespace
from typing import Any, Optional, Union

from omegaconf import DictConfig

from fairseq.registry import setup_registry
from fairseq.tasks.fairseq_task import FairseqTask

TASK_REGISTRY = setup_registry("task", base_class=FairseqTask, default="language_modeling")


def register_task(name: str, dataclass: Optional[type] = None):
    """Class decorator registering a task (and its config dataclass) under ``name``."""
    return TASK_REGISTRY.register(name, dataclass)


def setup_task(cfg: Union[DictConfig, Namespace, Any], **kwargs: Any) -> FairseqTask:
    """Build the task a ``cfg.task`` node (or a legacy namespace with ``task``) selects."""
    return TASK_REGISTRY.build(cfg, **kwargs)


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_all()
