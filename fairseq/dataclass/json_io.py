"""JSON in and out of the config dataclasses (through ``dataclasses-json``).

Two uses:

* a run writes its resolved config as ``config.json`` beside its checkpoints
  (:func:`save_config_json`), and :func:`load_config_json` reads it back into the typed config;
* the ``cfg`` dict of a checkpoint (ours, or fairseq 0.12's, whose nodes carry fields this
  package does not have and values in fairseq's string forms) becomes the typed run config
  (:func:`config_from_dict`).

Values are decoded field by field against the dataclass of their node: sequences written as
strings (``adam_betas: '(0.9, 0.98)'``, ``update_freq: '1,2'``) are parsed as literals (never
evaluated), choice strings become their enum members, numbers keep their type. Fields the
dataclasses lack are collected over the whole config and named in one warning, then dropped.
"""
import functools
import json
import logging
import os
import typing
from dataclasses import fields, is_dataclass, make_dataclass
from typing import Any, Dict, List, Optional

from dataclasses_json import DataClassJsonMixin
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fairseq.dataclass.configs import COMPONENT_GROUPS, GENERIC_GROUPS
from fairseq.errors import ConfigError

logger = logging.getLogger(__name__)

CONFIG_JSON = "config.json"

# Nodes whose values decide what a model computes: a value there that cannot be read is an
# error; anywhere else it is dropped (with the unknown fields) and the default is kept.
STRICT_GROUPS = ("model", "task")


class ConfigValueError(ConfigError):
    """A saved config value that does not fit its field (names the key, the value and why)."""


@functools.lru_cache(maxsize=None)
def _field_schema(dc_type: type, name: str) -> type:
    """A one-field dataclass with the type of ``dc_type.name`` (no default), so that a value is
    decoded against its field alone, whatever the other fields' defaults (interpolations)."""
    f = next(f for f in fields(dc_type) if f.name == name)
    return make_dataclass(f"{dc_type.__name__}_{name}", [(name, f.type)])


def _decode_value(dc_type: type, name: str, value: Any) -> Any:
    """``value`` of field ``name`` of ``dc_type`` decoded by dataclasses-json."""
    schema = _field_schema(dc_type, name)
    decoded = DataClassJsonMixin.from_dict.__func__(schema, {name: value})  # type: ignore[attr-defined]
    return getattr(decoded, name)


def _encode(instance: Any) -> Dict[str, Any]:
    """A dataclass instance as JSON-ready containers (enums as their strings)."""
    return DataClassJsonMixin.to_dict(instance, encode_json=True)  # type: ignore[arg-type]


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)


def _is_list(tp: Any) -> bool:
    args = typing.get_args(tp) if _is_optional(tp) else (tp,)
    return any(typing.get_origin(a) in (list, List) for a in args)


def node_dataclass(group: str, name: Optional[str]) -> Optional[type]:
    """The dataclass of config node ``group`` (for a component group: of component ``name``)."""
    if group in GENERIC_GROUPS:
        return GENERIC_GROUPS[group]
    if group not in COMPONENT_GROUPS or not name:
        return None
    from fairseq.registry import import_builtin_components as import_components
    from fairseq.registry import ALL_REGISTRIES

    import_components()
    registry = ALL_REGISTRIES.get(group)
    if registry is None or name not in registry:
        return None
    return registry.get(name).dataclass


def decode_node(dc_type: type, values: Dict[str, Any], prefix: str,
                dropped: List[str]) -> Dict[str, Any]:
    """The values of one saved node, typed for ``dc_type``'s fields.

    Args:
        dc_type: the node's dataclass.
        values: the saved ``{field: value}`` (plain JSON-like values).
        prefix: the node's key (``"optimizer."``) for messages.
        dropped: receives ``prefix + field`` for every field ``dc_type`` lacks, and
            ``prefix + field=value`` for values that cannot be read in a non-strict node.

    Returns:
        ``{field: value}`` for the fields of ``values`` that ``dc_type`` has (``_name`` left
        out), decoded: sequences parsed from their string forms, choices as enum members.

    Raises:
        ConfigValueError: a value of a strict node (``model``, ``task``) does not fit its field.
    """
    from fairseq.dataclass.values import coerce_legacy_value

    strict = prefix.rstrip(".") in STRICT_GROUPS
    known = {f.name: f for f in fields(dc_type)}
    given: Dict[str, Any] = {}
    for key, value in values.items():
        if key == "_name":
            continue
        if key not in known:
            dropped.append(prefix + key)
            continue
        f = known[key]
        if value is None and not _is_optional(f.type) and f.type is not Any:
            continue  # fairseq writes None for "unset"; ours has a real default there
        try:
            value = coerce_legacy_value(f, value)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and _is_list(f.type):
                value = [value]  # old checkpoints hold a bare float lr
            decoded = _decode_value(dc_type, key, value)
        except (ValueError, TypeError, SyntaxError) as e:
            if strict:
                raise ConfigValueError(f"{prefix}{key}={value!r} cannot be read: {e}") from None
            dropped.append(f"{prefix}{key}={value!r}")
            continue
        given[key] = decoded
    return given


def _set_values(node: DictConfig, values: Dict[str, Any], prefix: str, dropped: List[str]) -> None:
    for key, value in values.items():
        try:
            node[key] = value
        except OmegaConfBaseException as e:
            if prefix.rstrip(".") in STRICT_GROUPS:
                raise ConfigValueError(f"{prefix}{key}={value!r} does not fit: "
                                       f"{str(e).splitlines()[0]}") from None
            dropped.append(f"{prefix}{key}={value!r}")


def config_from_dict(saved: Dict[str, Any], source: str = "the saved config",
                     dropped: Optional[List[str]] = None) -> DictConfig:
    """The typed run config from a saved plain config dict.

    The components the dict names (``task``, ``model``, ``criterion``, ``optimizer``,
    ``lr_scheduler``, each by its ``_name``) are composed as the Hydra door composes them, then
    every saved value is decoded (:func:`decode_node`) and set on top. Keys absent from the dict
    keep the current defaults (interpolations included). Fields, values or whole nodes this
    version does not have are named in one warning.

    Args:
        saved: ``{"common": {...}, "model": {"_name": "transformer_lm", ...}, ...}``.
        source: where the dict comes from, for the warning.
        dropped: a list that already holds dropped keys (they join the one warning).

    Raises:
        ConfigValueError: a value of the model or task node does not fit its field.
        UnknownChoiceError: a component name that is not registered.
    """
    from fairseq.dataclass.compose import compose_config

    dropped = [] if dropped is None else dropped
    components = []
    for group in COMPONENT_GROUPS:
        node = saved.get(group)
        if isinstance(node, dict) and node.get("_name"):
            if node_dataclass(group, str(node["_name"])) is None and group not in STRICT_GROUPS:
                dropped.append(f"{group} ({node['_name']}: not available here; default used)")
                continue
            components.append(f"{group}={node['_name']}")
    cfg = compose_config(components)
    chosen = {c.split("=", 1)[0] for c in components}
    for group, values in saved.items():
        if group == "_name":
            continue
        if group not in GENERIC_GROUPS and group not in chosen:
            if group not in COMPONENT_GROUPS and values is not None:
                dropped.append(f"{group} (whole node)")
            continue
        if not isinstance(values, dict):
            continue
        dc_type = node_dataclass(group, values.get("_name"))
        if dc_type is None:
            continue
        prefix = f"{group}."
        _set_values(cfg[group], decode_node(dc_type, values, prefix, dropped), prefix, dropped)
    if dropped:
        logger.warning("%s has config keys this version does not have; ignored: %s",
                       source, ", ".join(dropped))
    return cfg


# -- config.json ------------------------------------------------------------------------------
def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """The resolved config as JSON-ready containers, each node encoded through its dataclass."""
    if is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = OmegaConf.structured(cfg)
    out: Dict[str, Any] = {}
    for group in cfg.keys():
        node = cfg[group]
        if isinstance(node, DictConfig) and OmegaConf.get_type(node) not in (None, dict):
            out[str(group)] = _encode(OmegaConf.to_object(node))
        elif isinstance(node, DictConfig):
            out[str(group)] = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
        else:
            out[str(group)] = node
    return out


def config_to_json(cfg: Any) -> str:
    """:func:`config_to_dict` as indented JSON text."""
    return json.dumps(config_to_dict(cfg), indent=2, sort_keys=False) + "\n"


def save_config_json(cfg: Any, save_dir: str) -> str:
    """Write ``cfg`` as ``save_dir/config.json`` atomically (temporary file, fsync, rename).

    Returns:
        The path written.
    """
    from fairseq.file_io import atomic_write

    path = os.path.join(save_dir, CONFIG_JSON)
    text = config_to_json(cfg).encode("utf-8")
    atomic_write(path, lambda f: f.write(text))
    return path


def load_config_json(path: str) -> DictConfig:
    """Read a ``config.json`` (written by :func:`save_config_json`) into the typed config.

    Raises:
        ConfigValueError: the file is not JSON or does not hold a config object.
    """
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigValueError(f"cannot read config file {path}: {e}") from None
    if not isinstance(saved, dict):
        raise ConfigValueError(f"{path} does not hold a config object (found {type(saved).__name__})")
    return config_from_dict(saved, source=path)


__all__ = [
    "CONFIG_JSON", "ConfigValueError", "config_from_dict", "config_to_dict", "config_to_json",
    "decode_node", "load_config_json", "node_dataclass", "save_config_json",
]
