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
from fairseq.modules.fused_cross_entropy import linear_target_log_probs
from fairseq.modules.multihead_attention import KVBuffers, reorder_cache_
from fairseq.modules.positional_embedding import PositionalEmbedding
from fairseq.modules.transformer_layer import TransformerDecoderLayer

DEFAULT_MAX_TARGET_POSITIONS = 1024

IncrementalState = Dict[str, Any]


#: at most this many rows (a decoding step's batch x beam) and a vocabulary of at least
#: FEW_ROWS_MIN_VOCAB: the output layer computes weight @ x.T on CPU (see ``output_layer``);
#: measured on 2 cores (V = 45,008, C = 128/512): 2-8 rows 1.6-6.9x faster, 1 row equal,
#: 16 rows and more, or V <= 8192, slower
FEW_ROWS = 8
FEW_ROWS_MIN_VOCAB = 16384


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
        value = getattr(cfg, name, None)
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
        scale_attn=bool(getattr(cfg, "scale_attn", False)),
        scale_fc=bool(getattr(cfg, "scale_fc", False)),
        scale_heads=bool(getattr(cfg, "scale_heads", False)),
        scale_resids=bool(getattr(cfg, "scale_resids", False)),
    )


class TransformerDecoder(nn.Module):
    """Decoder-only transformer.

    Args:
        cfg: the model config (``decoder_*`` fields, dropouts, embeddings and output options).
        dictionary: the target vocabulary (``len()`` gives its size).
        embed_tokens: the token embedding, an ``nn.Embedding`` or ``AdaptiveInput`` with
            ``padding_idx`` and ``embedding_dim``.
    """

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
        if not cfg.no_token_positional_embeddings:
            self.embed_positions = PositionalEmbedding(
                self.max_target_positions, embed_dim, self.padding_idx, learned=cfg.decoder_learned_pos
            )
        self.layernorm_embedding = nn.LayerNorm(embed_dim) if cfg.layernorm_embedding else None
        self.dropout = nn.Dropout(cfg.dropout)

        # -- the stack --
        self.kept_layers = parse_layers_to_keep(cfg.decoder_layers_to_keep, cfg.decoder_layers)
        self.layers = nn.ModuleList(build_decoder_layer(cfg) for _ in self.kept_layers)
        self.layerdrop = cfg.decoder_layerdrop
        # offload_activations implies checkpointing (as in fairseq 0.12)
        self.offload_activations = bool(getattr(cfg, "offload_activations", False))
        self.checkpoint_activations = bool(cfg.checkpoint_activations) or self.offload_activations
        use_final_norm = cfg.decoder_normalize_before and not cfg.no_decoder_final_norm
        self.layer_norm = nn.LayerNorm(embed_dim) if use_final_norm else None

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
        weight = self.output_projection.weight
        rows = features.numel() // max(features.size(-1), 1)
        if (rows <= FEW_ROWS and weight.size(0) >= FEW_ROWS_MIN_VOCAB and features.device.type == "cpu"
                and features.dtype == weight.dtype and self.output_projection.bias is None
                and not (torch.is_grad_enabled() and (features.requires_grad or weight.requires_grad))):
            # a decoding step's few rows against a large vocabulary: weight @ x.T (the vocabulary
            # as the matmul's long side) runs 1.6-7x faster on CPU BLAS than x @ weight.T; the
            # (V, rows) result is transposed into a contiguous (rows, V) tensor, as callers that
            # .view() the logits expect (the copy costs a few percent of the product)
            flat = features.reshape(rows, features.size(-1))
            return torch.mm(weight, flat.t()).t().contiguous().view(*features.shape[:-1], weight.size(0))
        return self.output_projection(features)

    def can_score_targets(self) -> bool:
        """Whether :meth:`target_log_probs` applies: a plain ``nn.Linear`` output projection (no
        adaptive softmax) and this class's own :meth:`output_layer`."""
        return (isinstance(self.output_projection, nn.Linear)
                and type(self).output_layer is TransformerDecoder.output_layer)

    def target_log_probs(self, features: Tensor, target: Tensor) -> Optional[Tensor]:
        """(B, T) float32 log-probabilities of ``target`` from (B, T, output_dim) ``features``,
        as the log-softmax of :meth:`output_layer` would give them, without the (B, T, V)
        logits (:func:`~fairseq.modules.fused_cross_entropy.linear_target_log_probs`).
        ``None`` where :meth:`can_score_targets` says no."""
        if not self.can_score_targets():
            return None
        flat = features.reshape(-1, features.size(-1))
        scores = linear_target_log_probs(flat, self.output_projection.weight, target.reshape(-1),
                                         self.output_projection.bias)
        return scores.view(target.shape)

    # -- cached decoding ----------------------------------------------------------------------
    def _extend_padding_state(self, tokens: Tensor, state: IncrementalState) -> Tuple[Tensor, Tensor, int]:
        """Record the new tokens' pads in ``state``; build their attention mask and positions.

        Returns:
            ``(attn_mask, past_counts, past_length)``: the boolean (B, 1, T, S) mask (causal,
            pads masked out except from themselves, so no row is empty), the (B,) number of
            real tokens before the new ones, and the number of cached positions.
        """
        B, T = tokens.shape
        new_pads = tokens.eq(self.padding_idx)  # (B, T)
        past_pads = state.get("padding_mask")
        if past_pads is None:
            past_pads = new_pads.new_zeros(B, 0)
        past_length = past_pads.size(1)
        past_counts = (~past_pads).sum(dim=1)  # (B,)
        pads = torch.cat([past_pads, new_pads], dim=1)  # (B, S)
        state["padding_mask"] = pads

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

        def reorder(state: Dict[str, Any]) -> None:
            in_place = (isinstance(state.get("buffers"), KVBuffers) and isinstance(state.get("key"), Tensor)
                        and state["key"].size(0) == new_order.numel())
            if in_place:
                reorder_cache_(state, new_order)
            for key, value in state.items():
                if in_place and key in ("key", "value"):
                    continue
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._upgrade_fairseq_keys(state_dict, prefix)
        # A checkpoint of the whole stack loads into a pruned one (decoder_layers_to_keep): keep
        # the kept layers' weights, renumbered, and drop the rest.
        layer_prefix = f"{prefix}layers."
        if self.kept_layers != list(range(len(self.layers))):
            layer_keys = [k for k in state_dict if k.startswith(layer_prefix)]
            saved_ids = {int(k[len(layer_prefix):].split(".", 1)[0]) for k in layer_keys}
            if saved_ids and max(saved_ids) >= len(self.layers):
                new_id = {old: new for new, old in enumerate(self.kept_layers)}
                saved = {k: state_dict.pop(k) for k in layer_keys}
                for key, value in saved.items():
                    old, rest = key[len(layer_prefix):].split(".", 1)
                    if int(old) in new_id:
                        state_dict[f"{layer_prefix}{new_id[int(old)]}.{rest}"] = value
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


    def _upgrade_fairseq_keys(self, state_dict: Dict[str, Any], prefix: str) -> None:
        """Rename, in place, the keys of checkpoints written by fairseq (0.12 and older).

        * ``version`` (a buffer fairseq keeps) is dropped; a value of 2 or less marks a
          checkpoint from before the final LayerNorm existed, so this decoder then has none
          (as fairseq does).
        * the cached sinusoid tables (``embed_positions.weights``, ``_float_tensor``) are
          dropped: sinusoids are recomputed.
        * ``embed_out`` (the old name of the output projection) becomes
          ``output_projection.weight``; with a tied output it is the embedding itself.
        * ``layers.N.layer_norms.{0,2}`` (very old layouts) become ``self_attn_layer_norm`` and
          ``final_layer_norm``.
        """
        version = state_dict.pop(f"{prefix}version", None)
        if (version is not None and float(version.reshape(-1)[0]) <= 2 and self.layer_norm is not None
                and f"{prefix}layer_norm.weight" not in state_dict):
            self.layer_norm = None
        for key in (f"{prefix}embed_positions._float_tensor", f"{prefix}embed_tokens._float_tensor"):
            state_dict.pop(key, None)
        if not isinstance(self.embed_positions, nn.Embedding):
            state_dict.pop(f"{prefix}embed_positions.weights", None)
        embed_out = state_dict.pop(f"{prefix}embed_out", None)
        out_key = f"{prefix}output_projection.weight"
        if (embed_out is not None and self.output_projection is not None and out_key not in state_dict):
            state_dict[out_key] = embed_out
        if (self.output_projection is not None and out_key not in state_dict
                and self.output_projection.weight is getattr(self.embed_tokens, "weight", None)
                and f"{prefix}embed_tokens.weight" in state_dict):
            state_dict[out_key] = state_dict[f"{prefix}embed_tokens.weight"]
        renames = {"0": "self_attn_layer_norm", "2": "final_layer_norm"}
        for key in [k for k in state_dict if k.startswith(f"{prefix}layers.") and ".layer_norms." in k]:
            head, tail = key.split(".layer_norms.", 1)
            index, kind = tail.split(".", 1)
            if index in renames:
                state_dict[f"{head}.{renames[index]}.{kind}"] = state_dict.pop(key)


__all__ = [
    "DEFAULT_MAX_TARGET_POSITIONS", "TransformerDecoder", "build_decoder_layer",
    "max_target_positions_of", "parse_layers_to_keep",
]
