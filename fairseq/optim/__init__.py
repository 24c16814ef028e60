"""Optimizers: the registry and ``build_optimizer``."""
from argparse import Namespace
from typing import Any, Iterable, Optional, Union

import torch
from omegaconf import DictConfig

from fairseq.optim.fairseq_optimizer import FairseqOptimizer
from fairseq.registry import import_submodules, setup_registry

OPTIMIZER_REGISTRY = setup_registry("optimizer", base_class=FairseqOptimizer, default="adam")


def register_optimizer(name: str, dataclass: Optional[type] = None):
    """Class decorator registering an optimizer (and its config dataclass) under ``name``."""
    return OPTIMIZER_REGISTRY.register(name, dataclass)


def build_optimizer(cfg: Union[DictConfig, Namespace, Any],
                    params: Iterable[torch.nn.Parameter]) -> FairseqOptimizer:
    """Build the optimizer ``cfg`` selects over the parameters that require gradients."""
    params = [p for p in params if p.requires_grad]
    return OPTIMIZER_REGISTRY.build(cfg, params)


import_submodules(__name__, __path__)
