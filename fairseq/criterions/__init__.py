"""Criterions (losses): the registry and ``build_criterion``."""
from argparse import Namespace
from typing import Any, Optional, Union

from omegaconf import DictConfig

from fairseq.criterions.fairseq_criterion import FairseqCriterion
from fairseq.registry import import_submodules, setup_registry

CRITERION_REGISTRY = setup_registry("criterion", base_class=FairseqCriterion, default="cross_entropy")


def register_criterion(name: str, dataclass: Optional[type] = None):
    """Class decorator registering a criterion (and its config dataclass) under ``name``."""
    return CRITERION_REGISTRY.register(name, dataclass)


def build_criterion(cfg: Union[DictConfig, Namespace, Any], task: Any) -> FairseqCriterion:
    return CRITERION_REGISTRY.build(cfg, task)


import_submodules(__name__, __path__)
