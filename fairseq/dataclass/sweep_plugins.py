"""The optional Hydra plugins (``pip install 'fairseq[sweep]'``): a sweeper or launcher chosen
without its package installed stops with one line naming what to install."""
import importlib.util
from typing import Dict, Sequence, Tuple

# (group, choice) -> (the plugin's module under hydra_plugins, its PyPI package)
PLUGINS: Dict[Tuple[str, str], Tuple[str, str]] = {
    ("hydra/sweeper", "optuna"): ("hydra_optuna_sweeper", "hydra-optuna-sweeper"),
    ("hydra/sweeper", "ax"): ("hydra_ax_sweeper", "hydra-ax-sweeper"),
    ("hydra/sweeper", "nevergrad"): ("hydra_nevergrad_sweeper", "hydra-nevergrad-sweeper"),
    ("hydra/launcher", "joblib"): ("hydra_joblib_launcher", "hydra-joblib-launcher"),
    ("hydra/launcher", "submitit_local"): ("hydra_submitit_launcher", "hydra-submitit-launcher"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_submitit_launcher", "hydra-submitit-launcher"),
    ("hydra/launcher", "ray"): ("hydra_ray_launcher", "hydra-ray-launcher"),
    ("hydra/launcher", "rq"): ("hydra_rq_launcher", "hydra-rq-launcher"),
}
# the ones fairseq[sweep] installs
SWEEP_EXTRA = {"hydra-optuna-sweeper", "hydra-joblib-launcher", "hydra-submitit-launcher"}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(f"hydra_plugins.{module}") is not None
    except ModuleNotFoundError:
        return False


def check_plugins(overrides: Sequence[str]) -> None:
    """Raise :class:`~fairseq.dataclass.overrides.ConfigError` for a sweeper or launcher choice
    (``hydra/sweeper=optuna``, ``hydra/launcher=submitit_slurm``, ...) whose plugin is missing."""
    from fairseq.errors import ConfigError

    for text in overrides:
        if "=" not in text:
            continue
        key, value = text.split("=", 1)
        key = key.lstrip("~+")
        plugin = PLUGINS.get((key, value.strip()))
        if plugin is None or installed(plugin[0]):
            continue
        module, package = plugin
        how = ("pip install 'fairseq[sweep]'" if package in SWEEP_EXTRA else f"pip install {package}")
        raise ConfigError(f"{key}={value} needs the Hydra plugin {package}, which is not installed: "
                          f"{how}")
