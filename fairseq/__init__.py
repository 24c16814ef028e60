"""fairseq: sequence models trained from typed, composable configuration."""
from typing import Any

from fairseq.hub_loader import register_hub_loader as _register_hub_loader

__version__ = "0.1.0"

_SUBMODULES = {"checkpoint_utils", "criterions", "data", "dataclass", "logging", "models", "modules",
               "optim", "options", "registry", "tasks", "trainer", "training",
               "distributed", "distributed_utils", "file_io", "metrics", "utils"}


def __getattr__(name: str):
    """Import submodules on first use: ``import fairseq`` stays fast (no torch at import time),
    and ``fairseq.tasks.setup_task(...)`` still works without an explicit submodule import, as
    with fairseq 0.12 (whose root imported them all). The names are the root's own submodules,
    and no module imports the root, so these imports cannot close a cycle
    (tests/test_hidden_imports.py checks both)."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load_hub(model_name_or_path: str, checkpoint_file: str, data_name_or_path: str, **kwargs: Any) -> Any:
    """What ``BaseFairseqModel.from_pretrained`` does, by :mod:`fairseq.hub_utils` (imported on
    the first call: it needs torch, and it sits above the models, which reach it through
    :mod:`fairseq.hub_loader`)."""
    from fairseq import hub_utils

    loaded = hub_utils.from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, **kwargs)
    kwargs.pop("archive_map", None)
    return hub_utils.GeneratorHubInterface(loaded["cfg"], loaded["task"], loaded["models"], **kwargs)


_register_hub_loader(_load_hub)
