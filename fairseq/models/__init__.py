"""Models: the registry, architectures (named presets) and ``build_model``."""
from argparse import Namespace
from dataclasses import fields
from typing import Any, Callable, Dict, Optional, Union

from omegaconf import DictConfig

from fairseq.dataclass.values import OC_MISSING, field_default, interpolation_target
from fairseq.errors import ConfigError
from fairseq.models.fairseq_model import BaseFairseqModel, FairseqLanguageModel
from fairseq.registry import import_submodules, setup_registry

MODEL_REGISTRY = setup_registry("model", base_class=BaseFairseqModel)

__all__ = ["BaseFairseqModel", "FairseqLanguageModel", "MODEL_REGISTRY", "architecture_function", "build_model",
           "preset_of_architecture_function", "register_model", "register_model_architecture"]


def register_model(name: str, dataclass: Optional[type] = None):
    """Class decorator registering a model (and its config dataclass) under ``name``.

    The model's own name is also its base architecture: ``--arch NAME`` / ``model=NAME``.
    """
    return MODEL_REGISTRY.register(name, dataclass)


def register_model_architecture(model_name: str, arch_name: str,
                                preset: Optional[Dict[str, Any]] = None) -> Callable[[Any], Any]:
    """Register ``arch_name``: model ``model_name`` with the config defaults in ``preset``.

    A preset is data, merged beneath anything the user sets explicitly, in both doors. fairseq
    0.12's decorator form works too: over a function that fills in ``args``
    (``args.decoder_layers = getattr(args, "decoder_layers", 2)``, then perhaps
    ``base_lm_architecture(args)``), the function runs once, at registration, on an empty
    namespace, and what it sets (where that differs from ``model_name``'s defaults) becomes the
    preset. So a value the function computes from another field (``args.decoder_embed_dim * 4``)
    is computed from the preset's value, not from a flag given later.

    Returns:
        the decorator for that form; it registers the function's preset and returns the function,
        so other architecture functions can call it.
    """
    MODEL_REGISTRY.register_preset(model_name, arch_name, preset)

    def from_function(function: Any) -> Any:
        where = f"@register_model_architecture({model_name!r}, {arch_name!r})"
        if preset is not None:
            raise ConfigError(f"{where} decorates {getattr(function, '__name__', function)!r}, but it was "
                              "given a preset as well: use one form, the preset dict or the function")
        del MODEL_REGISTRY.entries[arch_name]  # registered above with no preset; not kept on an error
        MODEL_REGISTRY.register_preset(model_name, arch_name,
                                       preset_of_architecture_function(function, model_name, where))
        return function

    return from_function


def preset_of_architecture_function(function: Callable[[Namespace], Any], model_name: str,
                                    where: str = "the architecture function") -> Dict[str, Any]:
    """What ``function(args)`` sets on an empty namespace, less what equals ``model_name``'s
    defaults (a call to ``base_lm_architecture`` sets every field)."""
    args = Namespace()
    try:
        function(args)
    except AttributeError as exc:
        name = getattr(exc, "name", None) or str(exc)
        raise ConfigError(f"{where}: {getattr(function, '__name__', function)!r} reads args.{name} before "
                          f"setting it; the function runs once on an empty namespace to make the "
                          f"preset, so read it as getattr(args, {name!r}, DEFAULT)") from None
    entry = MODEL_REGISTRY.get(model_name)
    defaults = entry.default_config()
    values = vars(args)
    # field -> the sibling its default interpolates (decoder_input_dim -> decoder_embed_dim)
    follows = {}
    for f in fields(entry.dataclass) if entry.dataclass is not None else ():
        target = interpolation_target(f.default)
        if target is not None and target.startswith("."):
            follows[f.name] = target[1:]

    def kept(key: str, value: Any) -> bool:
        if key in follows and follows[key] in values and values[follows[key]] == value:
            return False  # fairseq's "same as the embed dim": left to follow it, not frozen
        return defaults is None or not hasattr(defaults, key) or getattr(defaults, key) != value

    return {key: value for key, value in values.items() if kept(key, value)}


def architecture_function(arch_name: str) -> Callable[[Namespace], None]:
    """fairseq's function form of a registered architecture: ``fill(args)`` sets every field of
    the model's config that ``args`` lacks (or holds as None) to the architecture's value, as
    fairseq's ``base_lm_architecture`` does. Fields whose default follows another field
    (``decoder_input_dim``) are left alone unless the preset sets them."""

    def fill(args: Any) -> None:
        entry = MODEL_REGISTRY.get(arch_name)
        for f in fields(entry.dataclass):
            # optional: filling what a fairseq-style namespace lacks (or holds as None) is the point
            if f.name.startswith("_") or getattr(args, f.name, None) is not None:
                continue
            value = entry.preset[f.name] if f.name in entry.preset else field_default(f)
            if value == OC_MISSING or interpolation_target(value) is not None:
                continue  # a required value or an interpolation: the config resolves it
            setattr(args, f.name, value)

    fill.__name__ = fill.__qualname__ = arch_name
    fill.__doc__ = f"Fill the fields ``args`` lacks with the ``{arch_name}`` architecture's values."
    return fill


def build_model(cfg: Union[DictConfig, Namespace], task: Any) -> BaseFairseqModel:
    """Build the model a config (``cfg.model`` node or legacy namespace with ``arch``) selects."""
    return MODEL_REGISTRY.build(cfg, task)


import_submodules(__name__, __path__)

# generic base classes that fairseq users subclass (fairseq's import paths)
from fairseq.models.fairseq_decoder import FairseqDecoder  # noqa: E402
from fairseq.models.fairseq_encoder import EncoderOut, FairseqEncoder  # noqa: E402
from fairseq.models.fairseq_encoder_decoder_model import FairseqEncoderDecoderModel  # noqa: E402
from fairseq.models.fairseq_incremental_decoder import FairseqIncrementalDecoder  # noqa: E402

__all__ += ["EncoderOut", "FairseqDecoder", "FairseqEncoder", "FairseqEncoderDecoderModel",
            "FairseqIncrementalDecoder"]
