"""The one rule for list-valued fields: a number given where a list is expected is a
one-element list (``optimization.lr=0.001`` means ``[0.001]``, as ``--lr 0.001`` does).

It applies to YAML files (:func:`wrap_scalars_for_lists`) and to overrides
(:func:`wrap_override_scalar`), both through :mod:`fairseq.dataclass.hydra_hooks`.
"""
import dataclasses
import functools
import typing
from typing import Any, List, Tuple

from omegaconf import DictConfig

from fairseq.dataclass.configs import FairseqConfig
from fairseq.dataclass.values import field_python_type

__all__ = ["component_list_fields", "is_number", "list_fields", "literal_sequence", "sequence_field",
           "wrap_override_scalar", "wrap_scalars_for_lists"]


def sequence_field(f: dataclasses.Field) -> Tuple[bool, Any]:
    """``(True, item type)`` for a list or tuple field, ``(False, None)`` for any other."""
    tp = field_python_type(f)
    if typing.get_origin(tp) in (list, tuple, List, Tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return True, args[0] if args else str
    return False, None


def is_number(value: Any) -> bool:
    """A number the rule applies to (``True``/``False`` are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@functools.lru_cache(maxsize=None)
def list_fields() -> frozenset:
    """Dotted paths of the list-valued fields of the top-level config (``optimization.lr``)."""
    paths = set()
    for group in dataclasses.fields(FairseqConfig):
        schema = field_python_type(group)
        if not dataclasses.is_dataclass(schema):
            continue
        for f in dataclasses.fields(schema):
            if sequence_field(f)[0]:
                paths.add(f"{group.name}.{f.name}")
    return frozenset(paths)


def component_list_fields() -> frozenset:
    """Dotted paths of the list-valued fields of registered components (``optimizer.adam_betas``:
    a list field of some optimizer), plugins included (so not cached)."""
    from fairseq.registry import ALL_REGISTRIES

    paths = set()
    for group, registry in ALL_REGISTRIES.items():
        for name in registry.choices():
            schema = registry.get(name).dataclass
            if schema is not None and dataclasses.is_dataclass(schema):
                paths.update(f"{group}.{f.name}" for f in dataclasses.fields(schema) if sequence_field(f)[0])
    return frozenset(paths)


def literal_sequence(value: Any) -> Any:
    """The list a tuple- or list-like string stands for (``"(0.9,0.98)"`` -> ``[0.9, 0.98]``, as
    on the command line and in fairseq's example YAML files), read as a literal only; anything
    else unchanged (the schema's check then names it)."""
    import ast

    if not isinstance(value, str):
        return value
    text = value.strip()
    if (text[:1], text[-1:]) not in (("(", ")"), ("[", "]")):
        return value
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value
    return list(parsed) if isinstance(parsed, (tuple, list)) else value


def wrap_scalars_for_lists(cfg: DictConfig, package: str) -> None:
    """In a YAML config placed at ``package``, make a number given for a list field a
    one-element list (``optimization: {lr: 0.001}`` means ``lr: [0.001]``, as ``--lr 0.001``),
    and a tuple-like string the list it writes (``adam_betas: (0.9,0.98)``, fairseq's style)."""
    from omegaconf import OmegaConf

    prefix = f"{package}." if package else ""
    for path in list_fields() | component_list_fields():
        if not path.startswith(prefix):
            continue
        # Hydra hands some files over already placed at their package ({optimizer: {...}} for a
        # `# @package _group_` file), others as written: the key is looked up both ways
        for key in (path, path[len(prefix):]) if prefix else (path,):
            value = _leaf(cfg, key)
            if is_number(value):
                OmegaConf.update(cfg, key, [value], merge=False)
            elif literal_sequence(value) is not value:
                OmegaConf.update(cfg, key, literal_sequence(value), merge=False)
            else:
                continue
            break


def _leaf(cfg: DictConfig, key: str) -> Any:
    """The plain value at dotted ``key`` of ``cfg`` (None if absent, a node, or an interpolation)."""
    node: object = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return None
        node = node._get_node(part)
    return node._value() if not isinstance(node, DictConfig) else None


def wrap_override_scalar(override):
    """``override`` itself, or, for a number given to a list field (``optimization.lr=0.001``),
    a copy whose value is the one-element list ``[0.001]``."""
    from hydra.core.override_parser.types import ValueType

    value = override._value
    if (override.value_type != ValueType.ELEMENT or override.is_delete() or override.package is not None
            or not is_number(value)
            or override.key_or_group not in list_fields()):
        return override
    return dataclasses.replace(override, _value=[value])

