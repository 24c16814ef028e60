"""Checking config values before a run starts: the bounds a field declares, the rules that
relate several fields or groups, and config files that are not UTF-8.

Every door runs these (both training doors, YAML, the evaluation commands, the Python API), so a
value is refused once, at the door, with one line naming the key, the bad value and the fix.
"""
import dataclasses
import difflib
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fairseq.dataclass.list_fields import is_number
from fairseq.errors import ConfigError


def format_list(values: List[Any]) -> str:
    """``values`` as a command line writes a list: ``[1,2]``, ``['a','b']``."""
    return "[" + ",".join(repr(v) if isinstance(v, str) else str(v) for v in values) + "]"


# -- declared bounds of values -------------------------------------------------------------------
# A field declares what it accepts in its metadata, checked for every config node by
# :func:`check_values` (both doors and YAML, before anything runs) and for the values an
# evaluation command or the Python API sets on a checkpoint's config
# (:func:`fairseq.dataclass.utils.overwrite_args_by_name`):
#   "min": lowest accepted value (inclusive)    "max": highest accepted value (inclusive)
#   "above": values must be larger than this    "below": values must be smaller than this
#   "also": values accepted besides that range, e.g. ``(-1,)`` where -1 means "off"
#   "len": a list of exactly this many items    "nonempty": a list needs at least one item
#   "inf": True where an infinite float is accepted (it then means "no limit")
# Every float, of a scalar or a list field, bounded or not, must be a number (NaN never is) and
# finite unless "inf" says otherwise. For a list field the value bounds apply to every item.
# A check relating several fields of one node lives in the node's config class as
# ``check_config(cls, node, prefix)``, raising ConfigError; one relating several groups lives in
# :func:`check_run_rules`.
BOUND_KEYS = ("min", "max", "above", "below", "also", "len", "nonempty")


def _range_words(metadata: Any) -> str:
    lo, hi = metadata.get("min"), metadata.get("max")
    above, below = metadata.get("above"), metadata.get("below")
    left = f"[{lo}" if lo is not None else f"({above}" if above is not None else None
    right = f"{hi}]" if hi is not None else f"{below})" if below is not None else None
    if left and right:
        what = f"in {left}, {right}"
    elif left:
        what = f">= {lo}" if lo is not None else f"> {above}"
    elif right:
        what = f"<= {hi}" if hi is not None else f"< {below}"
    else:
        what = ""
    also = metadata.get("also") or ()
    if also:
        what = " or ".join([what] * bool(what) + [str(v) for v in also])
    if metadata.get("inf"):
        what += (" " if what else "") + "(inf: no limit)"
    return what


def accepted_values(metadata: Any) -> str:
    """What a field accepts, in words: ``a value in [0, 1]``, ``2 values, each in [0, 1)``,
    ``a value in (0, 1] or -1``, ``a finite number``."""
    what = _range_words(metadata)
    if "len" in metadata:
        return f"{metadata['len']} values" + (f", each {what}" if what else "")
    if metadata.get("nonempty"):
        return "at least one value" + (f", each {what}" if what else ", each a finite number")
    return f"a value {what}" if what else "a finite number"


def _out_of_bounds(value: Any, metadata: Any) -> bool:
    if value in (metadata.get("also") or ()):
        return False
    lo, hi = metadata.get("min"), metadata.get("max")
    above, below = metadata.get("above"), metadata.get("below")
    return ((lo is not None and value < lo) or (hi is not None and value > hi)
            or (above is not None and value <= above) or (below is not None and value >= below))


def _not_finite(value: Any, metadata: Any) -> Optional[str]:
    """Why a float ``value`` is refused whatever the bounds: ``"is not a number"`` for NaN,
    ``"is infinite"`` for an infinity the field does not accept; None for any other value."""
    import math

    if not isinstance(value, float) or math.isfinite(value):
        return None
    if math.isnan(value):
        return "is not a number (NaN)"
    if value > 0 and metadata.get("inf"):
        return None
    return "is infinite"


def check_field_value(key: str, value: Any, metadata: Any) -> None:
    """Raise :class:`ConfigError` when ``value`` breaks what ``metadata`` declares (its
    ``BOUND_KEYS``), or is a NaN or an infinity (see the comment on ``BOUND_KEYS``): for a
    scalar and for every item of a list.

    Args:
        key: the dotted key (``optimization.lr``); the message names it and its legacy flag.
        value: the value, a list for a list field; ``None`` (unset) is always accepted.
        metadata: the field's metadata.
    """
    if value is None:
        return
    flag = "--" + key.rsplit(".", 1)[-1].replace("_", "-")
    is_list = isinstance(value, (list, tuple))
    items = list(value) if is_list else [value]
    numbers = [(i, v) for i, v in enumerate(items) if is_number(v)]
    bounded = any(k in metadata for k in BOUND_KEYS)
    if not bounded and not any(_not_finite(v, metadata) for _, v in numbers):
        return
    accepted = accepted_values(metadata)
    shown = format_list(items) if is_list else value
    if is_list:
        if "len" in metadata and len(items) != metadata["len"]:
            raise ConfigError(f"{key}={shown} ({flag}) has {len(items)} values; accepted: {accepted}")
        if metadata.get("nonempty") and not items:
            raise ConfigError(f"{key}={shown} ({flag}) is empty; accepted: {accepted}")
    for i, item in numbers:
        where = f": value {i + 1} ({item})" if is_list else ""
        why = _not_finite(item, metadata)
        if why is not None:
            raise ConfigError(f"{key}={shown} ({flag}){where} {why}; accepted: {accepted}")
        if _out_of_bounds(item, metadata):
            raise ConfigError(f"{key}={shown} ({flag}){where} is out of range; accepted: {accepted}")


def check_settings(schema: Any, values: Any, prefix: str) -> None:
    """Check plain ``{name: value}`` settings against the fields of ``schema`` that declare them
    (names it has no field for are left alone): what a Python call such as the hub's
    ``generate(beam=..., temperature=...)`` passes, e.g. ``check_settings(GenerationConfig,
    options, "generation")``.

    Raises:
        ConfigError: naming ``prefix.name``, the value and what is accepted.
    """
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for name, value in dict(values).items():
        f = fields.get(name)
        if f is not None:
            if OmegaConf.is_list(value):
                value = list(value)
            check_field_value(f"{prefix}.{name}" if prefix else name, value, f.metadata)
    check = getattr(schema, "check_config", None)
    if check is not None:
        check(values, prefix)
    rule = _GROUP_RULES.get(prefix)
    if rule is not None:
        rule(values)


def _resolve_or_explain(node: DictConfig, key: str, path: str) -> Any:
    try:
        return node[key]
    except OmegaConfBaseException as e:
        raw = node._get_node(key)._value()
        reason = str(e).splitlines()[0]
        if "oc.env" in str(raw):
            fix = "set that environment variable, or give a default: ${oc.env:NAME,default}"
        else:
            fix = "refer to an existing key (e.g. ${optimization.lr}) or give a plain value"
        raise ConfigError(f"{path}={raw}: the interpolation cannot be resolved ({reason}); {fix}") from None


def _walk(node: DictConfig, prefix: str):
    """Every config node under ``node`` (itself first) with its dotted path, resolving (and
    checking) every interpolation on the way."""
    yield node, prefix
    for key in node.keys():
        path = f"{prefix}.{key}" if prefix else str(key)
        if node._get_node(key)._is_missing():  # ``???``: check_missing's concern
            continue
        value = _resolve_or_explain(node, key, path)
        if isinstance(value, DictConfig):
            yield from _walk(value, path)
        elif OmegaConf.is_list(value):
            for i in range(len(value)):
                if not value._get_node(i)._is_missing():
                    _resolve_or_explain(value, i, f"{path}[{i}]")


def check_values(cfg: DictConfig) -> None:
    """Check a composed run config before anything runs: every interpolation resolves, every
    value is within the bounds its field declares (``BOUND_KEYS``) and no float is NaN or (unless
    declared) infinite, every config class's ``check_config`` (checks relating several fields)
    passes, and so do the rules relating several groups (:func:`check_run_rules`).

    Raises:
        ConfigError: naming the key, the value and what would be accepted.
    """
    for node, prefix in list(_walk(cfg, "")):
        check_node_values(node, prefix)
    check_run_rules(cfg)


def check_node_values(node: DictConfig, prefix: str) -> None:
    """Check the fields of one typed config node (not the nodes under it): the bounds each field
    declares, no NaN or undeclared infinity, and the node class's ``check_config``. A node that
    is not typed by a dataclass is left alone. Also used on the model node of a checkpoint's
    config before the model is built (a damaged config must not decide what is allocated).

    Raises:
        ConfigError: naming ``prefix.field``, the value and what would be accepted.
    """
    schema = OmegaConf.get_type(node)
    if schema is None or not dataclasses.is_dataclass(schema):
        return
    for f in dataclasses.fields(schema):
        if f.name not in node or node._get_node(f.name)._is_missing():
            continue
        value = node[f.name]
        if OmegaConf.is_list(value):
            value = list(value)
        elif not (is_number(value) or any(k in f.metadata for k in BOUND_KEYS)):
            continue
        check_field_value(f"{prefix}.{f.name}" if prefix else f.name, value, f.metadata)
    check = getattr(schema, "check_config", None)
    if check is not None:
        check(node, prefix)


# -- rules relating several groups ------------------------------------------------------------------
def _group(cfg: Any, name: str) -> Any:
    # optional: the rules also see partial configs (one node checked on its own)
    node = cfg.get(name) if isinstance(cfg, DictConfig) and name in cfg else None
    return node if isinstance(node, DictConfig) else None


def reported_metrics(cfg: DictConfig) -> Optional[List[str]]:
    """The validation metrics the run's criterion reports (what ``checkpoint.
    best_checkpoint_metric`` may name), or None when they cannot be known before the run.

    They are known when the criterion's ``reduce_metrics`` is the criterion base's, or when the
    class that defines it also declares ``reported_metrics``, and the task reduces metrics as the
    task base does (a criterion or task computing metrics of its own, as fairseq-style plugins do
    with ``metrics.log_scalar``, is not second-guessed).
    """
    from fairseq.registry import ALL_REGISTRIES

    criterion, task = _group(cfg, "criterion"), _group(cfg, "task")
    name = criterion.get("_name") if criterion is not None else None
    registry = ALL_REGISTRIES.get("criterion")
    if not name or registry is None or name not in registry:
        return None
    cls = registry.get(name).cls

    def owner(klass: type, attribute: str) -> Optional[type]:
        return next((c for c in klass.__mro__ if attribute in vars(c)), None)

    reduce_owner, declared_owner = owner(cls, "reduce_metrics"), owner(cls, "reported_metrics")
    if reduce_owner is None or declared_owner is None or not issubclass(declared_owner, reduce_owner):
        return None
    tasks = ALL_REGISTRIES.get("task")
    task_name = task.get("_name") if task is not None else None
    if tasks is not None and tasks.base_class is not None and task_name and task_name in tasks:
        if owner(tasks.get(task_name).cls, "reduce_metrics") not in (None, tasks.base_class):
            return None
    metrics = getattr(cls, "reported_metrics", None)
    return list(metrics) if metrics else None


def _check_generation(generation: Any) -> None:
    """``generation.nbest <= generation.beam``: a search keeps at most ``beam`` hypotheses; and
    with ``max_len_a`` 0, ``generation.min_len <= generation.max_len_b``: EOS is blocked for
    ``min_len`` tokens, so no output could end within ``max_len_b`` tokens."""
    beam, nbest = generation.get("beam"), generation.get("nbest")
    if is_number(beam) and is_number(nbest) and beam >= 1 and nbest > beam:
        raise ConfigError(f"generation.nbest={nbest} (--nbest) is more than generation.beam={beam} "
                          f"(--beam): at most beam hypotheses are kept; give --nbest {beam} or less, "
                          f"or --beam {nbest} or more")
    len_a, len_b, min_len = generation.get("max_len_a"), generation.get("max_len_b"), generation.get("min_len")
    if (is_number(len_b) and is_number(min_len) and (len_a is None or (is_number(len_a) and len_a == 0))
            and min_len > len_b >= 0):
        raise ConfigError(f"generation.min_len={min_len} (--min-len) is more than generation.max_len_b="
                          f"{len_b} (--max-len-b), the longest output with max_len_a 0: no output could "
                          f"end; give --max-len-b {min_len} or more, or --min-len {len_b} or less")


# rules relating fields of one generic group (its config class stays plain fields), by group;
# checked on a whole config (check_run_rules) and on plain settings (check_settings)
_GROUP_RULES = {"generation": _check_generation}


def check_run_rules(cfg: DictConfig) -> None:
    """The rules relating values of several fields or groups of a whole run config, checked by
    :func:`check_values` before anything runs:

    * ``generation.nbest <= generation.beam`` (a beam search returns at most ``beam`` hypotheses);
    * ``checkpoint.best_checkpoint_metric`` is a metric the criterion reports (when that is
      known: :func:`reported_metrics`).

    Raises:
        ConfigError: naming both keys and the fix.
    """
    for group, rule in _GROUP_RULES.items():
        node = _group(cfg, group)
        if node is not None:
            rule(node)
    checkpoint = _group(cfg, "checkpoint")
    metric = checkpoint.get("best_checkpoint_metric") if checkpoint is not None else None
    if not isinstance(metric, str):
        return
    metrics = reported_metrics(cfg)
    if metrics is None or metric in metrics:
        return
    criterion = _group(cfg, "criterion")
    hint = difflib.get_close_matches(metric, metrics, n=1, cutoff=0.5)
    did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ";"
    raise ConfigError(f"checkpoint.best_checkpoint_metric={metric!r} (--best-checkpoint-metric) is not "
                      f"a metric criterion {criterion.get('_name')} reports{did_you_mean} it reports "
                      f"{', '.join(metrics)}")


# -- files a config is read from ---------------------------------------------------------------------
def undecodable_file_error(path: Any, what: str = "config file") -> Optional[ConfigError]:
    """A one-line :class:`ConfigError` naming ``path`` and the byte offset (and line) of its
    first byte that is not UTF-8, or None when the file reads as UTF-8 (or cannot be read)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        data.decode("utf-8")
    except OSError:
        return None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return ConfigError(f"{what} {path}: byte {e.start} (line {line}, 0x{data[e.start]:02x}) is not "
                           "UTF-8; save the file as UTF-8 (YAML configs are read as UTF-8)")
    return None


def undecodable_yaml_error(user_config_dir: Optional[str] = None,
                           error: Optional[UnicodeDecodeError] = None) -> ConfigError:
    """The error for a YAML config that is not UTF-8, for ``check_overrides`` (or any code
    composing a config) to raise where Hydra's composition raised ``error``, a
    ``UnicodeDecodeError`` that names no file: the ``.yaml`` file of the user's ``--config-dir``
    (then of the built-in tree) holding the bytes ``error`` could not decode, else the first one
    that does not decode, with the byte offset and line of its first bad byte.

    Use::

        except UnicodeDecodeError as e:
            raise undecodable_yaml_error(user_config_dir, e) from None
    """
    import os

    from fairseq.dataclass.compose import config_dir

    roots = [d for d in (user_config_dir, config_dir()) if d]
    chunk = getattr(error, "object", None)
    found: List[Any] = []
    for root in roots:
        for base, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for name in sorted(files):
                if not name.endswith((".yaml", ".yml")):
                    continue
                path = os.path.join(base, name)
                bad = undecodable_file_error(path, "YAML config")
                if bad is None:
                    continue
                if isinstance(chunk, bytes) and chunk:
                    with open(path, "rb") as f:
                        if chunk in f.read():
                            return bad
                found.append(bad)
    if found:
        return found[0]
    reason = f" ({error})" if error is not None else ""
    where = f" under {', '.join(roots)}" if roots else ""
    return ConfigError(f"a YAML config{where} is not UTF-8{reason}; save it as UTF-8")
