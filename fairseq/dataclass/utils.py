"""From dataclasses to argparse flags, and from a legacy Namespace to the one DictConfig.

``gen_parser_from_dataclass`` turns each field into a ``--flag`` (types dispatched through
``typing.get_origin``/``get_args``, so ``Optional[int]``, lists, enum choices and bools all work).
``convert_namespace_to_omegaconf`` composes the same Hydra config the Hydra door composes, then
sets every value the namespace carries, so the two doors hand the trainer equal configs.
"""
import argparse
import dataclasses
import enum
import typing
from argparse import ArgumentParser, Namespace
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from omegaconf import DictConfig, OmegaConf

from fairseq.dataclass.configs import (COMPONENT_GROUPS, GENERIC_GROUPS, OPTIONAL_COMPONENT_GROUPS,
                                       FairseqDataclass, field_default, interpolation_target)
from fairseq.registry import LEGACY_CHOICE_ATTRS
from fairseq.dataclass.values import (  # noqa: F401 -- also imported from here
    type_name, unwrap_optional, coerce_legacy_value, describe_type, field_python_type, parse_sequence,
)


def _scalar_parser(tp: Any) -> Callable[[str], Any]:
    if tp is bool:
        def parse_bool(text: str) -> bool:
            lowered = str(text).lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"invalid bool value: {text!r}")
        return parse_bool
    if tp in (int, float, str):
        return tp
    return str


def _argparse_type(tp: Any) -> Tuple[Callable[[str], Any], Optional[List[str]]]:
    """The ``type=`` callable and ``choices`` for a (non-Optional) field type."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple, List, Tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item = _scalar_parser(args[0]) if args else str

        def parse_list(text: str) -> List[Any]:
            try:
                return parse_sequence(text, item)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from e

        parse_list.__name__ = f"list of {type_name(args[0]) if args else 'values'}"
        return parse_list, None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return str, [m.value for m in tp]
    if tp is Any:
        return str, None
    return _scalar_parser(tp), None


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _prefixed_flag(name: str, with_prefix: Optional[str]) -> str:
    """``--num-layers`` for ``num_layers``; ``--encoder-num-layers`` with prefix ``--encoder``."""
    flag = flag_name(name)
    prefix = (with_prefix or "").lstrip("-")
    return f"--{prefix}-{flag[2:]}" if prefix else flag


def _value_kwargs(tp: Any, dest: str, default: Any, delete_default: bool) -> dict:
    """How a flag of type ``tp`` takes its value: a switch for a bool (``--no-x`` too when it
    defaults to true), else a parsed value with its choices; and its default (absent from the
    namespace with ``delete_default``)."""
    kwargs: dict = {}
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
    else:
        parse, choices = _argparse_type(tp)
        kwargs["type"] = parse
        if choices is not None:
            kwargs["choices"] = choices
        else:
            kwargs["metavar"] = dest.upper()
    if isinstance(default, enum.Enum):
        default = default.value
    kwargs["default"] = argparse.SUPPRESS if delete_default else default
    return kwargs


def gen_parser_from_dataclass(parser: Union[ArgumentParser, argparse._ArgumentGroup],
                              dataclass_instance: Union[FairseqDataclass, type],
                              delete_default: bool = False,
                              with_prefix: Optional[str] = None,
                              skip_scopes: Sequence[str] = ()) -> None:
    """Add one ``--flag`` per field of ``dataclass_instance`` to ``parser``.

    Args:
        parser: a parser or an argument group of one.
        dataclass_instance: a config dataclass or an instance of it; an instance's values
            become the defaults (that is how architecture presets reach the legacy door).
        delete_default: add flags without defaults (absent flags stay absent from the namespace).
        with_prefix: how nested dataclass fields are named. ``None`` (default): a field whose
            type is a dataclass contributes its own fields as top-level flags. A string (``""``
            at the top): nested fields are prefixed with the path of fields leading to them
            (``encoder.arch.num_layers`` -> ``--encoder-arch-num-layers``, dest
            ``encoder_arch_num_layers``), and the help text with that path.
        skip_scopes: leave out fields whose ``metadata["scope"]`` is one of these: ``"train"``
            (read only by training) or ``"valid"`` (by training's and fairseq-validate's
            validation), so each command's ``--help`` shows what applies to it.

    A field whose default interpolates another key gets a flag defaulting to ``None`` (meaning
    "follow the interpolation"), unless its flag would repeat the flag of the key it follows
    (``optimizer.lr`` follows ``optimization.lr``: ``--lr`` belongs to the latter). A flag that
    already exists on the parser is left alone: the first declaration owns it.
    A field named ``data`` outside any prefix, and fields marked ``metadata={"positional": True}``,
    become an optional positional argument.
    """
    container = parser
    root = getattr(parser, "_container", parser)
    # an argument group's container is its parser; reach the parser that owns all flags
    while hasattr(root, "_container"):
        root = root._container
    existing = root._option_string_actions
    instance = dataclass_instance
    if isinstance(dataclass_instance, type):
        instance = None
    prefix_label = (with_prefix or "").lstrip("-")
    for f in dataclasses.fields(dataclass_instance):
        if f.name.startswith("_") or f.metadata.get("scope") in skip_scopes:
            continue
        default = getattr(instance, f.name) if instance is not None else field_default(f)
        tp = field_python_type(f)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            nested = default if dataclasses.is_dataclass(default) else tp()
            nested_prefix = None if with_prefix is None else _prefixed_flag(f.name, with_prefix)
            gen_parser_from_dataclass(container, nested, delete_default, nested_prefix, skip_scopes)
            continue
        target = interpolation_target(f.default if instance is None else default)
        if target is not None and target.rsplit(".", 1)[-1] == f.name:
            continue
        flag = _prefixed_flag(f.name, with_prefix)
        dest = flag[2:].replace("-", "_")
        if flag in existing or any(a.dest == dest for a in root._actions):
            continue
        help_text = f.metadata.get("help", "")
        if prefix_label:
            help_text = f"{prefix_label}: {help_text}"
        kwargs: dict = {"dest": dest}
        if default is dataclasses.MISSING or default == "???":
            default = None
        if target is not None:
            default = None
            help_text += f" (default: same as {target})"
        elif default is not None and not isinstance(default, bool):
            shown = default.value if isinstance(default, enum.Enum) else default
            help_text += f" (default: {shown})"
        if f.metadata.get("positional") or (f.name == "data" and not prefix_label):
            container.add_argument(dest, nargs="?", default=None if delete_default else default,
                                   help=help_text, metavar=dest.upper())
            continue
        kwargs.update(_value_kwargs(tp, dest, default, delete_default), help=help_text)
        alias = f.metadata.get("argparse_alias", ())
        aliases = [alias] if isinstance(alias, str) else list(alias)
        aliases = [a for a in aliases if a not in existing]
        container.add_argument(flag, *aliases, **kwargs)


# -- legacy Namespace -> DictConfig -----------------------------------------------------------
def convert_namespace_to_omegaconf(args: Namespace) -> DictConfig:
    """The DictConfig the Hydra door would compose for the same job, from legacy flags.

    The component choices become Hydra group overrides and the config is composed from the same
    ``config/`` tree and ConfigStore; then every value the namespace carries is set on its
    typed node (so a wrong type fails here too).
    """
    from fairseq.dataclass.compose import compose_config
    from fairseq.registry import ALL_REGISTRIES

    choices = []
    for group, attr in LEGACY_CHOICE_ATTRS.items():
        # optional: a parser adds a choice flag only for the groups its command uses
        name = getattr(args, attr, None)
        if name is not None:
            choices.append(f"{group}={name}")
        elif hasattr(args, attr) and group not in OPTIONAL_COMPONENT_GROUPS:
            choices.append(f"~{group}")  # a flag without a default, not given: no component
    cfg = compose_config(choices)
    for group, dc in GENERIC_GROUPS.items():
        for key, value in dc.namespace_values(args, keep_interpolations=True).items():
            cfg[group][key] = value
    for group, attr in LEGACY_CHOICE_ATTRS.items():
        # optional: the flag may be absent (see above) and an unchosen group's node is None
        name = getattr(args, attr, None)
        if name is None or cfg.get(group) is None:  # optional: as above
            continue
        entry = ALL_REGISTRIES[group].get(name)
        if entry.dataclass is None:
            continue
        for key, value in entry.dataclass.namespace_values(args, keep_interpolations=True).items():
            if value is None and OmegaConf.is_missing(cfg[group], key):
                continue  # a required (???) field's flag, not given: check_missing names it
            cfg[group][key] = value
    # the values the flags gave, checked as the Hydra door checks its overrides: one line
    # naming the key and its flag for a value out of range, NaN or infinite (every legacy
    # command: training, evaluation, generation)
    from fairseq.dataclass.overrides import check_values

    check_values(cfg)
    return cfg


def overwrite_args_by_name(cfg: DictConfig, overrides: dict) -> None:
    """Set eval-time overrides on ``cfg``: a full key (``task.max_target_positions``) on its own
    node only; a bare name (fairseq's ``arg_overrides``: ``tokens_per_sample``) on every node
    that has it.

    Each value is first checked against the fields it would set (their declared bounds; no NaN
    or infinity), whether or not ``cfg`` has their node: the values an evaluation command's
    flags and the Python API's ``from_pretrained(..., **overrides)`` give.

    Raises:
        ConfigError: naming the key, the value and what is accepted.
    """
    check_override_values(cfg, overrides)
    for group in list(GENERIC_GROUPS) + list(COMPONENT_GROUPS):
        node = cfg.get(group)  # optional: an unchosen component group has no node
        if node is None:
            continue
        for key, value in overrides.items():
            where, _, name = key.rpartition(".")
            if (not where or where == group) and name in node:
                node[name] = value


def check_override_values(cfg: DictConfig, overrides: dict) -> None:
    """Check the values of eval-time ``overrides`` (see :func:`overwrite_args_by_name`) against
    every field they name: a full key's field, or for a bare name each generic group's field and
    each of ``cfg``'s component nodes' field of that name.

    Raises:
        ConfigError: naming the key, the value and what is accepted.
    """
    from omegaconf import OmegaConf

    from fairseq.dataclass.overrides import check_field_value

    schemas = dict(GENERIC_GROUPS)
    for group in COMPONENT_GROUPS:
        node = cfg.get(group) if isinstance(cfg, DictConfig) else None  # optional: unchosen group
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if schema is not None and dataclasses.is_dataclass(schema):
            schemas[group] = schema
    for key, value in overrides.items():
        where, _, name = str(key).rpartition(".")
        if OmegaConf.is_list(value):
            value = list(value)
        for group, schema in schemas.items():
            if where and where != group:
                continue
            f = next((f for f in dataclasses.fields(schema) if f.name == name), None)
            if f is not None:
                check_field_value(f"{group}.{name}", value, f.metadata)
