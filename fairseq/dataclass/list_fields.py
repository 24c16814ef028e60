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

__all__ = ["is_number", "list_fields", "sequence_field", "wrap_override_scalar", "wrap_scalars_for_lists"]


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


def wrap_scalars_for_lists(cfg: DictConfig, package: str) -> None:
    """In a YAML config placed at ``package``, make a number given for a list field a
    one-element list (``optimization: {lr: 0.001}`` means ``lr: [0.001]``, as ``--lr 0.001``)."""
    from omegaconf import OmegaConf

    prefix = f"{package}." if package else ""
    for path in list_fields():
        if not path.startswith(prefix):
            continue
        node: object = cfg
        for part in path[len(prefix):].split("."):
            if not isinstance(node, DictConfig) or part not in node.keys():
                node = None
                break
            node = node._get_node(part)
        value = node._value() if node is not None and not isinstance(node, DictConfig) else None
        if is_number(value):
            OmegaConf.update(cfg, path[len(prefix):], [value], merge=False)


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

