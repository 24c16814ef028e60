"""Rotary position embeddings (RoPE), in Hugging Face Llama's "rotate half" convention.

For a head dimension ``hd`` the frequencies are ``inv_freq[j] = 1 / theta ** (2 j / hd)``,
``j < hd / 2``, in float32; position ``p`` turns feature ``j`` and feature ``j + hd / 2`` of every
head by the angle ``p * inv_freq[j]``. Queries and keys are rotated after their projection and
before attention, so their dot product depends only on the distance between two positions.

The cos/sin tables are non-persistent buffers (a state dict holds no trace of them), built on
first use and rebuilt longer when a later call needs further positions.
"""
from typing import Tuple

import torch
import torch.nn as nn
from torch import Tensor

# the tables grow to at least this many positions, so that token-by-token decoding does not
# rebuild them at every step
_MIN_TABLE = 256


def rotary_inv_freq(head_dim: int, theta: float) -> Tensor:
    """The ``head_dim / 2`` rotation frequencies, float32 (computed as transformers' Llama does,
    so that exported models rotate by the same angles to the last bit)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    return 1.0 / (theta ** exponents)


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last dimension split in two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotates (B, heads, T, hd) queries and keys by their positions.

    Args:
        head_dim: the per-head dimension hd; must be even.
        theta: the base of the frequencies (10000 in the RoPE paper and Llama 1/2).
        max_positions: how many positions to tabulate at the first use, when known (more are
            added on demand).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, max_positions: int = 0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary position embeddings need an even head dimension, got {head_dim}")
        if not theta > 0:
            raise ValueError(f"rotary theta must be > 0, got {theta}")
        self.head_dim = head_dim
        self.theta = float(theta)
        self.initial_positions = max(int(max_positions), _MIN_TABLE)
        self.register_buffer("cos_table", torch.empty(0), persistent=False)
        self.register_buffer("sin_table", torch.empty(0), persistent=False)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}"

    def _tables(self, length: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        """(length, hd) float32 cos and sin tables, rebuilt when too short, moved or cast."""
        cos = self.cos_table
        if cos.dim() != 2 or cos.size(0) < length or cos.device != device or cos.dtype != torch.float32:
            size = max(length, self.initial_positions, 2 * cos.size(0) if cos.dim() == 2 else 0)
            positions = torch.arange(size, device=device, dtype=torch.int64).to(torch.float32)
            angles = torch.outer(positions, rotary_inv_freq(self.head_dim, self.theta).to(device))
            angles = torch.cat((angles, angles), dim=-1)  # (size, hd)
            self.cos_table, self.sin_table = angles.cos(), angles.sin()
        return self.cos_table[:length], self.sin_table[:length]

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> Tuple[Tensor, Tensor]:
        """``q`` (B, H, T, hd) and ``k`` (B, KV, T, hd) rotated for positions ``offset ..
        offset + T - 1`` (``offset``: how many positions came before, e.g. cached ones)."""
        T = q.size(-2)
        cos, sin = self._tables(offset + T, q.device)
        cos, sin = cos[offset:offset + T], sin[offset:offset + T]  # (T, hd)
        return self.rotate(q, cos, sin), self.rotate(k, cos, sin)

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """``x * cos + rotate_half(x) * sin`` in ``x``'s dtype (the tables cast to it, as
        transformers does under mixed precision)."""
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return x * cos + rotate_half(x) * sin


__all__ = ["RotaryEmbedding", "rotary_inv_freq", "rotate_half"]
