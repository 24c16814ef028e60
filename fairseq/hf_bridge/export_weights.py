"""fairseq -> Hugging Face: the config and weights of an export."""
import base64
import json
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from fairseq.formats import HF_GPT2, HF_LLAMA, HF_XGLM, Layout, LayoutError, from_ours

from fairseq.hf_bridge.common import ACTIVATION_TO_HF, LAYER_NORM_EPS, UNUSED_ROWS_KEY, UnmappableModelError, VOCAB_LAYER_KEYS, cfg_value
from fairseq.hf_bridge.refusals import hf_target, kv_heads


# -- fairseq -> HF --------------------------------------------------------------------------------
def layer_ids(state: Mapping[str, Tensor]) -> List[int]:
    ids = {int(k.split(".")[2]) for k in state if k.startswith("decoder.layers.")}
    return sorted(ids)


def fairseq_to_hf(state: Mapping[str, Tensor], model_cfg: Any, vocab_size: int, padding_idx: int = 1,
                  special_ids: Optional[Dict[str, int]] = None, start_token_id: int = 2,
                  unk_aliases: int = 0) -> Tuple[Dict[str, Any], Dict[str, Tensor], Dict[str, str]]:
    """The HF config, weights and safetensors metadata of a ``transformer_lm``.

    Args:
        state: the model's ``state_dict()`` (this package's layout: fused ``in_proj``).
        model_cfg: its ``cfg.model``.
        vocab_size: the dictionary's size (rows of the embedding).
        padding_idx: the dictionary's pad id (positions start at ``padding_idx + 1``).
        special_ids: ``{"bos", "pad", "eos", "unk"}`` ids (default fairseq's 0-3).
        start_token_id: the token fairseq puts first in every sample (``</s>``, or ``<s>`` with
            ``add_bos_token``).
        unk_aliases: ids to append after the dictionary's, each a copy of ``<unk>``'s rows (the
            GPT-2 tokens a dictionary lacks, see :func:`fairseq.hf_bridge.tokenizer_export.gpt2_tokenizer`).

    Returns:
        ``(config, tensors, metadata)``: ``config`` for config.json, ``tensors`` for
        model.safetensors (contiguous, none sharing memory), ``metadata`` for its header.

    Raises:
        UnmappableModelError: a model neither GPT-2 nor XGLM can represent, or weights that do
            not fit its config.
    """
    target = hf_target(model_cfg)
    special_ids = dict(special_ids or {"bos": 0, "pad": 1, "eos": 2, "unk": 3})
    src = dict(state)

    def take(key: str) -> Tensor:
        if key not in src:
            raise UnmappableModelError(f"the model has no weight {key!r}, which its config implies; "
                                       "export a checkpoint of transformer_lm as it was trained")
        return src[key].detach().to("cpu")

    def t(x: Tensor) -> Tensor:
        """``x`` as safetensors takes it: contiguous, and owning its storage (a slice of a
        fused weight is copied); whole tensors are passed as they are, not copied."""
        if not x.is_contiguous():
            return x.contiguous()
        if x.storage_offset() or x.untyped_storage().nbytes() != x.numel() * x.element_size():
            return x.clone()
        return x

    def blocks(layout: Layout, ctx: Optional[Dict[str, int]] = None) -> Dict[str, Tensor]:
        """Every weight but the tables mapped above, through ``layout``'s table; a weight no row
        maps (an option the refusals missed) is refused."""
        rest = {k: v.detach().to("cpu") for k, v in src.items()
                if k not in VOCAB_LAYER_KEYS and not k.startswith("decoder.embed_positions.")}
        try:
            return {k: t(v) for k, v in from_ours(rest, layout, ctx).items()}
        except LayoutError as e:
            raise UnmappableModelError(f"cannot export to {layout.name}: {e}") from None

    embed_dim = int(cfg_value(model_cfg, "decoder_embed_dim"))
    heads = int(cfg_value(model_cfg, "decoder_attention_heads"))
    ffn = int(cfg_value(model_cfg, "decoder_ffn_embed_dim"))
    layers = layer_ids(src)
    if layers != list(range(len(layers))):
        raise UnmappableModelError(f"the model's layers are numbered {layers}, not 0 to {len(layers) - 1}: "
                                   "export a checkpoint of transformer_lm as it was saved")
    scale = 1.0 if cfg_value(model_cfg, "no_scale_embedding", False) else math.sqrt(embed_dim)
    embed = take("decoder.embed_tokens.weight")
    if embed.shape != (vocab_size, embed_dim):
        raise UnmappableModelError(f"decoder.embed_tokens.weight is {tuple(embed.shape)}, not ({vocab_size}, "
                                   f"{embed_dim}): give --data the dictionary the model was trained with")
    out_w = take("decoder.output_projection.weight")
    tied = out_w.data_ptr() == embed.data_ptr() or bool(cfg_value(model_cfg, "share_decoder_input_output_embed", False))
    if tied and not torch.equal(out_w, embed):
        tied = False
    if unk_aliases:  # more ids, each <unk> to the model (input and output rows)
        unk = special_ids["unk"]
        if tied:
            embed = out_w = torch.cat([embed, embed[unk:unk + 1].expand(unk_aliases, -1)])
        else:
            embed = torch.cat([embed, embed[unk:unk + 1].expand(unk_aliases, -1)])
            out_w = torch.cat([out_w, out_w[unk:unk + 1].expand(unk_aliases, -1)])
        vocab_size += unk_aliases
    activation = ACTIVATION_TO_HF[str(cfg_value(model_cfg, "activation_fn", "relu"))]
    dropout = float(cfg_value(model_cfg, "dropout", 0.0))
    attention_dropout = float(cfg_value(model_cfg, "attention_dropout", 0.0))
    activation_dropout = float(cfg_value(model_cfg, "activation_dropout", 0.0) or cfg_value(model_cfg, "relu_dropout", 0.0))
    max_positions = int(cfg_value(model_cfg, "max_target_positions", 1024))
    tensors: Dict[str, Tensor] = {}
    metadata: Dict[str, str] = {"format": "pt"}
    ids = {"bos_token_id": special_ids["bos"], "pad_token_id": special_ids["pad"],
           "eos_token_id": special_ids["eos"]}

    if target == "llama":
        head_dim = embed_dim // heads
        kv = kv_heads(model_cfg)
        # Llama adds no scale: embed_tokens holds the scaled table (the product fairseq
        # computes), lm_head the table itself, as for GPT-2
        tensors["model.embed_tokens.weight"] = t(embed * scale) if scale != 1.0 else t(embed)
        tensors.update(blocks(HF_LLAMA, {"C": embed_dim, "F": ffn, "Q": heads * head_dim, "KV": kv * head_dim,
                                         "layers": len(layers)}))
        hf_tied = tied and scale == 1.0
        if not hf_tied:
            tensors["lm_head.weight"] = t(out_w)
        theta = float(cfg_value(model_cfg, "rope_theta", 10000.0))
        config = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab_size,
            "hidden_size": embed_dim, "intermediate_size": ffn, "num_hidden_layers": len(layers),
            "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim, "hidden_act": "silu",
            "max_position_embeddings": max_positions,
            "rms_norm_eps": float(cfg_value(model_cfg, "norm_eps", LAYER_NORM_EPS)),
            # transformers 5 reads rope_parameters, 4.x rope_theta and rope_scaling: both written
            "rope_theta": theta, "rope_scaling": None, "rope_parameters": {"rope_type": "default", "rope_theta": theta},
            "attention_bias": False, "mlp_bias": False, "attention_dropout": attention_dropout, "pretraining_tp": 1,
            "initializer_range": 0.02, "use_cache": True, **ids, "tie_word_embeddings": hf_tied, "dtype": "float32",
        }
    elif target == "xglm":
        if padding_idx != 1:
            raise UnmappableModelError(f"the dictionary's pad id is {padding_idx}: XGLM's sinusoids start at "
                                       "position 2, fairseq's at pad + 1; only pad id 1 (fairseq's) maps")
        tensors["model.embed_tokens.weight"] = t(embed)
        tensors.update(blocks(HF_XGLM))
        if not tied:
            tensors["lm_head.weight"] = t(out_w)
        config = {
            "architectures": ["XGLMForCausalLM"], "model_type": "xglm", "vocab_size": vocab_size,
            "max_position_embeddings": max_positions, "d_model": embed_dim, "ffn_dim": ffn,
            "num_layers": len(layers), "attention_heads": heads, "activation_function": activation,
            "dropout": dropout, "attention_dropout": attention_dropout, "activation_dropout": activation_dropout,
            "layerdrop": float(cfg_value(model_cfg, "decoder_layerdrop", 0.0)), "init_std": 0.02,
            "scale_embedding": scale != 1.0, "use_cache": True, "decoder_start_token_id": start_token_id,
            **ids, "tie_word_embeddings": tied, "dtype": "float32",
        }
    else:
        positions = take("decoder.embed_positions.weight")
        offset = padding_idx + 1
        n_positions = positions.size(0) - offset
        if n_positions < 1 or positions.size(1) != embed_dim:
            raise UnmappableModelError(f"decoder.embed_positions.weight is {tuple(positions.shape)}: not a learned "
                                       f"table of positions after pad id {padding_idx}")
        rows = positions[:offset]
        if rows.any():  # never read by fairseq either; kept so that import restores them
            metadata[UNUSED_ROWS_KEY] = json.dumps({"shape": list(rows.shape), "float32": base64.b64encode(
                rows.to(torch.float32).contiguous().numpy().tobytes()).decode("ascii")})
        # GPT-2 adds no scale: wte holds the scaled table (the very product fairseq computes),
        # lm_head the table itself
        tensors["transformer.wte.weight"] = t(embed * scale) if scale != 1.0 else t(embed)
        tensors["transformer.wpe.weight"] = t(positions[offset:])
        tensors.update(blocks(HF_GPT2))
        hf_tied = tied and scale == 1.0
        if not hf_tied:
            tensors["lm_head.weight"] = t(out_w)
        config = {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size,
            "n_positions": n_positions, "n_embd": embed_dim, "n_layer": len(layers), "n_head": heads,
            "n_inner": ffn, "activation_function": activation, "resid_pdrop": dropout, "embd_pdrop": dropout,
            "attn_pdrop": attention_dropout, "layer_norm_epsilon": LAYER_NORM_EPS, "initializer_range": 0.02,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "use_cache": True, **ids, "tie_word_embeddings": hf_tied,
            "dtype": "float32",
        }
    return config, tensors, metadata
