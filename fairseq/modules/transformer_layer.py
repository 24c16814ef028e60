"""One decoder block: causal self-attention then a position-wise feed-forward network."""
from typing import Optional

import torch.nn as nn
from torch import Tensor

from fairseq.modules.activations import get_activation_fn
from fairseq.modules.multihead_attention import AttentionCache, MultiheadAttention


class TransformerDecoderLayer(nn.Module):
    """A decoder-only transformer block, pre- or post-LayerNorm.

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
    """

    def __init__(self, embed_dim: int, ffn_embed_dim: int, num_heads: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 activation_fn: str = "relu", normalize_before: bool = False):
        super().__init__()
        self.normalize_before = normalize_before
        self.self_attn = MultiheadAttention(embed_dim, num_heads, dropout=attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_embed_dim)
        self.fc2 = nn.Linear(ffn_embed_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.activation_fn = get_activation_fn(activation_fn)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def feed_forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C) position-wise network."""
        x = self.activation_dropout(self.activation_fn(self.fc1(x)))  # (B, T, F)
        return self.fc2(x)  # (B, T, C)

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
            x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), attn_mask, cache))
            x = x + self.dropout(self.feed_forward(self.final_layer_norm(x)))
        else:
            x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, attn_mask, cache)))
            x = self.final_layer_norm(x + self.dropout(self.feed_forward(x)))
        return x


__all__ = ["TransformerDecoderLayer"]
