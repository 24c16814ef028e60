"""Dropout whose keep mask is cheap to draw on a CPU.

``torch.nn.functional.dropout`` on a CPU draws one Bernoulli sample per element, about 12 ns each
on a 2-core EPYC: at the demo model's shape the five dropouts of an update took 8% of its time.
:func:`dropout` draws one 64-bit random word per *four* elements and compares each 16-bit
quarter with a threshold: a dropout's forward and backward are about four times cheaper (0.9 ms
against 4.5 ms for a 16 x 128 x 128 batch at 2 threads, ``benchmarks/bench_dropout.py``).

What that changes: an element is dropped with probability ``round(p * 65536) / 65536``, which is
``p`` to within ``7.6e-6`` (``p = 0.1`` drops 0.1000061 of the elements), and the kept ones are
scaled by the inverse of the exact keep probability, so the expected output is still the input.
The masks come from the same generator (``torch.manual_seed``, saved in checkpoints, replayed by
activation checkpointing), but they are not the masks ``F.dropout`` draws. On other devices, and
while ``torch.compile`` traces (which fuses its own random numbers), it is ``F.dropout``.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # each element's random number is a 16-bit quarter of a 64-bit word


def _cpu_keep_mask(shape: torch.Size, drop_levels: int) -> Tensor:
    """A bool tensor of ``shape``, each element False with probability ``drop_levels / 65536``."""
    n = shape.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # all 64 bits
    quarters = words.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    return quarters >= drop_levels - (_LEVELS >> 1)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with a cheaper mask on a CPU (see the module's docstring)."""
    if not training or p == 0.0:
        return x
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(x, p, training)
    drop_levels = round(p * _LEVELS)
    if drop_levels >= _LEVELS:
        return x * 0.0
    # one multiplier tensor (0 or the scale) in x's dtype, as F.dropout saves for backward: a
    # product by it is a vectorised pass either way, where ``torch.where`` on a bool is not
    scale = _LEVELS / (_LEVELS - drop_levels)
    return x * _cpu_keep_mask(x.shape, drop_levels).to(x.dtype).mul_(scale)


class FairseqDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same train/eval switch, no state) drawing its mask with
    :func:`dropout`. ``module_name`` is accepted as in fairseq and kept for messages."""

    def __init__(self, p: float = 0.5, module_name: Optional[str] = None):
        super().__init__(p)
        self.module_name = module_name

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
