"""What a config file may not do: run code or write outside the run's directories.

A Hydra config is data, but some of its keys are code: ``_target_`` (Hydra instantiates the
object it names), ``hydra.callbacks`` (objects Hydra builds and calls around the run), and the
``class`` and ``()`` factories of ``hydra.job_logging`` / ``hydra.hydra_logging`` (Python's
``logging.config`` builds them; a ``logging.FileHandler`` with ``mode: w`` truncates any file it
is pointed at). A YAML file in a shared ``--config-dir`` could use them to write any file, or
to drop a ``.pth`` in site-packages that runs at the next Python start.

:func:`check_config_code` refuses all of these unless the run's command line says
``--allow-config-code``, except what Hydra's own plugins bring: launchers and sweepers from
``hydra_plugins``, their samplers and pruners, Hydra's core plugins, the standard logging
handlers and formatters, and a log file in the run's own output directory.
:func:`check_yaml_size` refuses a YAML document whose aliases expand to too many nodes (a
"billion laughs" file would otherwise exhaust memory during composition).
"""
import os
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from fairseq.errors import ConfigError

__all__ = ["ALLOW_FLAG", "MAX_YAML_NODES", "check_config_code", "check_yaml_size"]

#: the command-line flag that allows code in config files
ALLOW_FLAG = "--allow-config-code"
#: the most nodes a YAML document may expand to (aliases counted at every use)
MAX_YAML_NODES = 200_000

# the modules whose objects a config may name without the flag: Hydra's plugins and their parts
_SAFE_TARGETS = ("hydra._internal.core_plugins.", "hydra_plugins.", "optuna.samplers.", "optuna.pruners.")
_SAFE_LOGGING_CLASSES = {"logging.StreamHandler", "logging.FileHandler", "logging.NullHandler",
                         "logging.Formatter", "logging.handlers.RotatingFileHandler",
                         "logging.handlers.WatchedFileHandler"}
_SAFE_FACTORIES = ("colorlog.ColoredFormatter",)  # hydra_colorlog's formatter
_RUN_DIRS = ("${hydra.runtime.output_dir}", "${hydra:runtime.output_dir}")


def _items(node: Any, path: str) -> Iterator[Tuple[str, str, Any]]:
    """``(path, key, value)`` of every mapping entry under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, str(key), value
            yield from _items(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _items(value, f"{path}[{i}]")


def _refusals(job: Any, hydra: Any) -> List[str]:
    found = []
    for path, key, value in _items(job, ""):
        if key == "_target_":
            found.append(f"{path}._target_={value}")
    if hydra is None:
        return found
    if hydra.get("callbacks"):
        found.append(f"hydra.callbacks ({', '.join(map(str, hydra['callbacks']))})")
    for path, key, value in _items({k: v for k, v in hydra.items() if k != "callbacks"}, "hydra"):
        if key == "_target_" and not str(value).startswith(_SAFE_TARGETS):
            found.append(f"{path}._target_={value}")
        if ".job_logging" not in path and ".hydra_logging" not in path:
            continue
        if key == "()" and str(value) not in _SAFE_FACTORIES:
            found.append(f"{path}.()={value}")
        if key == "class" and str(value) not in _SAFE_LOGGING_CLASSES:
            found.append(f"{path}.class={value}")
        if key == "filename" and not str(value).startswith(_RUN_DIRS):
            found.append(f"{path}.filename={value} (outside the run's directory)")
    return found


def check_config_code(cfg: DictConfig, allowed: bool, where: str) -> None:
    """Refuse what in ``cfg`` (composed with its ``hydra`` node) would run code or write
    outside the run's directories, unless ``allowed`` (:data:`ALLOW_FLAG` was given).

    Raises:
        ConfigError: naming the first such key, where it came from and the flag.
    """
    if allowed:
        return
    container = OmegaConf.to_container(cfg, resolve=False)
    hydra = container.pop("hydra", None)
    found = _refusals(container, hydra)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"{found[0]}{more}: {where} would run code or write outside the run's "
                          "directories, which a config may not do by default; remove it, or pass "
                          f"{ALLOW_FLAG} if you trust every YAML file of this run")


def _expanded_size(node: Any, sizes: dict, limit: int) -> int:
    """The number of nodes ``node`` becomes once every alias is expanded (stops past ``limit``)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = 1  # a recursive alias counts once here; the YAML loader refuses it anyway
    total = 1
    value = getattr(node, "value", None)
    if isinstance(value, list):
        for item in value:
            children = item if isinstance(item, tuple) else (item,)
            for child in children:
                total += _expanded_size(child, sizes, limit)
                if total > limit:
                    break
    sizes[key] = total
    return total


def check_yaml_size(config_dir: Optional[str], limit: int = MAX_YAML_NODES) -> None:
    """Refuse a YAML file under ``config_dir`` whose aliases expand to more than ``limit`` nodes.

    Raises:
        ConfigError: naming the file and its expanded size.
    """
    import yaml

    if not config_dir or not os.path.isdir(config_dir):
        return
    for path in sorted(Path(config_dir).rglob("*.yaml")) + sorted(Path(config_dir).rglob("*.yml")):
        try:
            with open(path, "rb") as f:
                documents = list(yaml.compose_all(f, Loader=yaml.SafeLoader))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue  # composition reports a malformed or unreadable file with its own message
        for document in documents:
            size = _expanded_size(document, {}, limit) if document is not None else 0
            if size > limit:
                raise ConfigError(f"{path}: its aliases expand to more than {limit:,} nodes; a config "
                                  "this large is refused (a YAML alias bomb?): write the values out")
