"""The output projection: features to logits over the vocabulary, and the contract that lets
a loss or a scorer apply it itself.

:func:`vocabulary_logits` is the product every output layer of this package computes. How it
runs best depends on its shape: a decoding step has a handful of rows against a vocabulary of
tens of thousands, where CPU BLAS is much faster with the vocabulary as the long side of the
product (``weight @ x.T``) than as the short one (``x @ weight.T``, what ``nn.Linear`` does).

The contract: a model or decoder whose logits are exactly ``projection(features)`` (one plain
``nn.Linear``, no adaptive softmax), and whose normalized probabilities are their softmax,
says so with a ``plain_output_projection()`` method returning that ``nn.Linear`` (``None``
otherwise). The fused cross entropy and target scoring then apply it themselves, block by
block, without the (tokens x vocabulary) logits. The classes keep a declared class attribute
for it, and :func:`withdraw_if_overridden` (called from their ``__init_subclass__``) takes it
from any subclass that gives one of the methods it depends on another body without declaring
it again: such a subclass gets the plain path, never a silently different result.
"""
from typing import Sequence

import torch
from torch import Tensor, nn

#: at most this many rows (a decoding step's batch x beam) and a vocabulary of at least
#: FEW_ROWS_MIN_VOCAB: :func:`vocabulary_logits` computes weight @ x.T on CPU; measured on
#: 2 cores (V = 45,008, C = 128/512): 2-8 rows 1.6-6.9x faster, 1 row equal, 16 rows and more,
#: or V <= 8192, slower
FEW_ROWS = 8
FEW_ROWS_MIN_VOCAB = 16384


def vocabulary_logits(features: Tensor, projection: nn.Linear) -> Tensor:
    """``projection(features)``: (..., C) features -> (..., V) logits, contiguous.

    A decoding step's few rows on CPU without gradients (at most ``FEW_ROWS`` rows,
    ``V >= FEW_ROWS_MIN_VOCAB``, no bias, the weight's dtype) take ``weight @ x.T``, transposed
    into a contiguous result (callers ``.view()`` the logits; the copy costs a few percent of the
    product); everything else is the projection itself. Equal within float rounding.
    """
    weight = projection.weight
    rows = features.numel() // max(features.size(-1), 1)
    if (rows <= FEW_ROWS and weight.size(0) >= FEW_ROWS_MIN_VOCAB and features.device.type == "cpu"
            and features.dtype == weight.dtype and projection.bias is None
            and not (torch.is_grad_enabled() and (features.requires_grad or weight.requires_grad))):
        flat = features.reshape(rows, features.size(-1))
        return torch.mm(weight, flat.t()).t().contiguous().view(*features.shape[:-1], weight.size(0))
    return projection(features)


def withdraw_if_overridden(cls: type, flag: str, methods: Sequence[str]) -> None:
    """For ``__init_subclass__``: ``cls`` loses the capability ``flag`` (a bool class attribute)
    when one of ``methods`` resolves to another function than in the nearest base that set
    ``flag``, unless ``cls`` sets ``flag`` in its own body (it then vouches for its methods).

    Args:
        cls: the class being created.
        flag: the attribute naming the capability (e.g. ``"plain_output"``).
        methods: the methods whose results the capability promises (e.g. ``forward``).
    """
    if flag in vars(cls):
        return
    declaring = next((base for base in cls.__mro__[1:] if flag in vars(base)), None)
    if declaring is None or not getattr(declaring, flag):
        return
    if any(getattr(cls, name, None) is not getattr(declaring, name, None) for name in methods):
        setattr(cls, flag, False)


__all__ = ["FEW_ROWS", "FEW_ROWS_MIN_VOCAB", "vocabulary_logits", "withdraw_if_overridden"]
