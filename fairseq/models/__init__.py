"""Models: the registry, architectures (named presets) and ``build_model``."""
from argparse import Namespace
from typing import Any, Callable, Dict, Optional, Union

from omegaconf import DictConfig

from fairseq.errors import ConfigError
from fairseq.models.fairseq_model import BaseFairseqModel, FairseqLanguageModel
from fairseq.registry import import_submodules, setup_registry

MODEL_REGISTRY = setup_registry("model", base_class=BaseFairseqModel)

__all__ = ["BaseFairseqModel", "FairseqLanguageModel", "MODEL_REGISTRY", "build_model", "register_model",
           "register_model_architecture"]


def register_model(name: str, dataclass: Optional[type] = None):
    """Class decorator registering a model (and its config dataclass) under ``name``.

    The model's own name is also its base architecture: ``--arch NAME`` / ``model=NAME``.
    """
    return MODEL_REGISTRY.register(name, dataclass)


def register_model_architecture(model_name: str, arch_name: str,
                                preset: Optional[Dict[str, Any]] = None) -> Callable[[Any], None]:
    """Register ``arch_name``: model ``model_name`` with the config defaults in ``preset``.

    A preset is data, merged beneath anything the user sets explicitly.

    Returns:
        a callable that refuses fairseq 0.12's decorator form (a function setting ``args``),
        which would otherwise fail as ``'NoneType' object is not callable``.
    """
    MODEL_REGISTRY.register_preset(model_name, arch_name, preset)

    def refuse_decorator_form(function: Any) -> None:
        raise ConfigError(f"@register_model_architecture({model_name!r}, {arch_name!r}) decorates "
                          f"{getattr(function, '__name__', function)!r}: an architecture here is a preset "
                          f"of config values, not a function; write register_model_architecture("
                          f"{model_name!r}, {arch_name!r}, {{'field': value, ...}})")

    return refuse_decorator_form


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
