"""Checkpoints of older layouts brought to the current one: fairseq 0.12's (a ``cfg`` dict),
fairseq's before 0.10 (a flat ``args`` Namespace), and the state-dict keys of older versions.
The component registries tell which dataclass reads each node; nothing is imported from the file.
"""
import argparse
import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from fairseq.errors import CheckpointError
from fairseq.registry import LEGACY_CHOICE_ATTRS


def upgrade_state(state: Dict[str, Any], path: str) -> None:
    """Bring the layouts of older fairseq checkpoints to the current one, in place."""
    if "optimizer_history" not in state and "best_loss" in state:  # before fairseq 0.6
        state["optimizer_history"] = [{"criterion_name": "CrossEntropyCriterion",
                                       "best_loss": state.pop("best_loss")}]
    if "epoch" in state and "extra_state" not in state:
        state["extra_state"] = {"epoch": state.pop("epoch"), "val_loss": state.pop("val_loss", None),
                                "batch_offset": state.pop("batch_offset", 0)}
    extra = state.get("extra_state")
    if isinstance(extra, dict) and "train_iterator" not in extra and "epoch" in extra:
        extra["train_iterator"] = {"epoch": max(int(extra["epoch"]), 1),
                                   "iterations_in_epoch": extra.get("batch_offset", 0)}
    if isinstance(extra, dict) and "epoch" not in extra and isinstance(extra.get("train_iterator"), dict):
        extra["epoch"] = extra["train_iterator"].get("epoch")  # fairseq 0.12 keeps it only there
    history = state.get("optimizer_history")
    if "num_updates" not in state and isinstance(history, list) and history and isinstance(history[-1], dict):
        state["num_updates"] = int(history[-1].get("num_updates", 0))  # fairseq keeps it there
    cfg = state.get("cfg")
    args = state.get("args")
    if cfg is None and args is not None:
        if not isinstance(args, argparse.Namespace):
            raise CheckpointError(f"{path}: its 'args' entry is a {type(args).__name__}, not the "
                                  "argparse.Namespace of a fairseq checkpoint; cannot read it")
        try:
            state["cfg"], state["dropped_args"] = namespace_to_config_dict(args)
        except LegacyValueError as e:
            raise CheckpointError(
                f"{path}: its {e}; the args of this fairseq checkpoint cannot be read as they are: "
                "correct that value in the file (a literal such as '(0.9, 0.98)' or '0.1,0.2') or "
                "use another checkpoint") from None
    elif isinstance(cfg, DictConfig):
        state["cfg"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    elif not isinstance(cfg, dict):
        raise CheckpointError(
            f"{path} holds neither a 'cfg' dict nor an 'args' Namespace: it was written by a "
            "fairseq version this package cannot read (supported: fairseq 0.12 and the args-era "
            "checkpoints before it, and this package's own)")


def namespace_to_config_dict(args: argparse.Namespace) -> Tuple[Dict[str, Any], List[str]]:
    """The nested config dict of a pre-0.10 checkpoint's flat ``args`` Namespace.

    Each generic node takes the attributes named like its fields; each component node is chosen
    by ``args.task``, ``args.arch``, ``args.criterion``, ``args.optimizer`` and
    ``args.lr_scheduler`` and takes its dataclass's fields (a field interpolating another, such
    as the optimizer's ``lr``, takes the attribute of that name). fairseq's own upgrades of old
    flags are applied first (``min_lr`` is ``stop_min_lr``, a float ``lr`` becomes a list,
    ``max_positions`` gives ``max_target_positions``), and a model class may upgrade its own
    flags (``upgrade_legacy_args``).

    Returns:
        ``(cfg_dict, unused)``: the config and the attributes no node took.

    Raises:
        LegacyValueError: a value is not the literal its field reads (``adam_betas`` that is
            no ``"(b1, b2)"``), naming the attribute.
    """
    from fairseq.dataclass.configs import COMPONENT_GROUPS, GENERIC_GROUPS
    from fairseq.dataclass.json_io import node_dataclass

    values = dict(vars(args))
    if "max_positions" in values and "max_target_positions" not in values:
        values["max_target_positions"] = values["max_positions"]
    if "min_lr" in values:
        values["stop_min_lr"] = values.pop("min_lr")
    if isinstance(values.get("lr"), (int, float)):
        values["lr"] = [values["lr"]]
    if isinstance(values.get("data"), list) and values["data"]:
        values["data"] = values["data"][0]
    values.setdefault("task", "translation")  # fairseq's default for checkpoints without one

    names = {group: values.get(attr) for group, attr in LEGACY_CHOICE_ATTRS.items()}
    model_cls = _model_class(names["model"])
    if model_cls is not None and hasattr(model_cls, "upgrade_legacy_args"):
        model_cls.upgrade_legacy_args(values)
    namespace = argparse.Namespace(**values)
    used = set(LEGACY_CHOICE_ATTRS.values()) | {"_name"}
    cfg: Dict[str, Any] = {}
    for group, dc_type in GENERIC_GROUPS.items():
        node = _namespace_values(dc_type, namespace, group)
        cfg[group] = node
        used.update(node)
    for group in COMPONENT_GROUPS:
        name = names[group]
        if name is None:
            continue
        dc_type = node_dataclass(group, str(name))
        node = {"_name": str(name)}
        if dc_type is not None:
            own = _namespace_values(dc_type, namespace, group)
            node.update(own)
            used.update(own)
            used.update(f.name for f in dataclasses.fields(dc_type))
        cfg[group] = node
    unused = sorted(k for k in values if k not in used)
    return cfg, unused


class LegacyValueError(ValueError):
    """A value of an args-era Namespace that is not the literal its field reads (a sequence
    written as ``"(0.9, 0.98)"`` or ``"1,2"``); the message names the attribute."""


def _namespace_values(dc_type: type, namespace: argparse.Namespace, group: str) -> Dict[str, Any]:
    """``dc_type.namespace_values(namespace)``; a value that cannot be parsed (literals only,
    never evaluated) is a :class:`LegacyValueError` naming the attribute and the field."""
    try:
        return dc_type.namespace_values(namespace)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        error = e
    from fairseq.dataclass.values import interpolation_target
    from fairseq.dataclass.values import coerce_legacy_value, describe_type

    for f in dataclasses.fields(dc_type):
        if f.name.startswith("_"):
            continue
        target = interpolation_target(f.default)
        for attr in (f.name, target.rsplit(".", 1)[-1] if target else None):
            if attr is None or not hasattr(namespace, attr):
                continue
            value = getattr(namespace, attr)
            try:
                coerce_legacy_value(f, value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
                raise LegacyValueError(
                    f"args.{attr}={shown} is not a literal {describe_type(f)} (read for "
                    f"{group}.{f.name}; parsed with ast.literal_eval, never evaluated)") from None
    first = (str(error).splitlines() or [""])[0]
    raise LegacyValueError(f"args for {group} cannot be read: {type(error).__name__}: {first}") from None


def _model_class(name: Optional[str]) -> Optional[type]:
    if not name:
        return None
    from fairseq.models import MODEL_REGISTRY
    from fairseq.registry import import_builtin_components

    import_builtin_components()
    return MODEL_REGISTRY.get(str(name)).cls if str(name) in MODEL_REGISTRY else None

