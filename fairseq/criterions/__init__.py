"""Criterions (losses): the registry and ``build_criterion``."""
import importlib
import pkgutil
from argparse import Namespace
from typing import Any, Optional, Union

from omegaconf import DictConfig

from fairseq.criterions.fairseq_criterion import FairseqCriterion
from fairseq.registry import setup_registry

CRITERION_REGISTRY = setup_registry("criterion", base_class=FairseqCriterion, default="cross_entropy")


def register_criterion(name: str, dataclass: Optional[type] = None):
    """Class decorator registering a criterion (and its config dataclass) under ``name``."""
    return CRITERION_REGISTRY.register(name, dataclass)


def build_criterion(cfg: Union[DictConfig, Namespace, Any], task: Any) -> FairseqCriterion:
    return CRITERION_REGISTRY.build(cfg, task)


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_all()
