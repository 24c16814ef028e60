"""Causal multi-head self-attention with an optional key/value cache for decoding."""
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

# cached keys/values of one attention module: {"key": (B, H, S, D), "value": (B, H, S, D)}
AttentionCache = Dict[str, Tensor]


class MultiheadAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    Queries, keys and values come from one fused projection. Without a mask the attention is
    causal (``is_causal=True``): no mask tensor is materialized and the fused kernels apply.

    Args:
        embed_dim: model dimension C.
        num_heads: number of heads H; must divide ``embed_dim``.
        dropout: dropout on the attention weights (training only).
        bias: whether the projections have biases.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Initialize the query, key and value blocks as three separate square matrices.
        for block in self.in_proj.weight.chunk(3, dim=0):
            nn.init.xavier_uniform_(block, gain=2**-0.5)
        nn.init.xavier_uniform_(self.out_proj.weight)
        for linear in (self.in_proj, self.out_proj):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None,
                cache: Optional[AttentionCache] = None) -> Tensor:
        """Attend over the sequence (and over the cached past, if any).

        Args:
            x: (B, T, C) input of the new positions.
            attn_mask: boolean (B, 1, T, S) mask, True where a query may attend to a key, with S
                the total (cached + new) length. ``None`` means plain causal attention, which
                requires that the cache, if given, is empty or that T == 1.
            cache: the dict holding this module's past keys and values; it is read, then
                updated in place with the new positions.

        Returns:
            (B, T, C) output.
        """
        B, T, C = x.shape
        q, k, v = self.in_proj(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

        if cache is not None:
            if "key" in cache:
                k = torch.cat([cache["key"], k], dim=2)  # (B, H, S, D)
                v = torch.cat([cache["value"], v], dim=2)  # (B, H, S, D)
            cache["key"], cache["value"] = k, v

        is_causal = False
        if attn_mask is None:
            S = k.size(2)
            if S != T and T != 1:
                raise ValueError(f"{T} new positions after {S - T} cached ones need an explicit attn_mask")
            # a single new query attends to everything before it: no mask at all
            is_causal = S == T and T > 1
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.out_proj(y)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints with separate q_proj/k_proj/v_proj (fairseq's layout) load into in_proj.
        for kind in ("weight", "bias"):
            names = [f"{prefix}{p}_proj.{kind}" for p in ("q", "k", "v")]
            if all(name in state_dict for name in names):
                state_dict[f"{prefix}in_proj.{kind}"] = torch.cat([state_dict.pop(n) for n in names], dim=0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


__all__ = ["AttentionCache", "MultiheadAttention"]
