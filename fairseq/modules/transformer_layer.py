"""One decoder block: causal self-attention then a position-wise feed-forward network."""
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from fairseq.modules.activations import get_activation_fn
from fairseq.modules.fairseq_dropout import FairseqDropout
from fairseq.modules.multihead_attention import AttentionCache, MultiheadAttention
from fairseq.modules.normalization import build_norm
from fairseq.modules.rotary import RotaryEmbedding


class TransformerDecoderLayer(nn.Module):
    """A decoder-only transformer block, pre- or post-norm.

    Post-norm (the original transformer): ``x = norm(x + dropout(sublayer(x)))``.
    Pre-norm (``normalize_before``, stabler for deep models): ``x = x + dropout(sublayer(norm(x)))``.

    Args:
        embed_dim: model dimension C.
        ffn_embed_dim: hidden size of the feed-forward network.
        num_heads: attention heads.
        dropout: residual dropout after each sublayer.
        attention_dropout: dropout on the attention weights.
        activation_dropout: dropout after the feed-forward activation.
        activation_fn: name of the feed-forward activation (see ``get_activation_fn``).
        normalize_before: pre-norm if True, post-norm otherwise.
        scale_attn: NormFormer: LayerNorm the attention output (``attn_ln``).
        scale_fc: NormFormer: LayerNorm the feed-forward hidden layer (``ffn_layernorm``).
        scale_heads: NormFormer: a learned scale per head (``c_attn``). As in fairseq 0.12 it
            multiplies the ``head_dim``-wide slices of the attention module's *projected*
            output, so checkpoints trained with fairseq compute the same.
        scale_resids: NormFormer: a learned per-channel scale of the feed-forward residual
            (``w_resid``).
        kv_heads: key/value heads of the attention (``None`` or 0: ``num_heads``; fewer:
            grouped-query attention, 1: multi-query).
        rotary_theta: rotary position embeddings of that base in the attention, or ``None``.
        max_positions: positions the rotary tables cover from the start (more on demand).
        norm: ``"layernorm"`` or ``"rmsnorm"`` for every norm of the block.
        norm_eps: their epsilon.
        bias: biases in the linear layers and LayerNorms (``False``: none, as in Llama).
        ffn_gated: gated feed-forward ``fc2(act(fc1(x)) * fc3(x))`` (SwiGLU with ``silu``).

    Parameter names follow fairseq's, so its checkpoints load key for key.
    """

    def __init__(self, embed_dim: int, ffn_embed_dim: int, num_heads: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 activation_fn: str = "relu", normalize_before: bool = False,
                 scale_attn: bool = False, scale_fc: bool = False, scale_heads: bool = False,
                 scale_resids: bool = False, kv_heads: Optional[int] = None,
                 rotary_theta: Optional[float] = None, max_positions: int = 0, norm: str = "layernorm",
                 norm_eps: float = 1e-5, bias: bool = True, ffn_gated: bool = False):
        super().__init__()
        self.normalize_before = normalize_before
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        rotary = None
        if rotary_theta is not None:
            rotary = RotaryEmbedding(embed_dim // num_heads, rotary_theta, max_positions=max_positions)
        self.self_attn = MultiheadAttention(embed_dim, num_heads, dropout=attention_dropout, bias=bias,
                                            kv_heads=kv_heads, rotary=rotary)
        self.self_attn_layer_norm = build_norm(norm, embed_dim, norm_eps, bias)
        self.attn_ln = build_norm(norm, embed_dim, norm_eps, bias) if scale_attn else None
        self.c_attn = nn.Parameter(torch.ones(num_heads)) if scale_heads else None
        self.fc1 = nn.Linear(embed_dim, ffn_embed_dim, bias=bias)
        self.ffn_layernorm = build_norm(norm, ffn_embed_dim, norm_eps, bias) if scale_fc else None
        self.fc2 = nn.Linear(ffn_embed_dim, embed_dim, bias=bias)
        # the linear branch of a gated feed-forward (Llama's up_proj; fc1 is its gate_proj)
        self.fc3 = nn.Linear(embed_dim, ffn_embed_dim, bias=bias) if ffn_gated else None
        self.w_resid = nn.Parameter(torch.ones(embed_dim)) if scale_resids else None
        self.final_layer_norm = build_norm(norm, embed_dim, norm_eps, bias)
        self.activation_fn = get_activation_fn(activation_fn)
        self.activation_dropout = FairseqDropout(activation_dropout)
        self.dropout = FairseqDropout(dropout)
        # fc1, fc2 (and fc3) keep nn.Linear's own initialisation (kaiming-uniform weights, uniform
        # biases), as fairseq 0.12.2's layers do: with xavier weights the feed-forward output is
        # about twice as large at the start, and the first losses of wide models differ

    def feed_forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C) position-wise network."""
        h = self.activation_fn(self.fc1(x))  # (B, T, F)
        if self.fc3 is not None:
            h = h * self.fc3(x)
        x = self.activation_dropout(h)
        if self.ffn_layernorm is not None:
            x = self.ffn_layernorm(x)
        return self.fc2(x)  # (B, T, C)

    def attention(self, x: Tensor, attn_mask: Optional[Tensor], cache: Optional[AttentionCache]) -> Tensor:
        """(B, T, C) -> (B, T, C) self-attention, with the NormFormer scalings if enabled."""
        y = self.self_attn(x, attn_mask, cache)  # (B, T, C)
        if self.c_attn is not None:
            B, T, C = y.shape
            y = (y.view(B, T, self.num_heads, C // self.num_heads) * self.c_attn.view(-1, 1)).view(B, T, C)
        if self.attn_ln is not None:
            y = self.attn_ln(y)
        return y

    def _ffn_residual(self, x: Tensor) -> Tensor:
        return x if self.w_resid is None else x * self.w_resid

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None,
                cache: Optional[AttentionCache] = None) -> Tensor:
        """Apply the block.

        Args:
            x: (B, T, C) input.
            attn_mask: optional boolean (B, 1, T, S) attention mask (see ``MultiheadAttention``).
            cache: this layer's key/value cache for incremental decoding, updated in place.

        Returns:
            (B, T, C) output.
        """
        if self.normalize_before:
            x = x + self.dropout(self.attention(self.self_attn_layer_norm(x), attn_mask, cache))
            x = self._ffn_residual(x) + self.dropout(self.feed_forward(self.final_layer_norm(x)))
        else:
            x = self.self_attn_layer_norm(x + self.dropout(self.attention(x, attn_mask, cache)))
            x = self.final_layer_norm(self._ffn_residual(x) + self.dropout(self.feed_forward(x)))
        return x


__all__ = ["TransformerDecoderLayer"]
