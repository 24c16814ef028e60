"""Position embeddings for token sequences: fixed sinusoids or a learned table.

Positions count from ``padding_idx + 1`` and skip padding: the first real token of every row has
position ``padding_idx + 1`` and a pad token gets ``padding_idx``, whose embedding is zero. With
the right padding that the data pipeline produces, position ``i`` simply follows ``i`` real tokens.
"""
import math
from typing import Optional, Union

import torch
import torch.nn as nn
from torch import Tensor


def make_positions(tokens: Tensor, padding_idx: int, past_counts: Union[Tensor, int, None] = None) -> Tensor:
    """Position ids of ``tokens``, skipping pads.

    Args:
        tokens: (B, T) token ids.
        padding_idx: the pad id; pads get it as their position.
        past_counts: (B,) number of real tokens already seen by each row (cached decoding),
            so that positions continue where they stopped; an int when every row has seen
            the same number. ``None`` means zero.

    Returns:
        (B, T) long tensor of positions.
    """
    is_token = tokens.ne(padding_idx).long()  # (B, T)
    positions = torch.cumsum(is_token, dim=1)
    if isinstance(past_counts, Tensor):
        positions = positions + past_counts.unsqueeze(1)
    elif past_counts:
        positions = positions + past_counts
    return positions * is_token + padding_idx


def sinusoid_table(num_positions: int, embedding_dim: int, padding_idx: Optional[int] = None) -> Tensor:
    """(num_positions, embedding_dim) table: sines in the first half, cosines in the second.

    Frequencies fall geometrically from 1 to 1/10000 over the half dimension. The row of
    ``padding_idx`` is zero; an odd ``embedding_dim`` gets a last column of zeros.
    """
    half_dim = embedding_dim // 2
    rate = math.log(10000) / max(half_dim - 1, 1)
    frequencies = torch.exp(torch.arange(half_dim, dtype=torch.float) * -rate)  # (half,)
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * frequencies  # (P, half)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if embedding_dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    if padding_idx is not None:
        table[padding_idx] = 0
    return table


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed sinusoidal position embeddings, no parameters.

    The table is a non-persistent buffer (it is not saved in checkpoints) built once for
    ``init_size`` positions and rebuilt larger when a longer sequence arrives.

    Args:
        embedding_dim: size of each embedding.
        padding_idx: pad id; positions start right after it.
        init_size: number of table rows to build up front.
    """

    max_positions = int(1e5)  # no table limit; a bound for ``max_positions()`` of the decoder

    def __init__(self, embedding_dim: int, padding_idx: int, init_size: int = 1024):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        table = sinusoid_table(init_size + padding_idx + 1, embedding_dim, padding_idx)
        self.register_buffer("weights", table, persistent=False)

    def _ensure_rows(self, num_rows: int) -> None:
        if num_rows > self.weights.size(0):
            table = sinusoid_table(num_rows, self.embedding_dim, self.padding_idx)
            self.weights = table.to(self.weights)

    def forward(self, tokens: Tensor, past_counts: Union[Tensor, int, None] = None, past_length: int = 0) -> Tensor:
        """Embed the positions of ``tokens``.

        Args:
            tokens: (B, T) token ids.
            past_counts: (B,) real tokens already consumed per row (cached decoding), or one int
                for every row.
            past_length: cached sequence length, an upper bound of ``past_counts``; used to size
                the table without reading ``past_counts`` back from the device.

        Returns:
            (B, T, embedding_dim) embeddings.
        """
        self._ensure_rows(self.padding_idx + 1 + past_length + tokens.size(1))
        positions = make_positions(tokens, self.padding_idx, past_counts)  # (B, T)
        return self.weights[positions].detach()


class LearnedPositionalEmbedding(nn.Embedding):
    """A learned table of ``max_positions`` position embeddings (plus the pad rows).

    Args:
        max_positions: the longest sequence it can embed.
        embedding_dim: size of each embedding.
        padding_idx: pad id; positions start right after it.
    """

    def __init__(self, max_positions: int, embedding_dim: int, padding_idx: int):
        super().__init__(max_positions + padding_idx + 1, embedding_dim, padding_idx=padding_idx)
        self.max_positions = max_positions
        nn.init.normal_(self.weight, mean=0.0, std=embedding_dim**-0.5)
        with torch.no_grad():
            self.weight[padding_idx].zero_()

    def forward(self, tokens: Tensor, past_counts: Union[Tensor, int, None] = None, past_length: int = 0) -> Tensor:
        """Same contract as :meth:`SinusoidalPositionalEmbedding.forward`."""
        needed = past_length + tokens.size(1)
        if needed > self.max_positions:
            raise ValueError(f"sequence of {needed} positions is longer than the learned "
                             f"position table ({self.max_positions}); raise max_target_positions")
        positions = make_positions(tokens, self.padding_idx, past_counts)  # (B, T)
        return super().forward(positions)


def PositionalEmbedding(max_positions: int, embedding_dim: int, padding_idx: int,
                        learned: bool = False) -> nn.Module:
    """Build a learned or sinusoidal position embedding for sequences up to ``max_positions``."""
    if learned:
        return LearnedPositionalEmbedding(max_positions, embedding_dim, padding_idx)
    return SinusoidalPositionalEmbedding(embedding_dim, padding_idx, init_size=max_positions)


__all__ = [
    "LearnedPositionalEmbedding", "PositionalEmbedding", "SinusoidalPositionalEmbedding",
    "make_positions", "sinusoid_table",
]
