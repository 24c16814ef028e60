"""Causal multi-head self-attention with an optional key/value cache for decoding.

The cache
---------
A module's cache is a dict: ``"key"`` and ``"value"``, (B, KV, S, D), are the keys and values of
the S positions so far (KV: the key/value heads, fewer than the query heads with grouped-query
attention; keys already rotated when the module has rotary position embeddings). They are
views of the first S positions of larger buffers (``"buffers"``, a :class:`KVBuffers`, not a
tensor), so that a step writes its new positions in place instead of concatenating (and
copying) the whole past, and :func:`reorder_cache_` reorders the rows (beam search) in place. Anyone may still replace
``"key"``/``"value"`` by other tensors (a generic reorder does): the next step then adopts them
into the buffers.
"""
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fairseq.modules.rotary import RotaryEmbedding

# cached keys/values of one attention module: {"key": (B, KV, S, D), "value": (B, KV, S, D),
# "buffers": KVBuffers}
AttentionCache = Dict[str, Any]


class KVBuffers:
    """The (B, H, capacity, D) key and value buffers whose first S positions a cache's
    ``"key"``/``"value"`` are. Not a tensor nor a dict, so that walks over a decoder's state that
    select rows of every tensor (a generic reorder) leave it alone."""

    __slots__ = ("key", "value")

    def __init__(self, key: Tensor, value: Tensor):
        self.key, self.value = key, value

    def capacity(self) -> int:
        return self.key.size(2)

    def holds(self, key: Tensor, value: Tensor) -> bool:
        """Whether ``key``/``value`` are the buffers' first positions (no one replaced them)."""
        return all(t.data_ptr() == b.data_ptr() and t.stride() == b.stride() and t.shape[:2] == b.shape[:2]
                   and t.dtype == b.dtype and t.device == b.device
                   for t, b in ((key, self.key), (value, self.value)))


def _cache_append(cache: AttentionCache, k: Tensor, v: Tensor) -> None:
    """Append the (B, H, T, D) new keys and values to ``cache``, in place when they fit."""
    past_k, past_v = cache.get("key"), cache.get("value")
    past = 0 if past_k is None else past_k.size(2)
    total = past + k.size(2)
    buffers = cache.get("buffers")
    adopt = past_k is not None and not (isinstance(buffers, KVBuffers) and buffers.holds(past_k, past_v))
    fits = (isinstance(buffers, KVBuffers) and buffers.capacity() >= total
            and buffers.key.shape[:2] == k.shape[:2] and buffers.key.dtype == k.dtype
            and buffers.key.device == k.device)
    if not fits:  # new buffers, 1.5x (at least 64 positions) what is needed now
        B, H, _, D = k.shape
        capacity = total + max(total // 2, 64)
        new = KVBuffers(k.new_empty(B, H, capacity, D), v.new_empty(B, H, capacity, D))
        if past:
            new.key[:, :, :past].copy_(past_k)
            new.value[:, :, :past].copy_(past_v)
        buffers = cache["buffers"] = new
    elif adopt:  # "key"/"value" were replaced (e.g. reordered by a copy): take them in
        buffers.key[:, :, :past].copy_(past_k)
        buffers.value[:, :, :past].copy_(past_v)
    buffers.key[:, :, past:total].copy_(k)
    buffers.value[:, :, past:total].copy_(v)
    cache["key"], cache["value"] = buffers.key[:, :, :total], buffers.value[:, :, :total]


def row_moves(new_order: Tensor) -> Tuple[Tensor, Tensor]:
    """``(changed, source)``: the rows that ``new_order`` changes, and the old rows they take."""
    changed = new_order.ne(torch.arange(new_order.numel(), device=new_order.device)).nonzero().squeeze(1)
    return changed, new_order.index_select(0, changed)


def reorder_cache_(cache: AttentionCache, new_order: Tensor,
                   moves: Optional[Tuple[Tensor, Tensor]] = None) -> None:
    """Reorder the rows of one module's cache in place: row ``b`` becomes old row ``new_order[b]``.

    Only the rows that change are copied (gathered, then ``index_copy_`` into the existing
    tensors); nothing the size of the whole cache is allocated. ``new_order`` must have as many
    rows as the cache (beam search keeps the number of hypotheses). ``moves``, the
    :func:`row_moves` of ``new_order``, spares working them out again for every module."""
    key, value = cache.get("key"), cache.get("value")
    if key is None:
        return
    if new_order.numel() != key.size(0):
        raise ValueError(f"reorder_cache_ keeps the {key.size(0)} rows; got an order of {new_order.numel()}")
    changed, source = row_moves(new_order) if moves is None else moves
    if changed.numel() == 0:
        return
    for t in (key, value):  # gather first: a row may be both read and overwritten
        t.index_copy_(0, changed, t.index_select(0, source))


class MultiheadAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    Queries, keys and values come from one fused projection whose rows are the queries (H
    heads), then the keys and the values (KV heads each). With fewer key/value heads than query
    heads (grouped-query attention; one: multi-query), query head ``h`` reads key/value head
    ``h // (H / KV)``, and the cache holds only the KV heads. Without a mask the attention is
    causal (``is_causal=True``): no mask tensor is materialized and the fused kernels apply.

    Args:
        embed_dim: model dimension C.
        num_heads: number of query heads H; must divide ``embed_dim``.
        dropout: dropout on the attention weights (training only).
        bias: whether the projections have biases.
        kv_heads: number of key/value heads KV (``None`` or 0: H); must divide H.
        rotary: rotary position embeddings applied to queries and keys, or ``None``.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kv_heads: Optional[int] = None, rotary: Optional[RotaryEmbedding] = None):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        kv_heads = kv_heads or num_heads
        if num_heads % kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be divisible by kv_heads ({kv_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.kv_heads = kv_heads
        self.head_dim = embed_dim // num_heads
        self.kv_dim = kv_heads * self.head_dim
        self.dropout = dropout
        self.in_proj = nn.Linear(embed_dim, embed_dim + 2 * self.kv_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.rotary = rotary
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Initialize the query, key and value blocks as separate matrices (square without GQA).
        for block in self.in_proj.weight.split([self.embed_dim, self.kv_dim, self.kv_dim], dim=0):
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
            cache: the dict holding this module's past keys and values (KV heads, rotated
                keys); it is read, then updated in place with the new positions.

        Returns:
            (B, T, C) output.
        """
        B, T, C = x.shape
        q, k, v = self.in_proj(x).split([C, self.kv_dim, self.kv_dim], dim=2)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, D)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, D)

        if self.rotary is not None:
            # the new positions follow the cached ones
            past = cache["key"].size(2) if cache is not None and cache.get("key") is not None else 0
            q, k = self.rotary(q, k, offset=past)

        if cache is not None:
            _cache_append(cache, k, v)
            k, v = cache["key"], cache["value"]  # (B, KV, S, D)

        is_causal = False
        if attn_mask is None:
            S = k.size(2)
            if S != T and T != 1:
                raise ValueError(f"{T} new positions after {S - T} cached ones need an explicit attn_mask")
            # a single new query attends to everything before it: no mask at all
            is_causal = S == T and T > 1
        gqa = {}
        if self.kv_heads != self.num_heads:
            if attn_mask is None:
                gqa["enable_gqa"] = True  # the causal kernels read the shared heads in place
            else:
                # with a mask the kernels that take enable_gqa fall back to the slowest one
                repeat = self.num_heads // self.kv_heads
                k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal, **gqa,
        )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.out_proj(y)


__all__ = ["AttentionCache", "KVBuffers", "MultiheadAttention", "reorder_cache_", "row_moves"]
