"""The decoder-only transformer: embeddings, a stack of causal blocks, an output layer.

It reads the fields of a ``TransformerLanguageModelConfig`` node (or anything with the same
attributes). Input is right-padded, as the data pipeline produces it: with causal attention a
real token never sees a pad, so a full forward needs no mask at all.

Cached (incremental) decoding
-----------------------------
Pass the same ``incremental_state`` dict to successive calls, each with only the new tokens
(B, t_new). The decoder keeps in it, per layer, the keys and values of every step so far
(``"layers.{i}"``), and the pad mask of all positions seen (``"padding_mask"``, (B, S)), from
which positions continue and pads (e.g. left-padded prompts) are masked out. One dict per model.
"""
import contextlib
import math
from typing import Any, ContextManager, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from omegaconf.errors import InterpolationResolutionError
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from fairseq.modules.adaptive_input import AdaptiveInput
from fairseq.modules.adaptive_softmax import AdaptiveSoftmax
from fairseq.modules.fairseq_dropout import FairseqDropout
from fairseq.modules.multihead_attention import KVBuffers, reorder_cache_, row_moves
from fairseq.modules.normalization import build_norm
from fairseq.modules.output_projection import (  # noqa: F401 -- FEW_ROWS*: also imported from here
    FEW_ROWS, FEW_ROWS_MIN_VOCAB, vocabulary_logits, withdraw_if_overridden,
)
from fairseq.modules.positional_embedding import PositionalEmbedding
from fairseq.modules.transformer_layer import TransformerDecoderLayer

DEFAULT_MAX_TARGET_POSITIONS = 1024

IncrementalState = Dict[str, Any]


def max_target_positions_of(cfg: Any) -> int:
    """``cfg.max_target_positions``, or the default when it is unset.

    The field interpolates ``task.tokens_per_sample``; a model config used on its own (no task
    around it) cannot resolve that and also gets ``DEFAULT_MAX_TARGET_POSITIONS``.
    """
    try:
        value = cfg.max_target_positions
    except InterpolationResolutionError:
        value = None
    if value is None or (isinstance(value, str) and value.startswith("${")):
        return DEFAULT_MAX_TARGET_POSITIONS
    return int(value)


def dim_of(cfg: Any, name: str) -> int:
    """``cfg.<name>`` (``decoder_input_dim``, ``decoder_output_dim``), or ``decoder_embed_dim``
    when it is unset: the field's default follows the embedding dimension, and a dataclass used
    on its own still holds that default as the unresolved ``${.decoder_embed_dim}``."""
    try:
        value = getattr(cfg, name)
    except InterpolationResolutionError:
        value = None
    if value is None or (isinstance(value, str) and value.startswith("${")):
        return int(cfg.decoder_embed_dim)
    return int(value)


def parse_layers_to_keep(layers_to_keep: Optional[str], num_layers: int) -> List[int]:
    """Indices of the layers to build: ``"0,2,5"`` -> ``[0, 2, 5]``; ``None`` keeps all.

    Raises:
        ValueError: for an index outside ``[0, num_layers)`` or an empty list.
    """
    if layers_to_keep is None:
        return list(range(num_layers))
    if isinstance(layers_to_keep, str):
        keep = sorted({int(part) for part in layers_to_keep.split(",") if part.strip()})
    else:
        keep = sorted({int(i) for i in layers_to_keep})
    if not keep or keep[0] < 0 or keep[-1] >= num_layers:
        raise ValueError(f"decoder_layers_to_keep {layers_to_keep!r} must list layers among the "
                         f"{num_layers} decoder_layers (0 to {num_layers - 1})")
    return keep


def build_decoder_layer(cfg: Any) -> TransformerDecoderLayer:
    """One decoder block configured by ``cfg``."""
    return TransformerDecoderLayer(
        embed_dim=cfg.decoder_embed_dim,
        ffn_embed_dim=cfg.decoder_ffn_embed_dim,
        num_heads=cfg.decoder_attention_heads,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        # relu_dropout is the old name of activation_dropout
        activation_dropout=cfg.activation_dropout or cfg.relu_dropout,
        activation_fn=cfg.activation_fn,
        normalize_before=cfg.decoder_normalize_before,
        scale_attn=bool(cfg.scale_attn),
        scale_fc=bool(cfg.scale_fc),
        scale_heads=bool(cfg.scale_heads),
        scale_resids=bool(cfg.scale_resids),
        kv_heads=int(cfg.decoder_kv_attention_heads) or None,
        rotary_theta=float(cfg.rope_theta) if cfg.rope else None,
        max_positions=max_target_positions_of(cfg),
        norm=str(cfg.decoder_norm),
        norm_eps=float(cfg.norm_eps),
        bias=not cfg.no_decoder_bias,
        ffn_gated=bool(cfg.decoder_ffn_gated),
    )


class TransformerDecoder(nn.Module):
    """Decoder-only transformer.

    Args:
        cfg: the model config (``decoder_*`` fields, dropouts, embeddings and output options).
        dictionary: the target vocabulary (``len()`` gives its size).
        embed_tokens: the token embedding, an ``nn.Embedding`` or ``AdaptiveInput`` with
            ``padding_idx`` and ``embedding_dim``.
    """

    #: this class's logits are ``output_projection`` applied to its ``features_only=True``
    #: output (see :meth:`plain_output_projection`). A subclass that overrides ``forward`` or
    #: ``output_layer`` loses this unless it sets it again in its own body
    #: (:func:`~fairseq.modules.output_projection.withdraw_if_overridden`)
    plain_output: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        withdraw_if_overridden(cls, "plain_output", ("forward", "output_layer"))

    def __init__(self, cfg: Any, dictionary: Any, embed_tokens: nn.Module):
        super().__init__()
        self.dictionary = dictionary
        self.padding_idx = embed_tokens.padding_idx
        self.max_target_positions = max_target_positions_of(cfg)
        input_dim = embed_tokens.embedding_dim
        embed_dim = cfg.decoder_embed_dim
        self.output_dim = dim_of(cfg, "decoder_output_dim")

        # -- input: tokens -> (B, T, C) --
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(embed_dim)
        self.project_in_dim = nn.Linear(input_dim, embed_dim, bias=False) if input_dim != embed_dim else None
        self.embed_positions = None
        # rotary embeddings turn queries and keys inside each attention: no table added here
        if not cfg.no_token_positional_embeddings and not cfg.rope:
            self.embed_positions = PositionalEmbedding(
                self.max_target_positions, embed_dim, self.padding_idx, learned=cfg.decoder_learned_pos
            )
        self.layernorm_embedding = self._norm(cfg, embed_dim) if cfg.layernorm_embedding else None
        self.dropout = FairseqDropout(cfg.dropout)

        # -- the stack --
        self.kept_layers = parse_layers_to_keep(cfg.decoder_layers_to_keep, cfg.decoder_layers)
        self.layers = nn.ModuleList(build_decoder_layer(cfg) for _ in self.kept_layers)
        self.layerdrop = cfg.decoder_layerdrop
        # offload_activations implies checkpointing (as in fairseq 0.12)
        self.offload_activations = bool(cfg.offload_activations)
        self.checkpoint_activations = bool(cfg.checkpoint_activations) or self.offload_activations
        use_final_norm = cfg.decoder_normalize_before and not cfg.no_decoder_final_norm
        self.layer_norm = self._norm(cfg, embed_dim) if use_final_norm else None

        # -- output: (B, T, C) -> (B, T, V) --
        self.project_out_dim = (
            nn.Linear(embed_dim, self.output_dim, bias=False) if embed_dim != self.output_dim else None
        )
        self.adaptive_softmax: Optional[AdaptiveSoftmax] = None
        self.output_projection: Optional[nn.Linear] = None
        if cfg.adaptive_softmax_cutoff is not None:
            if cfg.tie_adaptive_weights and not isinstance(embed_tokens, AdaptiveInput):
                raise ValueError("tie_adaptive_weights needs adaptive_input embeddings")
            self.adaptive_softmax = AdaptiveSoftmax(
                len(dictionary), self.output_dim, cfg.adaptive_softmax_cutoff,
                dropout=cfg.adaptive_softmax_dropout, factor=cfg.adaptive_softmax_factor,
                adaptive_input=embed_tokens if cfg.tie_adaptive_weights else None,
                tie_proj=cfg.tie_adaptive_proj,
            )
        else:
            self.output_projection = nn.Linear(self.output_dim, len(dictionary), bias=False)
            if cfg.share_decoder_input_output_embed:
                if not isinstance(embed_tokens, nn.Embedding) or input_dim != self.output_dim:
                    raise ValueError(
                        "share_decoder_input_output_embed needs an nn.Embedding input embedding "
                        f"whose dimension (decoder_input_dim={input_dim}) equals "
                        f"decoder_output_dim ({self.output_dim})"
                    )
                self.output_projection.weight = embed_tokens.weight
            else:
                nn.init.normal_(self.output_projection.weight, mean=0.0, std=self.output_dim**-0.5)

    @staticmethod
    def _norm(cfg: Any, dim: int) -> nn.Module:
        """A norm of the kind, epsilon and bias the config asks for (``nn.LayerNorm(dim)`` by default)."""
        return build_norm(str(cfg.decoder_norm), dim, float(cfg.norm_eps), bias=not cfg.no_decoder_bias)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, prev_output_tokens: Tensor, incremental_state: Optional[IncrementalState] = None,
                features_only: bool = False) -> Tuple[Tensor, Dict[str, Any]]:
        """Predict the next token at every position.

        Args:
            prev_output_tokens: (B, T) token ids, right-padded; with ``incremental_state``, only
                the tokens that are new since the previous call.
            incremental_state: the decoding cache (see the module docstring), or ``None`` for a
                full, uncached forward.
            features_only: return the last hidden states instead of the output layer's result.

        Returns:
            ``(x, extra)``: x is (B, T, V) logits (or, with an adaptive softmax or
            ``features_only``, (B, T, output_dim) features); ``extra["inner_states"]`` lists the
            (B, T, C) input of the first layer and the output of every layer, ``extra["attn"]``
            is ``[None]`` (no alignment attention in a decoder-only model).
        """
        x, extra = self.extract_features(prev_output_tokens, incremental_state)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(
        self, prev_output_tokens: Tensor, incremental_state: Optional[IncrementalState] = None
    ) -> Tuple[Tensor, Dict[str, Any]]:
        """The last hidden states (B, T, output_dim) and extras; see :meth:`forward`."""
        tokens = prev_output_tokens
        attn_mask, past_counts, past_length = None, None, 0
        if incremental_state is not None:
            attn_mask, past_counts, past_length = self._extend_padding_state(tokens, incremental_state)

        x = self.embed_scale * self.embed_tokens(tokens)  # (B, T, C_in)
        if self.project_in_dim is not None:
            x = self.project_in_dim(x)  # (B, T, C)
        if self.embed_positions is not None:
            x = x + self.embed_positions(tokens, past_counts, past_length)  # (B, T, C)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = self.dropout(x)

        inner_states = [x]
        for i, layer in enumerate(self.layers):
            if incremental_state is not None:
                x = layer(x, attn_mask, cache=incremental_state.setdefault(f"layers.{i}", {}))
            elif self.training and self.layerdrop > 0 and torch.rand(()).item() < self.layerdrop:
                continue  # LayerDrop: skip the whole block for this batch
            elif self.training and self.checkpoint_activations and torch.is_grad_enabled():
                # Only the layer's input is saved; its inside is recomputed in backward with the
                # forward's RNG state restored, so dropout draws the same masks.
                with self._offload_context(x):
                    x = checkpoint(layer, x, use_reentrant=False, preserve_rng_state=True)
            else:
                x = layer(x)
            inner_states.append(x)

        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if self.project_out_dim is not None:
            x = self.project_out_dim(x)  # (B, T, output_dim)
        return x, {"attn": [None], "inner_states": inner_states}

    def _offload_context(self, x: Tensor) -> ContextManager[Any]:
        """Where a checkpointed layer keeps its saved input: in CPU memory with
        ``offload_activations`` and an accelerator, otherwise where ``x`` is (on a CPU there is
        nothing to offload to, and copying would only double the memory)."""
        if self.offload_activations and x.device.type != "cpu":
            return torch.autograd.graph.save_on_cpu(pin_memory=x.device.type == "cuda")
        return contextlib.nullcontext()

    def output_layer(self, features: Tensor) -> Tensor:
        """(B, T, output_dim) features -> (B, T, V) logits; an adaptive softmax leaves them as they
        are (it is applied by the criterion and ``get_normalized_probs``)."""
        if self.output_projection is None:
            return features
        return vocabulary_logits(features, self.output_projection)

    def plain_output_projection(self) -> Optional[nn.Linear]:
        """The ``nn.Linear`` whose result on the ``features_only=True`` output is what
        :meth:`output_layer` gives, for a loss or a scorer that applies it itself; ``None``
        with an adaptive softmax, another kind of projection, or a subclass that changed
        ``forward`` or ``output_layer`` without declaring ``plain_output``."""
        if not self.plain_output or type(self.output_projection) is not nn.Linear:
            return None
        return self.output_projection

    # -- cached decoding ----------------------------------------------------------------------
    def _extend_padding_state(self, tokens: Tensor, state: IncrementalState) -> Tuple[Tensor, Tensor, int]:
        """Record the new tokens' pads in ``state``; build their attention mask and positions.

        Returns:
            ``(attn_mask, past_counts, past_length)``: the boolean (B, 1, T, S) mask (causal,
            pads masked out except from themselves, so no row is empty; ``None`` where that is
            plain causal attention), the (B,) number of real tokens before the new ones (an int,
            the same for every row, when no pad was seen), and the number of cached positions.
        """
        B, T = tokens.shape
        new_pads = tokens.eq(self.padding_idx)  # (B, T)
        past_pads = state.get("padding_mask")
        if past_pads is None:
            past_pads = new_pads.new_zeros(B, 0)
        past_length = past_pads.size(1)
        pads = torch.cat([past_pads, new_pads], dim=1)  # (B, S)
        state["padding_mask"] = pads
        # without a pad so far (the usual case: prompts are forced token by token), every row
        # has seen past_length real tokens, and the mask would be plain causal: a single new
        # position attends to all, a first call is causal, both without a mask tensor (the
        # attention's fast kernels, no mask to build). One host read of the new tokens' pads.
        # optional: a state from before this flag (or a generic reorder's copy) has it unset
        had_pads = state.get("has_pads", past_length > 0 and bool(past_pads.any()))
        state["has_pads"] = has_pads = had_pads or bool(new_pads.any())
        if not has_pads and (T == 1 or past_length == 0):
            return None, past_length, past_length
        past_counts = (~past_pads).sum(dim=1)  # (B,)

        S = past_length + T
        query_pos = torch.arange(past_length, S, device=tokens.device).unsqueeze(1)  # (T, 1)
        key_pos = torch.arange(S, device=tokens.device).unsqueeze(0)  # (1, S)
        causal = key_pos <= query_pos  # (T, S)
        visible = ~pads.unsqueeze(1) | (key_pos == query_pos)  # (B, T, S)
        return (causal & visible).unsqueeze(1), past_counts, past_length  # (B, 1, T, S)

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor) -> None:
        """Row ``b`` of every cached tensor becomes old row ``new_order[b]``.

        The attention caches' keys and values are reordered in place when the number of rows
        stays (beam search): only the rows that change are copied, into the buffers they already
        have (:func:`fairseq.modules.multihead_attention.reorder_cache_`). Every other tensor,
        and every cache whose number of rows changes, is replaced by its selected rows."""

        moves: List[Tuple[Tensor, Tensor]] = []  # row_moves(new_order), worked out once

        def reorder(state: Dict[str, Any]) -> None:
            in_place = (isinstance(state.get("buffers"), KVBuffers) and isinstance(state.get("key"), Tensor)
                        and state["key"].size(0) == new_order.numel())
            if in_place:
                if not moves:
                    moves.append(row_moves(new_order))
                reorder_cache_(state, new_order, moves[0])
            for key, value in state.items():
                if in_place and key in ("key", "value"):
                    continue
                if (key == "padding_mask" and state.get("has_pads") is False and isinstance(value, Tensor)
                        and value.size(0) == new_order.numel()):
                    continue  # no pad in any row: every row of the mask is the same (all False)
                if isinstance(value, Tensor):
                    state[key] = value.index_select(0, new_order)
                elif isinstance(value, dict):
                    reorder(value)

        reorder(incremental_state)

    # -- misc ---------------------------------------------------------------------------------
    def max_positions(self) -> int:
        """The longest sequence the decoder accepts."""
        if self.embed_positions is None:
            return self.max_target_positions
        return min(self.max_target_positions, self.embed_positions.max_positions)


__all__ = [
    "DEFAULT_MAX_TARGET_POSITIONS", "TransformerDecoder", "build_decoder_layer",
    "max_target_positions_of", "parse_layers_to_keep",
]
