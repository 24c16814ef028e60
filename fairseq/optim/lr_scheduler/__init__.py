"""Learning-rate schedulers: the registry and ``build_lr_scheduler``."""
from argparse import Namespace
from typing import Any, Optional, Union

from omegaconf import DictConfig

from fairseq.optim.lr_scheduler.fairseq_lr_scheduler import FairseqLRScheduler
from fairseq.registry import import_submodules, setup_registry

LR_SCHEDULER_REGISTRY = setup_registry("lr_scheduler", base_class=FairseqLRScheduler, default="fixed")


def register_lr_scheduler(name: str, dataclass: Optional[type] = None):
    """Class decorator registering an lr scheduler (and its config dataclass) under ``name``."""
    return LR_SCHEDULER_REGISTRY.register(name, dataclass)


def build_lr_scheduler(cfg: Union[DictConfig, Namespace, Any], optimizer: Any) -> FairseqLRScheduler:
    return LR_SCHEDULER_REGISTRY.build(cfg, optimizer)


import_submodules(__name__, __path__)
