"""Help text for every registered component, generated from the config dataclasses.

The same generator feeds ``fairseq-hydra-train --help``, the epilog of ``fairseq-train --help``
and ``docs/components.md``, so none of them can drift from the code.
"""
import dataclasses
import enum
from typing import Iterable, List, Optional

from fairseq.dataclass.configs import COMPONENT_GROUPS, GENERIC_GROUPS
from fairseq.dataclass.values import field_default, interpolation_target
from fairseq.dataclass.utils import describe_type, flag_name
from fairseq.registry import LEGACY_CHOICE_ATTRS, legacy_flag

LEGACY_SELECTOR = {group: legacy_flag(group) for group in LEGACY_CHOICE_ATTRS}


def _default_text(dc_instance, f: dataclasses.Field) -> str:
    value = getattr(dc_instance, f.name) if dc_instance is not None else field_default(f)
    target = interpolation_target(value)
    if target is not None:
        return f"${{{target}}}"
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str) and value == "???":
        return "??? (required)"
    return repr(value) if isinstance(value, str) else str(value)


def field_rows(dataclass_or_instance) -> List[dict]:
    """One row per field: name, legacy flag, type, default, help."""
    instance = None if isinstance(dataclass_or_instance, type) else dataclass_or_instance
    rows = []
    for f in dataclasses.fields(dataclass_or_instance):
        if f.name.startswith("_"):
            continue
        rows.append({"name": f.name, "flag": flag_name(f.name), "type": describe_type(f),
                     "default": _default_text(instance, f), "help": f.metadata.get("help", "")})
    return rows


def _text_rows(rows: List[dict], hydra_group: Optional[str]) -> List[str]:
    """Two lines per field: ``group.key=`` (or ``--flag`` without a group), type and default;
    then, indented below, its help."""
    lines = []
    for row in rows:
        key = f"{hydra_group}.{row['name']}=" if hydra_group else row["flag"]
        lines.append(f"    {key:<40} {row['type']}, default {row['default']}")
        if row["help"]:
            lines.append(f"    {'':<40} {row['help']}")
    return lines


def _markdown_table(group: str, rows: List[dict]) -> List[str]:
    out = ["| Hydra key | legacy flag | type | default | help |", "|---|---|---|---|---|"]
    for row in rows:
        out.append(f"| `{group}.{row['name']}` | `{row['flag']}` | {row['type']} | "
                   f"`{row['default']}` | {row['help']} |")
    return out + [""]


def _registries():
    from fairseq.registry import import_builtin_components as import_components
    from fairseq.registry import ALL_REGISTRIES

    import_components()
    return ALL_REGISTRIES


def text_help(groups: Optional[Iterable[str]] = None, style: str = "hydra") -> str:
    """Plain-text listing of components and their fields.

    Args:
        groups: component groups to list (default: all).
        style: ``"hydra"`` shows ``group.field=``, ``"legacy"`` shows ``--flag``.
    """
    registries = _registries()
    lines: List[str] = []
    for group in groups or COMPONENT_GROUPS:
        registry = registries[group]
        selector = f"{group}=NAME" if style == "hydra" else f"{LEGACY_SELECTOR[group]} NAME"
        lines.append(f"{group} ({selector}): {', '.join(registry.choices())}")
        for name in registry.choices():
            entry = registry.get(name)
            if entry.base is not None:
                changed = ", ".join(f"{k}={v}" for k, v in entry.preset.items())
                lines.append(f"  {name}: preset of {entry.base} ({changed})")
                continue
            lines.append(f"  {name}:")
            if entry.dataclass is None:
                continue
            lines += _text_rows(field_rows(entry.default_config()), group if style == "hydra" else None)
        lines.append("")
    return "\n".join(lines)


def generic_help() -> str:
    lines = []
    for group, dc in GENERIC_GROUPS.items():
        lines.append(f"{group}:")
        lines += _text_rows(field_rows(dc), group)
        lines.append("")
    return "\n".join(lines)


def yaml_files_help(user_config_dir: Optional[str] = None) -> str:
    """The choices that are YAML files (a user's ``--config-dir``, fairseq 0.12's
    ``G/BASE/PRESET`` paths) rather than registered names, per group."""
    from fairseq.dataclass.compose import yaml_choices

    registries = _registries()
    lines = []
    for group in COMPONENT_GROUPS:
        registry = registries.get(group)
        names = [n for n in yaml_choices(group, user_config_dir) if registry is None or n not in registry]
        if names:
            lines.append(f"  {group}: {', '.join(names)}")
    return "\n".join(lines)


def hydra_help(user_config_dir: Optional[str] = None) -> str:
    """``fairseq-hydra-train --help`` (``--config-dir DIR --help`` also lists DIR's group files)."""
    files = yaml_files_help(user_config_dir)
    return "\n".join([
        "usage: fairseq-hydra-train [--multirun] [--cfg job] key=value ...",
        "",
        "Compose config/config.yaml, override any key, and train. Components are chosen with",
        "group=name (e.g. model=transformer_lm_gpt) and their fields set with group.field=value.",
        "`--cfg job` prints the composed config; `--hydra-help` shows Hydra's own options.",
        "",
        "== generic groups ==",
        generic_help(),
        "== components ==",
        text_help(style="hydra"),
    ] + (["== config files (group=NAME) ==", files] if files else []))


def markdown_reference() -> str:
    """``docs/components.md``: every component with its config group, legacy flag and fields."""
    registries = _registries()
    out = ["# Components and their parameters", "",
           "Generated from the config dataclasses by `python scripts/gen_component_docs.py`; "
           "a test fails when this file is out of date.", ""]
    out += ["## Generic groups", ""]
    for group, dc in GENERIC_GROUPS.items():
        out += [f"### `{group}`", ""] + _markdown_table(group, field_rows(dc))
    for group in COMPONENT_GROUPS:
        registry = registries[group]
        out += [f"## {group}", "", f"Choose with `{group}=NAME` (Hydra) or `{LEGACY_SELECTOR[group]} NAME` (legacy).", ""]
        for name in registry.choices():
            entry = registry.get(name)
            if entry.base is not None:
                changed = ", ".join(f"`{k}={v}`" for k, v in entry.preset.items())
                out += [f"### `{name}`", "", f"Preset of `{entry.base}`: {changed}.", ""]
                continue
            out += [f"### `{name}`", ""]
            doc = (entry.cls.__doc__ or "").strip().splitlines()
            if doc:
                out += [doc[0], ""]
            if entry.dataclass is None:
                continue
            out += _markdown_table(group, field_rows(entry.default_config()))
    return "\n".join(out) + "\n"
