"""The slot through which ``from_pretrained`` on a model class reaches the hub.

``BaseFairseqModel.from_pretrained`` is fairseq's convenience on every model class, but its work
(load a checkpoint, rebuild the task, wrap the models for scoring and generation:
:mod:`fairseq.hub_utils`) sits layers above the models, and importing it from there would make
a cycle. So the models ask this slot, and the package root (``fairseq/__init__.py``, which
Python runs before any module of the package) fills it with a loader that imports
:mod:`fairseq.hub_utils` on its first call. This module imports nothing: ``import fairseq`` stays
free of torch.
"""
from typing import Any, Callable, Optional

#: ``loader(model_name_or_path, checkpoint_file, data_name_or_path, archive_map=..., **kwargs)``
#: -> the hub object (:class:`fairseq.hub_utils.GeneratorHubInterface`)
HubLoader = Callable[..., Any]

_loader: Optional[HubLoader] = None


def register_hub_loader(loader: HubLoader) -> None:
    """Install the function ``from_pretrained`` hands over to (replacing any before it)."""
    global _loader
    _loader = loader


def hub_loader() -> HubLoader:
    """The installed loader.

    Raises:
        RuntimeError: none is installed (the package root installs it when ``fairseq`` is
            imported; a test that removed it must put it back).
    """
    if _loader is None:
        raise RuntimeError("no hub loader is installed: fairseq/__init__.py installs it with "
                           "fairseq.hub_loader.register_hub_loader when the package is imported")
    return _loader


__all__ = ["HubLoader", "hub_loader", "register_hub_loader"]
