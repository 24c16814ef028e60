"""The entries that let fairseq 0.12.2 read this package's single-file checkpoints.

fairseq 0.12.2's ``checkpoint_utils.load_checkpoint_to_cpu`` takes a file without
``optimizer_history`` for a pre-0.6 one (and fails on its missing ``best_loss``); its trainer
reads the optimizer from ``last_optimizer_state`` and the schedule and update count from
``optimizer_history[-1]``; and it merges ``cfg.task`` (``cfg.criterion``, ``cfg.optimizer``,
``cfg.lr_scheduler`` when it trains) into its own dataclasses in struct mode, so a key it does
not know fails the load. Every single-file checkpoint written here therefore carries:

* ``args: None``, ``optimizer_history: [{criterion_name, optimizer_name, lr_scheduler_state,
  num_updates}]`` (a copy of the small ``lr_scheduler`` entry);
* the weights in fairseq's key layout (:func:`to_fairseq_weights`), instead of ours, not beside
  (a safetensors pair keeps ours: fairseq reads no pairs);
* no ``last_optimizer_state``: the optimizer stays under ``optimizer``, indexed by this
  package's parameters (one fused ``in_proj`` per attention), which fairseq's optimizer cannot
  take; fairseq resuming from the file starts a fresh optimizer, as with ``--reset-optimizer``;
* in ``cfg``, for each component fairseq 0.12.2 also has (:mod:`fairseq.checkpoint.fairseq_keys`),
  only the keys fairseq knows plus those of ours set to something other than their default. Our
  keys at their default (``rope=False``, ``decoder_norm=layernorm``, ``amsgrad=False``, ...) are
  moved to :data:`OWN_CFG_KEY`, and the keys of fairseq's generic nodes ours lack are added
  with fairseq's defaults (``GENERIC_DEFAULTS``), so a plain ``transformer_lm`` checkpoint
  builds the same model in fairseq. A model that uses an option fairseq lacks (rope, rmsnorm, a gated FFN, grouped
  KV heads, no biases, another ``norm_eps``) keeps those keys, and its ``cfg.model._name``
  names them (``"transformer_lm (needs rope=True: not in fairseq 0.12.2)"``): fairseq drops a
  model's unknown keys when it loads a checkpoint, so only an unknown model name makes it
  refuse, in every path (``from_pretrained``, ``fairseq-eval-lm``, resuming), instead of
  silently building another model. :data:`OWN_CFG_KEY` keeps the real name.

:func:`restore_own_layout` undoes all of it when this package reads the file, so the state
its loaders see is the one the trainer saved; files written before these entries existed read
as they always did.
"""
import dataclasses
from typing import Any, Dict, Optional, Tuple

from fairseq.checkpoint.fairseq_keys import COMPONENTS, GENERIC_DEFAULTS

# What ``cfg`` differs in from the trainer's config, for fairseq's sake (see split_config):
# undone on read.
OWN_CFG_KEY = "cfg_own"
_NAME_NOTE = ": not in fairseq 0.12.2)"
# The entry of OWN_CFG_KEY holding the context the weights were written to fairseq's layout with.
_WEIGHTS = "fairseq_weights"


def _component_class_name(group: str, name: Any) -> Optional[str]:
    """The class name fairseq records for a component (``CrossEntropyCriterion``, ``FairseqAdam``)."""
    from fairseq.registry import ALL_REGISTRIES, import_builtin_components

    import_builtin_components()
    registry = ALL_REGISTRIES.get(group)
    if registry is None or not name or str(name) not in registry:
        return None
    return registry.get(str(name)).cls.__name__


def _own_defaults(group: str, name: str) -> Dict[str, Any]:
    """``{field: default}`` of our dataclass for component ``name`` of ``group``."""
    from fairseq.dataclass.json_io import node_dataclass
    from fairseq.dataclass.values import field_default

    dc_type = node_dataclass(group, name)
    if dc_type is None:
        return {}
    return {f.name: field_default(f) for f in dataclasses.fields(dc_type)}


def _is_default(value: Any, default: Any, cfg: Dict[str, Any]) -> bool:
    from fairseq.dataclass.values import interpolation_target

    target = interpolation_target(default)
    if target is not None:  # e.g. task.train_subset follows dataset.train_subset
        group, _, key = target.partition(".")
        # optional: a checkpoint file's plain config may lack any group
        node = cfg.get(group)
        return isinstance(node, dict) and key in node and node[key] == value
    if hasattr(default, "value") and not isinstance(default, (int, float, str)):
        default = default.value  # an enum member; the saved config holds its value
    return value == default or (isinstance(default, str) and str(value) == default)


def split_config(cfg: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """``(cfg fairseq 0.12.2 reads, what to put back on read)``; see the module doc.

    The second is ``{"left_out": {group: {key: value}}, "added": {group: [key, ...]}}``:
    component keys of ours left out of ``cfg`` (and a model's real name), and the keys of
    fairseq's generic nodes ours lack, added with fairseq's defaults (fairseq reads some,
    e.g. ``generation.print_alignment``). Components fairseq lacks stay whole (it refuses
    them by name).
    """
    out = dict(cfg)
    own: Dict[str, Dict[str, Any]] = {}
    added: Dict[str, Any] = {}
    for group, values in GENERIC_DEFAULTS.items():
        # optional: a checkpoint file's plain config may lack any group
        node = cfg.get(group)
        missing = {k: v for k, v in values.items() if isinstance(node, dict) and k not in node}
        if missing:
            out[group] = {**node, **missing}
            added[group] = sorted(missing)
    for group, known_by_name in COMPONENTS.items():
        # optional: a checkpoint file's plain config may lack any group
        node = cfg.get(group)
        name = node.get("_name") if isinstance(node, dict) else None
        if not name or str(name) not in known_by_name:
            continue
        known = known_by_name[str(name)]
        defaults = _own_defaults(group, str(name))
        kept: Dict[str, Any] = {}
        moved: Dict[str, Any] = {}
        lacking = []
        for key, value in node.items():
            if key in known or key not in defaults:
                kept[key] = value
            elif _is_default(value, defaults[key], cfg):
                moved[key] = value
            else:
                kept[key] = value
                lacking.append(f"{key}={value}")
        if group == "model" and lacking:
            moved["_name"] = name
            kept["_name"] = f"{name} (needs {', '.join(lacking)}{_NAME_NOTE}"
        out[group] = kept
        if moved:
            own[group] = moved
    return out, {"left_out": own, "added": added}


def to_fairseq_layout(state: Dict[str, Any]) -> Dict[str, Any]:
    """``state`` (a trainer snapshot with ``cfg`` a plain dict) with the entries fairseq 0.12.2
    reads (see the module doc); big tensors are never copied. Returns a new top-level dict."""
    state = dict(state)
    cfg = state.get("cfg")
    if isinstance(cfg, dict):
        state["cfg"], state[OWN_CFG_KEY] = split_config(cfg)
    else:
        cfg = {}
    state["args"] = None

    def named(group: str) -> Optional[str]:
        # optional: a checkpoint file's plain config may lack any group
        node = cfg.get(group)
        return _component_class_name(group, node.get("_name")) if isinstance(node, dict) else None

    state["optimizer_history"] = [{
        "criterion_name": named("criterion") or "CrossEntropyCriterion",
        "optimizer_name": named("optimizer") or "FairseqAdam",
        # a copy: each entry's digest then names the entry that changed
        "lr_scheduler_state": dict(state.get("lr_scheduler") or {}),
        "num_updates": int(state.get("num_updates", 0) or 0),
    }]
    return state


def restore_own_layout(state: Dict[str, Any]) -> None:
    """Undo :func:`to_fairseq_layout` and :func:`to_fairseq_weights` in place on a checkpoint of
    this package's: the weights get our key names back, the left-out config keys and the real
    model name go back into ``cfg`` (keys present in ``cfg`` win), the keys added for fairseq
    leave it. A file without these entries is left as it is."""
    own = state.pop(OWN_CFG_KEY, None)
    context = own.get(_WEIGHTS) if isinstance(own, dict) else None
    if isinstance(context, dict) and isinstance(state.get("model"), dict):
        from fairseq.formats import FAIRSEQ_LM, to_ours

        # our keys again (q, k and v fused): what our loaders and users of state["model"] read
        model = {k: v for k, v in state["model"].items() if k != "decoder.embed_tokens._float_tensor"}
        state["model"] = _with_metadata(to_ours(model, FAIRSEQ_LM, context, unmapped="keep"), state["model"])
    cfg = state.get("cfg")
    if isinstance(own, dict) and isinstance(cfg, dict):
        for group, keys in (own.get("added") or {}).items():
            # optional: a checkpoint file's plain config may lack any group
            if isinstance(cfg.get(group), dict) and isinstance(keys, list):
                cfg[group] = {k: v for k, v in cfg[group].items() if k not in keys}
        for group, values in (own.get("left_out") or {}).items():
            # optional: a checkpoint file's plain config may lack any group
            node = cfg.get(group)
            if not isinstance(node, dict) or not isinstance(values, dict):
                continue
            node = dict(node)
            for key, value in values.items():
                if key == "_name":
                    shown = str(node.get("_name", ""))
                    if shown.startswith(f"{value} (needs ") and shown.endswith(_NAME_NOTE):
                        node["_name"] = value
                elif key not in node:
                    node[key] = value
            cfg[group] = node


def _with_metadata(converted: Dict[str, Any], original: Any) -> Dict[str, Any]:
    from collections import OrderedDict

    out = OrderedDict(converted)
    metadata = getattr(original, "_metadata", None)
    if metadata is not None:  # the modules' versions, as nn.Module.state_dict records them
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def fairseq_model_state(model: Any, state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """``state_dict`` of ``model`` in fairseq 0.12.2's key layout when the model converts to one
    (``to_fairseq_layout``: ``transformer_lm``'s separate ``q_proj``/``k_proj``/``v_proj`` for
    our fused ``in_proj``); else as it is. The file holds the split tensors instead of the
    fused ones: no bigger."""
    # looked up on the class: a stand-in trainer's mock model has every attribute
    to_layout = getattr(type(model), "to_fairseq_layout", None) if model is not None else None
    if to_layout is None:
        return state_dict
    return _with_metadata(to_layout(model, state_dict), state_dict)


def to_fairseq_weights(state: Dict[str, Any], model: Any) -> None:
    """Write ``state["model"]`` in fairseq's key layout (:func:`fairseq_model_state`), in place,
    recording the layout's context so that :func:`restore_own_layout` gives our keys back."""
    if model is None or getattr(type(model), "fairseq_layout_context", None) is None or "model" not in state:
        return
    state["model"] = fairseq_model_state(model, state["model"])
    own = state.setdefault(OWN_CFG_KEY, {})
    own[_WEIGHTS] = dict(model.fairseq_layout_context())
