"""Checking Hydra overrides before a run starts, with errors a person can act on.

Hydra's own messages say *that* a key is wrong; these say which key was meant, what type a
value needs and how to give a required value. :func:`check_overrides` also rewrites the legacy
string form of sequence values (``optimizer.adam_betas="'(0.9, 0.98)'"``) to a list, so the
typed field accepts what fairseq users type.
"""
import dataclasses
import difflib
import enum
from typing import Any, List, Optional, Sequence, Tuple

import yaml
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from fairseq.dataclass.configs import COMPONENT_GROUPS
from fairseq.dataclass.list_fields import is_number, sequence_field as _is_sequence_field
from fairseq.dataclass.values import describe_type, field_python_type, parse_sequence
from fairseq.dataclass.value_checks import (  # noqa: F401 -- also imported from here
    format_list, accepted_values, check_field_value, check_run_rules, check_settings, check_values,
    undecodable_file_error, undecodable_yaml_error)
from fairseq.errors import ConfigError  # noqa: F401 -- also imported from here




def flat_keys(cfg: Any, prefix: str = "") -> List[str]:
    """Every leaf key of ``cfg`` as a dotted path."""
    keys = []
    for key in cfg.keys() if isinstance(cfg, DictConfig) else []:
        path = f"{prefix}{key}"
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none():
            keys.extend(flat_keys(node, path + "."))
        else:
            keys.append(path)
    return keys


def key_exists(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` (dotted) is a key of ``cfg``, set or ``???``."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True


def closest_key(key: str, keys: Sequence[str]) -> Optional[str]:
    """The real key a mistyped one most likely meant (``optimization.lrr`` -> ``optimization.lr``)."""
    key = key.lstrip("+~-").replace("-", "_")
    if key in keys:
        return key
    last = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == last and not k.endswith("._name")]
    if len(same_leaf) == 1:
        return same_leaf[0]
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if match:
        return match[0]
    leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
    match = difflib.get_close_matches(last, list(leaves), n=1, cutoff=0.7)
    return leaves[match[0]] if match else None


def field_of(cfg: DictConfig, key: str) -> Optional[dataclasses.Field]:
    """The dataclass field that declares ``key`` in ``cfg``, when there is one."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return None
    schema = OmegaConf.get_type(parent)
    if schema is None or not dataclasses.is_dataclass(schema):
        return None
    return {f.name: f for f in dataclasses.fields(schema)}.get(leaf)


def missing_message(key: str, door: str) -> str:
    if door == "legacy" and key == "task.data":
        return ("the data directory is required: give it first, e.g. "
                "`fairseq-train demo/data-bin --arch transformer_lm ...` (the --destdir of fairseq-preprocess)")
    if door == "legacy":
        flag = "--" + key.rsplit(".", 1)[-1].replace("_", "-")
        return f"{flag} is required ({key} is ??? in the config) and was not given: add `{flag} VALUE`"
    example = "demo/data-bin" if key == "task.data" else "VALUE"
    return (f"{key} is required (it is ??? in the config) and was not given: add `{key}={example}` "
            "to the command line" + (" (the --destdir of fairseq-preprocess)" if key == "task.data" else ""))


def check_missing(cfg: DictConfig, door: str = "hydra") -> None:
    """Raise :class:`ConfigError` for the first required (``???``) value left unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing_message(missing[0], door))


def check_choice(group: str, name: str, registry: Any, user_config_dir: Optional[str] = None) -> None:
    """Accept ``group=name`` when ``name`` is registered or is a YAML file of the group (in the
    user's ``--config-dir`` or the built-in tree); otherwise raise, naming the closest choice."""
    from fairseq.dataclass.compose import yaml_choices
    from fairseq.registry import UnknownChoiceError, closest

    files = yaml_choices(group, user_config_dir)
    if name in registry or name in files:
        return
    # G/BASE/PRESET.yaml is also accepted, but listed once, as PRESET
    names = sorted(set(registry.choices()) | {f for f in files if f.rsplit("/", 1)[-1] not in registry})
    hint = closest(name, names)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    raise UnknownChoiceError(f"unknown {registry.group} {name!r}.{did_you_mean} Choices: {', '.join(names)}")


def check_typed_components(cfg: DictConfig, choices: Sequence[str] = ()) -> None:
    """Raise :class:`ConfigError` for a chosen component whose YAML extends no schema (a group
    file without a defaults list): its values would land on an untyped node naming no component."""
    from fairseq.registry import ALL_REGISTRIES

    chosen = {c.split("=", 1)[0].lstrip("+~"): c.split("=", 1)[1] for c in choices if "=" in c}
    for group in COMPONENT_GROUPS:
        node = cfg._get_node(group) if group in cfg else None
        if not isinstance(node, DictConfig) or node._is_none() or OmegaConf.get_type(node) is not dict:
            continue
        name = chosen.get(group, "NAME")
        raise ConfigError(
            f"{group}={name}: {group}/{name}.yaml extends no {group} schema, so its values "
            f"({', '.join(map(str, node.keys()))}) would set no component: start it with "
            f"`defaults: [/schema/{group}/BASE@_here_, _self_]` (BASE a registered {group}, e.g. "
            f"{(ALL_REGISTRIES[group].choices() or ['NAME'])[0]}; `fairseq-hydra-train --help` lists them)")


# the batch size of a training run through the Hydra door that sets none (the seed design's value)
DEFAULT_MAX_TOKENS = 1024


def check_overrides(overrides: Sequence[str], multirun: bool = False, config_name: str = "config",
                    user_config_dir: Optional[str] = None, check_required: bool = True,
                    default_max_tokens: Optional[int] = None) -> List[str]:
    """Validate Hydra overrides against the composed config; return them, legacy forms rewritten.

    ``check_required=False`` lets ``???`` values stay unset (the evaluation commands take
    ``task.data`` from the checkpoint when it is not given). With ``default_max_tokens``
    (``fairseq-hydra-train``), a run whose overrides and YAML set neither
    ``dataset.max_tokens`` nor ``dataset.batch_size`` gets ``dataset.max_tokens=N`` added, so
    ``task.data=DIR`` alone trains; a batch size given either way is left alone.

    Raises:
        ConfigError: an unknown key (naming the closest real one), a value of the wrong type
            (naming the expected type), an unknown component, or a missing required value.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from fairseq.dataclass.compose import compose_config
    from fairseq.registry import ALL_REGISTRIES

    for text in overrides:
        if text.startswith("--") and "=" in text and "." in text.split("=", 1)[0]:
            fixed = text[2:]
            raise ConfigError(f"{text!r}: Hydra overrides take no leading dashes; write {fixed!r}")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as e:  # noqa: BLE001 -- Hydra's grammar errors, shown as they are
        raise ConfigError(f"cannot parse the overrides: {e}") from e

    choices, values = [], []
    for idx, (text, ov) in enumerate(zip(overrides, parsed)):
        key = ov.key_or_group
        if key.startswith("hydra") or ov.package is not None:
            continue
        if key in COMPONENT_GROUPS:
            if not ov.is_sweep_override():
                name = ov.value()
                registry = ALL_REGISTRIES.get(key)
                if registry is not None and name is not None and str(name) not in registry:
                    check_choice(key, str(name), registry, user_config_dir)
                choices.append(text)
            continue
        values.append((idx, text, ov))

    def compose(selected: List[str]) -> DictConfig:
        try:
            return compose_config(selected, config_name=config_name, user_config_dir=user_config_dir)
        except MissingConfigException as e:
            raise ConfigError(str(e).splitlines()[0]) from e
        except yaml.YAMLError as e:
            raise ConfigError(f"malformed YAML: {' '.join(str(e).split())}") from e
        except UnicodeDecodeError as e:
            raise undecodable_yaml_error(user_config_dir, e) from None
        except ConfigCompositionException as e:
            raise ConfigError(_explain(e)) from e

    base = compose(choices)
    check_typed_components(base, choices)
    keys = flat_keys(base)

    rewritten = list(overrides)
    checked = list(choices)
    batch_keys = {"dataset.max_tokens", "dataset.batch_size"}
    if (default_max_tokens is not None and not batch_keys & {ov.key_or_group for _, _, ov in values}
            and base.dataset.get("max_tokens") is None and base.dataset.get("batch_size") is None):
        rewritten.append(f"dataset.max_tokens={default_max_tokens}")
        checked.append(rewritten[-1])
    for idx, text, ov in values:
        new, check = _check_value_override(text, ov, base, keys, multirun)
        rewritten[idx] = new
        if check:
            checked.append(new)

    if multirun:
        return _sweep_save_dirs(rewritten, parsed)
    try:
        cfg = compose(checked)
    except OmegaConfBaseException as e:
        raise ConfigError(str(e).splitlines()[0]) from e
    check_values(cfg)
    if check_required:
        check_missing(cfg, door="hydra")
    return rewritten


def _check_value_override(text: str, ov: Any, base: DictConfig, keys: List[str],
                          multirun: bool) -> Tuple[str, bool]:
    """Check one ``key=value`` override against the composed ``base``; return it rewritten (a
    list field's legacy string or number as a list, a sweep of lists as a choice of lists) and
    whether it belongs to the single config composed to check the values (not a sweep or a
    deletion).

    Raises:
        ConfigError: an unknown key (naming the closest), a needless ``+``, a sweep outside
            ``--multirun``, a list value that does not parse.
    """
    key = ov.key_or_group
    plus = "+" if ov.is_add() else ""
    exists = key_exists(base, key)
    if ov.is_delete():
        return text, False
    if ov.is_add() and exists and not ov.is_force_add():
        raise ConfigError(f"{text!r}: {key} already exists, so no '+' is needed; write "
                          f"'{key}={text.split('=', 1)[1]}'")
    if not exists and not ov.is_add() and not ov.is_force_add():
        hint = closest_key(key, keys)
        did_you_mean = f"; did you mean '{hint}'?" if hint else ""
        raise ConfigError(f"unknown config key {key!r} in {text!r}{did_you_mean} "
                          "(`fairseq-hydra-train --cfg job` prints every key)")
    f = field_of(base, key)
    is_seq, item_type = _is_sequence_field(f) if f is not None else (False, None)
    if ov.is_sweep_override():
        if multirun:
            if is_seq and ov.is_discrete_sweep():
                # `optimization.lr=0.001,0.002`: one job per value, each value a list
                return _sweep_of_lists(key, ov, item_type), False
            return text, False
        # outside --multirun, `key=a,b` can only mean one value: a string or a list
        raw = text.split("=", 1)[1]
        if is_seq:
            return f"{plus}{key}=[{raw}]", True
        if f is not None and field_python_type(f) is str:
            return f"{plus}{key}={raw!r}", True
        raise ConfigError(f"{text!r} is a sweep over several values: add --multirun to run "
                          "one job per value")
    value = ov.value()
    if is_seq and isinstance(value, str):
        try:
            items = parse_sequence(value, {int: int, float: float}.get(item_type, str))
        except ValueError as e:
            raise ConfigError(f"{key}={value!r}: {e}; {key} expects a {describe_type(f)}, "
                              f"e.g. {key}=[...]") from e
        return f"{plus}{key}={format_list(items)}", True
    if is_seq and is_number(value):
        # the rule of fairseq.dataclass.list_fields, written out in the checked override
        return f"{plus}{key}=[{value}]", True
    return text, True


def _sweep_of_lists(key: str, ov: Any, item_type: Any) -> str:
    """``key=0.001,0.002`` for a list field, as the sweep ``key=choice([0.001],[0.002])``."""
    cast = {int: int, float: float}.get(item_type, str)
    choices = []
    for item in ov.sweep_iterator():
        if isinstance(item, str):
            try:
                item = parse_sequence(item, cast)
            except ValueError as e:
                raise ConfigError(f"{key}={item!r}: {e}; each value of the sweep must be a list, "
                                  f"e.g. {key}=[...],[...]") from e
        choices.append(format_list(list(item) if isinstance(item, (list, tuple)) else [item]))
    return f"{'+' if ov.is_add() else ''}{key}=choice({','.join(choices)})"


# where each job of a sweep writes its checkpoints, unless the user names a directory per job
SWEEP_SAVE_DIR = "${hydra:runtime.output_dir}/checkpoints"
# what in a save_dir makes it differ between the jobs of a sweep
_PER_JOB = ("hydra:job.num", "hydra.job.num", "hydra:sweep.subdir", "hydra:runtime.output_dir",
            "hydra.runtime.output_dir", "hydra:job.override_dirname", "hydra.job.override_dirname")


def _sweep_save_dirs(overrides: List[str], parsed: Sequence[Any]) -> List[str]:
    """Give every job of a ``--multirun`` sweep its own ``checkpoint.save_dir``.

    With no save_dir given, each job writes under its own output directory
    (``multirun/DATE/TIME/N/checkpoints``). A save_dir given for a sweep of several jobs must
    differ between them (``${hydra:job.num}`` or a swept value in it): jobs sharing one would
    resume each other's checkpoints instead of training.
    """
    sweeps = [ov for ov in parsed if ov.is_sweep_override() and not ov.key_or_group.startswith("hydra")]
    jobs = 1
    for ov in sweeps:
        jobs *= len(list(ov.sweep_iterator())) if ov.is_discrete_sweep() else 2
    given = [(text, ov) for text, ov in zip(overrides, parsed)
             if ov.key_or_group == "checkpoint.save_dir" and not ov.is_delete()]
    if not given:
        return list(overrides) + [f"checkpoint.save_dir={SWEEP_SAVE_DIR}"]
    text, ov = given[-1]
    if ov.is_sweep_override() or jobs <= 1:
        return list(overrides)
    raw = text.split("=", 1)[1]
    swept = {s.key_or_group for s in sweeps}
    if any(marker in raw for marker in _PER_JOB) or any("${" + k + "}" in raw for k in swept):
        return list(overrides)
    raise ConfigError(f"{text!r} is shared by the {jobs} jobs of this sweep, so each would resume the "
                      "one before it instead of training: put the job number in it, e.g. "
                      f"'checkpoint.save_dir={raw.rstrip('/')}/${{hydra:job.num}}' (or leave it unset: each "
                      "job then writes to its own multirun/DATE/TIME/N/checkpoints)")


def _explain(e: ConfigCompositionException) -> str:
    cause = e.__cause__ or e.__context__ or e
    head = str(e).splitlines()[0].replace(" ValidationError raised while composing config", "").rstrip(":")
    if isinstance(cause, ValidationError):
        key = getattr(cause, "full_key", "") or ""
        schema = getattr(cause, "object_type", None)
        leaf = key.rsplit(".", 1)[-1]
        f = None
        if schema is not None and dataclasses.is_dataclass(schema):
            f = {x.name: x for x in dataclasses.fields(schema)}.get(leaf)
        expected = f" {key} expects {describe_type(f)}" if f is not None else ""
        default = ""
        if f is not None and f.default is not dataclasses.MISSING:
            shown = f.default.value if isinstance(f.default, enum.Enum) else f.default
            default = f" (default {shown})"
        return f"{head}: {str(cause).splitlines()[0]}.{expected}{default}."
    if isinstance(cause, ConfigKeyError):
        return f"{head}: {str(cause).splitlines()[0]}"
    return " ".join(str(e).split())


def explain_unknown_flag(unknown: Sequence[str], argv: Sequence[str], command: str) -> ConfigError:
    """The error for the first of ``unknown``, arguments Hydra's parser does not know, in a
    Hydra door's ``argv``: a legacy flag (``--max-tokens 1024``) gets the override that says
    the same (``dataset.max_tokens=1024``), a dashed override (``--task.data=x``) its form
    without dashes."""
    from fairseq.dataclass.compose import compose_config
    from fairseq.registry import LEGACY_CHOICE_ATTRS

    text = next((u for u in unknown if u.startswith("-")), unknown[0])
    flag, has_value, value = text.partition("=")
    name = flag.lstrip("-").replace("-", "_")
    if "." in name:
        return ConfigError(f"{text!r}: Hydra overrides take no leading dashes; write {text.lstrip('-')!r}")
    if not has_value:
        at = list(argv).index(text) if text in argv else -1
        following = argv[at + 1] if 0 <= at < len(argv) - 1 else None
        if following is not None and not following.startswith("-") and "=" not in following:
            value = following
    value = value or "VALUE"
    groups = {attr: group for group, attr in LEGACY_CHOICE_ATTRS.items()}
    if name in groups:
        key = groups[name]
    else:
        keys = [k for k in flat_keys(compose_config([])) if k.rsplit(".", 1)[-1] == name]
        key = f"{keys[0]}" if keys else None
    if key is None:
        return ConfigError(f"{command} does not know {flag!r}: it takes Hydra's flags (--multirun, "
                           "--cfg job, --config-dir DIR, --config-name NAME; --help lists them) and "
                           "key=value overrides")
    return ConfigError(f"{command} takes key=value overrides, not fairseq-train's flags: write "
                       f"{key}={value} instead of {flag} {value if value != 'VALUE' else ''}".rstrip())
