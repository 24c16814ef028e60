"""Loading checkpoints for use: safely (weights only, integrity checked), upgraded, with the
model and task rebuilt from the checkpoint's own config (ensembles, EMA weights, inference)."""
import logging
import os
import re
import sys
from typing import Any, Dict, Optional, Sequence

import torch
from omegaconf import DictConfig
from torch.overrides import TorchFunctionMode

from fairseq.checkpoint.integrity import verify_integrity
from fairseq.checkpoint.pair import WEIGHTS_KEY, read_weights, state_file_path
from fairseq.checkpoint.fairseq_layout import restore_own_layout
from fairseq.checkpoint.state import FORMAT_KEY, SAFE_GLOBALS, safe_torch_load
from fairseq.checkpoint.task_state import restore_task_state
from fairseq.checkpoint.upgrade import upgrade_state
from fairseq.errors import CheckpointError, CheckpointNotFoundError, ConfigError
from fairseq.file_io import PathManager

logger = logging.getLogger("fairseq.checkpoint_utils")  # the name fairseq logs checkpoints under


class PluginRequiredError(ConfigError):
    """A checkpoint whose components come from a plugin (``--user-dir``) that was not given:
    a user error (exit code 2). The ``common.user_dir`` a checkpoint records is never imported
    (that would run code named by the file), so the user must pass it explicitly."""


class CheckpointConfigError(CheckpointError):
    """A checkpoint whose own config holds a value no model can be built from (a negative layer
    count, a zero dimension, 2**40 positions): the file is damaged or not fairseq's. It is
    refused before anything is allocated, as bad input (exit code 2)."""

    exit_code = 2


def check_model_state(model_state: Any, path: str, entry: str = "model") -> None:
    """One clear line when a checkpoint's weights are not a state dict (names to tensors).

    Raises:
        CheckpointError: ``model_state`` is not a dict, or one of its values is not a tensor.
    """
    if not isinstance(model_state, dict):
        raise CheckpointError(f"{path}: its '{entry}' entry is a {type(model_state).__name__}, not the "
                              "state dict (parameter name -> tensor) of a model; the file is damaged "
                              "or no model checkpoint: use another checkpoint")
    for key, value in model_state.items():
        if not torch.is_tensor(value):
            shown = repr(key) if len(repr(key)) <= 80 else repr(key)[:77] + "..."
            raise CheckpointError(f"{path}: its '{entry}' entry holds a {type(value).__name__} under "
                                  f"{shown}, not a tensor: it is no model state dict; the file is "
                                  "damaged or no model checkpoint: use another checkpoint")


def load_ema_from_checkpoint(fpath: str) -> Dict[str, Any]:
    """A checkpoint whose ``model`` is the exponential moving average of its weights.

    Reads ``extra_state["ema"]`` (fairseq's EMA copy of the parameters) and returns
    ``{"model": OrderedDict of those tensors, ...}`` with the checkpoint's other entries, so that
    it loads like any checkpoint.

    Raises:
        CheckpointError: when the file cannot be read or holds no EMA weights.
    """
    from collections import OrderedDict

    fpath = state_file_path(fpath)  # a pair's EMA weights are in its .pt (extra_state)
    with PathManager.open(fpath, "rb") as f:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            state = torch.load(f, map_location="cpu", weights_only=True)
    ours = isinstance(state, dict) and FORMAT_KEY in state
    verify_integrity(state, fpath)
    if ours:
        restore_own_layout(state)
    if isinstance(state, dict):
        state.pop(WEIGHTS_KEY, None)  # the model it stands for is replaced by the EMA weights
    extra = state.get("extra_state") if isinstance(state, dict) else None
    ema = extra.get("ema") if isinstance(extra, dict) else None
    if not isinstance(ema, dict):
        raise CheckpointError(f"{fpath} holds no EMA weights (extra_state['ema']); it was not "
                              "trained with an exponential moving average")
    check_model_state(ema, fpath, "extra_state['ema']")
    state = dict(state)
    state["model"] = OrderedDict((k, v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
                                 for k, v in ema.items())
    return state


def load_checkpoint_to_cpu(path: str, arg_overrides: Optional[Dict[str, Any]] = None,
                           load_on_all_ranks: bool = False) -> Dict[str, Any]:
    """Read a checkpoint safely (weights only) onto the CPU and upgrade old layouts.

    Checkpoints of this package and of fairseq 0.12 (``cfg`` dict) load as they are; those of
    fairseq before 0.10 (an ``argparse.Namespace`` under ``args``, no ``cfg``) get a ``cfg``
    dict converted from their flags. ``torch.load(weights_only=True)`` with only
    ``argparse.Namespace`` allowed besides tensors and containers: loading never runs code.

    A checkpoint saved as a safetensors pair (``checkpoint.save_format=safetensors``) is read
    from its ``NAME.pt`` (``path`` may name either file): the weights file's SHA-256 is checked
    against the one the ``.pt`` stores, then its tensors become ``state["model"]`` as if the
    checkpoint were one ``.pt`` (the pair's ``model_safetensors`` entry is removed).

    Args:
        path: the checkpoint file (``NAME.pt``, or ``NAME.safetensors`` of a pair).
        arg_overrides: ``{key: value}`` set on every node of ``cfg`` that has ``key``.
        load_on_all_ranks: accepted for fairseq's signature; every process reads the local file.

    Returns:
        The checkpoint dict; ``state["cfg"]`` is a plain nested dict.

    Raises:
        CheckpointError: the file is missing, truncated, holds objects other than tensors,
            containers and a Namespace, is no fairseq checkpoint (or its ``model`` is no state
            dict of tensors), or its contents do not match the SHA-256 stored when it was
            written, or it is one of this package's (its ``checkpoint_format`` marker) and its
            record is missing or malformed (fairseq's checkpoints, which have neither, load
            with a warning).
    """
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, ".metadata")):
        raise CheckpointError(
            f"{path} is a sharded checkpoint directory (ddp_backend=fully_sharded); write it as one "
            f"file with `python -m fairseq.checkpoint.sharded consolidate {path} OUT.pt`, or "
            "train with checkpoint.save_consolidated=true (--save-consolidated)")
    given = path
    path = state_file_path(path)
    if given != path and os.path.isfile(given) and not os.path.isfile(path):
        raise CheckpointError(
            f"{given} holds model weights only; a checkpoint saved with checkpoint.save_format="
            f"safetensors keeps its config and training state in {os.path.basename(path)} beside it, "
            "which does not exist: copy the pair of files together (for other tools, the "
            ".safetensors alone is a plain weights file)")
    if not os.path.isfile(path):
        where = os.path.dirname(os.path.abspath(path))
        hint = ("" if os.path.isdir(where) else
                f" (nor does its directory {where})")
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist{hint}: give the path of a "
                                      "checkpoint file (e.g. checkpoints/checkpoint_best.pt)")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its write never completed; "
                              "use another checkpoint (e.g. checkpoint_last.pt or an earlier one)")
    try:
        state = safe_torch_load(path)
    except Exception as e:  # noqa: BLE001 -- any unpickling failure becomes one clear message
        raise CheckpointError(
            f"cannot load checkpoint {path}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}. "
            "It is truncated, corrupt, or holds objects other than tensors and plain containers "
            "(refused: loading it could run code)") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a fairseq checkpoint (a {type(state).__name__}, not a "
                              "dict with a 'model' entry)")
    ours = FORMAT_KEY in state
    verify_integrity(state, path)  # before anything reads it: flipped bytes are refused
    if ours:  # the entries written for fairseq 0.12.2's readers, back to the trainer's layout
        restore_own_layout(state)
    if WEIGHTS_KEY in state:
        read_weights(state, path)
    elif given != path:
        raise CheckpointError(f"{path} is a checkpoint of its own (its weights inside it), not the "
                              f"state file of {os.path.basename(given)}: pass {path}; "
                              f"{os.path.basename(given)} is left over from an earlier save")
    if "model" not in state:
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    check_model_state(state["model"], path)
    upgrade_state(state, path)
    if arg_overrides:
        for node in state["cfg"].values():
            if isinstance(node, dict):
                for key, value in arg_overrides.items():
                    if key in node:
                        node[key] = value
    return state


def _check_supported(saved: Dict[str, Any], path: str) -> None:
    """One clear error when a checkpoint needs a model or task this package does not have."""
    from fairseq.registry import import_builtin_components as import_components
    from fairseq.models import MODEL_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    import_components()
    _check_plugins(saved, path)
    for group, registry in (("model", MODEL_REGISTRY), ("task", TASK_REGISTRY)):
        node = saved.get(group)
        name = node.get("_name") if isinstance(node, dict) else None
        if not name:
            raise CheckpointError(f"{path}: its config names no {group} (cfg.{group}._name is empty)")
        if str(name) not in registry:
            raise CheckpointError(
                f"{path} holds a {group} {name!r}, which this package does not support "
                f"(supported {group}s: {', '.join(registry.choices())})")
    model_cls = MODEL_REGISTRY.get(str(saved["model"]["_name"])).cls
    check = getattr(model_cls, "unsupported_options", None)
    unsupported = check(saved["model"]) if check is not None else []
    if unsupported:
        raise CheckpointError(f"{path}: model options this package does not implement: "
                              f"{', '.join(unsupported)}")


def _check_plugins(saved: Dict[str, Any], path: str) -> None:
    """A checkpoint trained with ``--user-dir`` whose model, task or criterion is not registered
    now: say which ``--user-dir`` to pass (it is never imported from the checkpoint)."""
    from fairseq.registry import ALL_REGISTRIES

    user_dir = (saved.get("common") or {}).get("user_dir") if isinstance(saved.get("common"), dict) else None
    if not user_dir or os.path.basename(os.path.normpath(str(user_dir))) in sys.modules:
        return  # no plugin, or one of its name imported: the usual "not supported" errors follow
    for group in ("model", "task", "criterion"):
        node = saved.get(group)
        name = node.get("_name") if isinstance(node, dict) else None
        registry = ALL_REGISTRIES.get(group)
        if name and registry is not None and str(name) not in registry:
            raise PluginRequiredError(
                f"{path} holds the {group} {str(name)!r}, which no imported plugin registers; it was "
                f"trained with --user-dir {user_dir}: pass that plugin directory explicitly "
                "(--user-dir DIR, common.user_dir=DIR, or from_pretrained(..., user_dir=DIR)). "
                "A checkpoint's own user_dir is never imported: that would run code named by the file")


def config_from_checkpoint(state: Dict[str, Any], path: str = "the checkpoint") -> DictConfig:
    """The typed run config of a loaded checkpoint (see ``fairseq.dataclass.json_io``).

    Fields and whole nodes this package does not have (fairseq's ``generation``, ``bmuf``, ...,
    or the flags of an args-era checkpoint that no node takes) are named in one warning.

    Raises:
        CheckpointError: the checkpoint's model or task is not supported, or one of their
            values cannot be read.
        PluginRequiredError: it was trained with a ``--user-dir`` plugin that is not imported
            and its model, task or criterion is not registered (the checkpoint's own
            ``common.user_dir`` is never imported).
    """
    from fairseq.dataclass.json_io import ConfigValueError, config_from_dict

    saved = state["cfg"]
    # the checkpoint's common.user_dir is not imported (it would run code the file names): its
    # plugins must already be imported, from the user's --user-dir
    _check_supported(saved, path)
    saved = {group: dict(node) if isinstance(node, dict) else node for group, node in saved.items()}
    model = saved["model"]
    if model.get("max_target_positions") is None:
        # fairseq falls back to the tokens_per_sample the model was trained with
        fallback = model.get("tokens_per_sample") or (saved.get("task") or {}).get("tokens_per_sample")
        if fallback is not None:
            model["max_target_positions"] = fallback
        else:
            model.pop("max_target_positions", None)
    dropped = [f"args.{k}" for k in state.get("dropped_args", [])]
    try:
        cfg = config_from_dict(saved, source=path, dropped=dropped)
    except ConfigValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    check_checkpoint_model_config(cfg, path)
    return cfg


def check_checkpoint_model_config(cfg: DictConfig, path: str) -> None:
    """Check the model node of a checkpoint's config with the value checks the doors use
    (declared bounds, NaN, the model class's ``check_config``) before any model is built: the
    sizes in a damaged config would otherwise decide what is allocated (2**40 positions) or fail
    deep inside the model (``decoder_attention_heads=0``).

    Raises:
        CheckpointConfigError: naming the checkpoint, the key, its value and what is accepted.
    """
    from fairseq.dataclass.value_checks import check_node_values

    model = cfg.model
    if not isinstance(model, DictConfig):
        return
    try:
        check_node_values(model, "model")
    except ConfigError as e:
        # the flag a door would name does not apply: the value comes from the file
        reason = re.sub(r" \(--[\w-]+\)", "", str(e))
        raise CheckpointConfigError(
            f"checkpoint {path}: its config is not valid: {reason}; the checkpoint is damaged or "
            "was not written by fairseq: use another checkpoint") from None


class _NoRandomInit(TorchFunctionMode):
    """Random initialisation skipped (the tensor returned as it is) while a model is built on the
    ``meta`` device, where it would draw nothing anyway, and ``arange`` tables built on the CPU:
    PyTorch runs those two on meta tensors through Python decompositions that import
    ``torch._dynamo`` on first use, 1-2.6 s added to every evaluation command's start. A function
    mode is thread-local, so a model built at the same time in another thread is not affected."""

    _SKIPPED = frozenset({"normal_", "uniform_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.arange and kwargs.get("device") is None:  # optional: a call may name none
            # a constant table (positions, frequencies): built on the CPU, where it is small,
            # since every op on a meta tensor without a C++ meta kernel also imports dynamo
            kwargs["device"] = "cpu"
        if getattr(func, "__name__", None) in self._SKIPPED:
            # Tensor.normal_(t, ...) or torch.nn.init.normal_(tensor=t, ...)
            tensor = args[0] if args else kwargs.get("tensor")  # optional: positional or keyword
            if getattr(tensor, "is_meta", False):
                return tensor
        return func(*args, **kwargs)


def check_weights_fit_config(task: Any, cfg: DictConfig, model_state: Dict[str, Any], path: str) -> None:
    """Compare the shapes of a checkpoint's weights with those of the model its config describes,
    before that model is built: the model is first built on PyTorch's ``meta`` device (shapes
    only, nothing allocated), so a mismatch is named without building a model that cannot hold
    the weights. A dictionary of another size than the one trained with (a different data
    directory) is named as such. Models that cannot be built on ``meta`` are not compared here
    (loading the weights still reports a mismatch).

    Raises:
        CheckpointConfigError: naming the first weight whose shape differs, or the dictionary.
    """
    try:
        with torch.device("meta"), _NoRandomInit():
            probe = task.build_model(cfg.model)
        expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    except Exception:  # noqa: BLE001 -- the real build, next, reports its own error
        return
    finally:
        probe = None
    for key, tensor in model_state.items():
        want = expected.get(key)
        have = tuple(tensor.shape)
        if want is None or want == have:
            continue
        if (key.endswith(("embed_tokens.weight", "output_projection.weight")) and len(have) == 2
                and len(want) == 2 and have[1:] == want[1:]):
            # optional: a plugin's task config need not declare a data directory
            data = str(cfg.task.get("data") or "").split(os.pathsep)[0]
            dict_file = os.path.join(data, "dict.txt") if data else "the data directory's dict.txt"
            raise CheckpointConfigError(
                f"{path}: the dictionary {dict_file} gives the model {want[0]} embedding rows "
                f"({len(task.source_dictionary)} symbols), but the checkpoint's {key} has {have[0]}: "
                "that dict.txt is not the one the model was trained with; use the data directory "
                "(or dict.txt) it was trained with")
        raise CheckpointConfigError(
            f"{path}: its weights do not match its own config: {key} has shape {list(have)} in the "
            f"file, but the model its config describes needs {list(want)}; the checkpoint is "
            "damaged or was not written by fairseq: use another checkpoint")


def _load_weights(model: torch.nn.Module, model_state: Dict[str, Any], path: str, strict: bool,
                  vocab_size: Optional[int] = None) -> None:
    try:
        model.load_state_dict(model_state, strict=strict)
    except RuntimeError as e:
        lines = [line.strip().rstrip(".") for line in str(e).splitlines() if line.strip()][1:3]
        hint = (f" (is task.data's dict.txt the one it was trained with? {vocab_size} types now)"
                if vocab_size is not None else "")
        raise CheckpointError(f"{path} does not fit the model built from its own config: "
                              f"{'; '.join(lines)}{hint}") from None


def prune_state_dict(state_dict: Dict[str, Any], model_cfg: Optional[Any]) -> Dict[str, Any]:
    """The weights of the layers ``model_cfg`` keeps (LayerDrop pruning), renumbered.

    With ``decoder_layers_to_keep="0,2"`` (or ``encoder_layers_to_keep``), the keys of layer 0
    and 2 become those of layers 0 and 1 and the other layers' keys are dropped; without it, or
    without a config, ``state_dict`` is returned as is.
    """
    if model_cfg is None:
        return state_dict
    passes = []
    for side in ("encoder", "decoder"):
        # optional: a decoder-only model declares no encoder_layers_to_keep
        keep = getattr(model_cfg, f"{side}_layers_to_keep", None)
        if keep:
            kept = sorted(int(i) for i in str(keep).split(",") if i.strip())
            passes.append((re.compile(rf"^{side}.*\.layers\.(\d+)"), {old: new for new, old in enumerate(kept)}))
    if not passes:
        return state_dict
    logger.info("pruning the checkpoint's layers to those in *_layers_to_keep")
    pruned: Dict[str, Any] = {}
    for key, value in state_dict.items():
        if not re.search(r"\.layers\.(\d+)\.", key):
            pruned[key] = value
            continue
        for pattern, mapping in passes:
            m = pattern.search(key)
            if m and int(m.group(1)) in mapping:
                pruned[key[: m.start(1)] + str(mapping[int(m.group(1))]) + key[m.end(1):]] = value
    return pruned


def load_model_ensemble_and_task(filenames: Sequence[str], arg_overrides: Optional[Dict[str, Any]] = None,
                                 task: Any = None, strict: bool = True, suffix: str = "",
                                 num_shards: int = 1, state: Optional[Dict[str, Any]] = None):
    """Load models from checkpoints (this package's or fairseq's) for inference.

    Args:
        filenames: checkpoint paths (an ensemble: one model each).
        arg_overrides: ``{key: value}`` set on every config node with that key (``data`` sets
            the task's data directory); eval-time settings win over the checkpoint's.
            ``user_dir`` is the caller's plugin directory, imported first; the ``user_dir`` a
            checkpoint records is never imported.
        task: a set-up task to build the models with (default: the first checkpoint's task).
        strict: the state dict must match the model key for key.
        suffix: inserted before ``.pt`` of every filename (fairseq's checkpoint suffix).
        num_shards: model-parallel shards per model; only 1 is supported.
        state: an already loaded checkpoint dict to use instead of reading ``filenames[0]``.

    Returns:
        ``(models, cfg, task)``: models in eval mode, the first checkpoint's config, the task.

    Raises:
        CheckpointError: a missing, unsafe, corrupt (SHA-256 mismatch) or unsupported
            checkpoint (one line, nothing loaded).
        PluginRequiredError: its components come from a ``--user-dir`` plugin not given.
    """
    from fairseq import tasks
    from fairseq.dataclass.utils import overwrite_args_by_name

    if num_shards != 1:
        raise CheckpointError(f"num_shards={num_shards}: sharded (model-parallel) checkpoints "
                              "are not supported; give one file per model")
    overrides = dict(arg_overrides or {})
    data = overrides.pop("data", None)
    if overrides.get("user_dir"):  # the caller's plugin directory (never the checkpoint's)
        from fairseq.dataclass.compose import import_user_module

        import_user_module(str(overrides["user_dir"]))
    models = []
    cfg = None
    for i, filename in enumerate(filenames):
        path = filename.replace(".pt", suffix + ".pt") if suffix else filename
        ckpt = state if (state is not None and i == 0) else load_checkpoint_to_cpu(path)
        model_cfg = config_from_checkpoint(ckpt, path)
        if data is not None:
            model_cfg.task.data = data
        if overrides:
            overwrite_args_by_name(model_cfg, overrides)
        if task is None:
            task = tasks.setup_task(model_cfg.task)
        if i == 0:  # the task's own state, saved with the (first) checkpoint
            restore_task_state(ckpt, task)
        check_weights_fit_config(task, model_cfg, ckpt["model"], path)
        try:
            model = task.build_model(model_cfg.model)
        except ValueError as e:
            raise CheckpointError(f"{path}: cannot build its model: {e}") from None
        vocab = len(task.source_dictionary) if getattr(task, "source_dictionary", None) is not None else None
        _load_weights(model, ckpt["model"], path, strict, vocab)
        model.eval()
        models.append(model)
        if cfg is None:
            cfg = model_cfg
    return models, cfg, task


def load_model_ensemble(filenames: Sequence[str], arg_overrides: Optional[Dict[str, Any]] = None,
                        task: Any = None, strict: bool = True, suffix: str = "", num_shards: int = 1,
                        state: Optional[Dict[str, Any]] = None):
    """Like :func:`load_model_ensemble_and_task`, returning ``(models, cfg)``."""
    models, cfg, _ = load_model_ensemble_and_task(filenames, arg_overrides, task, strict, suffix,
                                                  num_shards, state)
    return models, cfg


def load_model_for_inference(path: str, overrides: Optional[Dict[str, Any]] = None,
                             data: Optional[str] = None):
    """Rebuild the task and model a checkpoint was trained with, weights loaded, in eval mode.

    Reads this package's checkpoints and fairseq's (0.12 ``cfg`` dicts and older ``args``
    Namespaces, with fairseq's state-dict layouts).

    Args:
        path: the checkpoint file.
        overrides: values set on every config node that has the key (eval-time settings
            such as ``tokens_per_sample`` win over the checkpoint's).
        data: a data directory replacing the checkpoint's ``task.data``.

    Returns:
        ``(model, task, cfg)``.
    """
    arg_overrides = dict(overrides or {})
    if data is not None:
        arg_overrides["data"] = data
    models, cfg, task = load_model_ensemble_and_task([path], arg_overrides=arg_overrides)
    return models[0], task, cfg

