"""Subword models (``bpe`` group) and word tokenizers (``tokenizer`` group).

A text goes ``tokenizer.encode`` -> ``bpe.encode`` -> dictionary ids on the way in, and back
through ``bpe.decode`` -> ``tokenizer.decode`` on the way out. Every member is registered with a
config dataclass, so it is chosen as ``bpe=gpt2`` in the Hydra door and ``--bpe gpt2`` in the
legacy one, and a checkpoint records which one its data was made with.

Nothing here downloads: files such as GPT-2's ``encoder.json`` are read from local paths.
"""
from typing import Any, Optional

from fairseq.registry import import_submodules, setup_registry

TOKENIZER_REGISTRY = setup_registry("tokenizer")
BPE_REGISTRY = setup_registry("bpe")


def register_tokenizer(name: str, dataclass: Optional[type] = None):
    return TOKENIZER_REGISTRY.register(name, dataclass=dataclass)


def register_bpe(name: str, dataclass: Optional[type] = None):
    return BPE_REGISTRY.register(name, dataclass=dataclass)


def _build(registry, cfg: Any) -> Any:
    if cfg is None:
        return None
    if isinstance(cfg, str):
        return registry.get(cfg).cls(None)
    # optional: a dataclass instance built by hand carries no _name (its type names it, below)
    name = getattr(cfg, "_name", None)
    if name is None and not hasattr(cfg, "__dataclass_fields__"):
        return None
    from omegaconf.errors import MissingMandatoryValue

    from fairseq.data.encoders.errors import EncoderSetupError

    try:
        return registry.build(cfg)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", "?")
        raise EncoderSetupError(f"{registry.group}.{key} is not set: give the path of the file "
                                f"(--{str(key).replace('_', '-')} in the legacy door)") from None


def build_tokenizer(cfg: Any) -> Any:
    """The tokenizer a ``tokenizer`` config node (or name) selects; ``None`` for none."""
    return _build(TOKENIZER_REGISTRY, cfg)


def build_bpe(cfg: Any) -> Any:
    """The subword model a ``bpe`` config node (or name) selects; ``None`` for none."""
    return _build(BPE_REGISTRY, cfg)


import_submodules(__name__, __path__)

__all__ = ["BPE_REGISTRY", "TOKENIZER_REGISTRY", "build_bpe", "build_tokenizer",
           "register_bpe", "register_tokenizer"]
