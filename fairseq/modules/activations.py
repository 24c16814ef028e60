"""Activation functions selectable by name (``--activation-fn``)."""
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU through its tanh approximation (the form GPT-2 and BERT were trained with)."""
    return F.gelu(x, approximate="tanh")


def identity(x: Tensor) -> Tensor:
    return x


_ACTIVATIONS: Dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact, through erf
    "gelu_fast": gelu_tanh,  # older name of gelu_accurate, kept for old configs
    "gelu_accurate": gelu_tanh,
    "tanh": torch.tanh,
    "silu": F.silu,
    "linear": identity,
}

ACTIVATION_NAMES = tuple(_ACTIVATIONS)


def get_activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    """The activation function called ``name``.

    Args:
        name: one of :data:`ACTIVATION_NAMES` (a choice-enum member works too).

    Returns:
        A function mapping a tensor to a tensor of the same shape.

    Raises:
        ValueError: for an unknown name.
    """
    key = str(name)
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation_fn {key!r}; choices: {', '.join(ACTIVATION_NAMES)}")
    return _ACTIVATIONS[key]


__all__ = ["ACTIVATION_NAMES", "get_activation_fn", "gelu_tanh"]
