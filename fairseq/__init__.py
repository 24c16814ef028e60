"""fairseq: sequence models trained from typed, composable configuration."""
__version__ = "0.1.0"

_SUBMODULES = {"checkpoint_utils", "criterions", "data", "dataclass", "logging", "models", "modules",
               "optim", "options", "registry", "tasks", "trainer", "training",
               "distributed", "distributed_utils", "file_io", "metrics", "utils"}


def __getattr__(name: str):
    """Import submodules on first use: ``import fairseq`` stays fast (no torch at import time),
    and ``fairseq.tasks.setup_task(...)`` still works without an explicit submodule import."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
