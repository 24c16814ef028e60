"""Reading values into typed config fields: a field's type, a reader's name for it, and the
legacy string forms of sequences (``"(0.9, 0.98)"``, ``"1,2"``), parsed as literals only.

The bottom of the config layer: it imports no other config module.
"""
import ast
import dataclasses
import enum
import typing
from typing import Any, Callable, List, Optional, Tuple, Union

from omegaconf import MISSING as OC_MISSING, OmegaConf

__all__ = ["coerce_legacy_value", "describe_type", "field_default", "field_python_type", "interpolation_target",
           "parse_sequence"]


# -- value parsing shared by both doors ---------------------------------------------------------
def parse_sequence(value: Union[str, List[Any], Tuple[Any, ...]], item_type: Callable = str) -> List[Any]:
    """Parse a sequence given as a list, a tuple, ``"(0.9, 0.98)"``, ``"[1, 2]"`` or ``"1,2"``.

    Strings are read with :func:`ast.literal_eval` (never ``eval``), so only literals pass.

    Raises:
        ValueError: when the string is not a literal sequence of ``item_type`` values.
    """
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        return [item_type(v) for v in value]
    text = str(value).strip()
    if text[:1] in "([":
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{text!r} is not a literal list or tuple") from e
        if not isinstance(parsed, (list, tuple)):
            raise ValueError(f"{text!r} is not a list or tuple")
        return [item_type(v) for v in parsed]
    return [item_type(v.strip()) for v in text.split(",") if v.strip()]


def coerce_legacy_value(f: dataclasses.Field, value: Any) -> Any:
    """A value from a legacy namespace made fit for the field: sequences given as strings
    (``"(0.9, 0.98)"``, ``"1,2"``) become lists; enum members become their names."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str):
        tp = field_python_type(f)
        if typing.get_origin(tp) in (list, tuple, List, Tuple):
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            item = {int: int, float: float}.get(args[0] if args else str, str)
            return parse_sequence(value, item)
    return value


def unwrap_optional(tp: Any) -> Tuple[Any, bool]:
    """``(X, True)`` for ``Optional[X]``; ``(tp, False)`` otherwise."""
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def field_python_type(f: dataclasses.Field) -> Any:
    """The field's type with ``Optional`` removed (resolving string annotations)."""
    tp = f.type
    if isinstance(tp, str):  # from __future__ annotations
        tp = eval(tp, vars(typing))  # noqa: S307 -- our own annotations, not user input
    return unwrap_optional(tp)[0]


def type_name(tp: Any) -> str:
    """A type annotation as a message names it (``int``, ``list of float``)."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple, List, Tuple):
        args = typing.get_args(tp)
        return f"list of {type_name(args[0]) if args else 'values'}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(m.value for m in tp)
    return getattr(tp, "__name__", str(tp))


def describe_type(f: dataclasses.Field) -> str:
    """A reader's name for a field's type: ``int``, ``list of float``, ``one of relu, gelu``."""
    return type_name(field_python_type(f))


# -- dataclass fields ----------------------------------------------------------------------------
def interpolation_target(default: Any) -> Optional[str]:
    """``"optimization.lr"`` for a default of ``"${optimization.lr}"``, else ``None``."""
    if isinstance(default, str) and default.startswith("${") and default.endswith("}"):
        return default[2:-1]
    return None


def field_default(f) -> Any:
    """The default of a dataclass field, calling its ``default_factory`` if it has one."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return OC_MISSING
