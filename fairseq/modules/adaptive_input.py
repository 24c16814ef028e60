"""Adaptive input embeddings (Baevski & Auli, 2019): smaller embeddings for rarer words.

The vocabulary, sorted by frequency, is cut into bands at ``cutoff``. Band ``i`` has embeddings of
size ``initial_dim / factor**i`` projected up to a common ``output_dim``, so frequent words get
large embeddings and the long tail costs little.
"""
from typing import List, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

Cutoff = Union[str, Sequence[int]]


def normalize_cutoff(cutoff: Cutoff, vocab_size: int) -> List[int]:
    """Band boundaries as an increasing list of ints that ends at ``vocab_size``.

    Args:
        cutoff: ``"20000,60000"`` or ``[20000, 60000]``; ``vocab_size`` is appended when the
            last boundary is below it.
        vocab_size: size of the vocabulary.

    Raises:
        ValueError: when the boundaries are not increasing or pass the vocabulary size.
    """
    if isinstance(cutoff, str):
        bounds = [int(part) for part in cutoff.split(",") if part.strip()]
    else:
        bounds = [int(b) for b in cutoff]
    if bounds and bounds[-1] < vocab_size:
        bounds.append(vocab_size)
    if not bounds or any(a >= b for a, b in zip([0] + bounds, bounds)) or bounds[-1] != vocab_size:
        raise ValueError(f"cutoff {cutoff!r} must be increasing positive ints not above the "
                         f"vocabulary size {vocab_size}")
    return bounds


class AdaptiveInput(nn.Module):
    """Token embedding with one band of embeddings (and a projection) per frequency band.

    Args:
        vocab_size: size of the vocabulary.
        padding_idx: pad id (must fall in the first band); its embedding is zero.
        initial_dim: embedding size of the first band.
        factor: each band's embedding size is the previous one's divided by ``factor``.
        output_dim: size every band is projected to (``embedding_dim`` of this module).
        cutoff: band boundaries, see :func:`normalize_cutoff`.
    """

    def __init__(self, vocab_size: int, padding_idx: int, initial_dim: int, factor: float,
                 output_dim: int, cutoff: Cutoff):
        super().__init__()
        self.cutoff = normalize_cutoff(cutoff, vocab_size)
        if not 0 <= padding_idx < self.cutoff[0]:
            raise ValueError(f"padding_idx {padding_idx} must fall in the first band [0, {self.cutoff[0]})")
        self.vocab_size = vocab_size
        self.padding_idx = padding_idx
        self.embedding_dim = output_dim
        self.embeddings = nn.ModuleList()
        self.projections = nn.ModuleList()
        for i, (start, end) in enumerate(zip([0] + self.cutoff, self.cutoff)):
            dim = int(initial_dim // factor**i)
            if dim < 1:
                raise ValueError(f"band {i} of the adaptive input gets dimension {dim}; "
                                 f"lower the factor ({factor}) or use fewer bands")
            embedding = nn.Embedding(end - start, dim, padding_idx=padding_idx if i == 0 else None)
            nn.init.normal_(embedding.weight, mean=0.0, std=dim**-0.5)
            projection = nn.Linear(dim, output_dim, bias=False)
            nn.init.xavier_uniform_(projection.weight)
            self.embeddings.append(embedding)
            self.projections.append(projection)
        with torch.no_grad():
            self.embeddings[0].weight[padding_idx].zero_()

    def forward(self, tokens: Tensor) -> Tensor:
        """Embed ``tokens`` (B, T) into (B, T, output_dim)."""
        out = None
        for start, end, embedding, projection in zip(
            [0] + self.cutoff, self.cutoff, self.embeddings, self.projections
        ):
            # Embed every token in every band (ids clamped into the band) and keep, for each
            # token, its own band: dense ops, no data-dependent shapes, no device sync.
            local = (tokens - start).clamp(0, end - start - 1)
            band = projection(embedding(local))  # (B, T, output_dim)
            if out is None:
                out = band  # tokens of later bands are overwritten below
            else:
                in_band = (tokens >= start) & (tokens < end)  # (B, T)
                out = torch.where(in_band.unsqueeze(-1), band, out)
        return out


__all__ = ["AdaptiveInput", "normalize_cutoff"]
