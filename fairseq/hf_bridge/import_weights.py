"""Hugging Face -> fairseq: the model config and weights of an import."""
import base64
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from fairseq.formats import HF_GPT2, HF_LLAMA, HF_XGLM, Layout, LayoutError, to_ours

from fairseq.hf_bridge.common import ACTIVATION_FROM_HF, FAIRSEQ_SPECIALS, LAYER_NORM_EPS, META_KEY, META_VERSION, SPECIAL_SYMBOLS, SUPPORTED_MODEL_TYPES, UNUSED_ROWS_KEY, UnmappableModelError
from fairseq.hf_bridge.vocab import VocabMap, silent_rows, special_id


# What transformers' GPT2Config / XGLMConfig take for a key that config.json leaves out
# (save_pretrained writes them all; hand-written or older files may not).
HF_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "gpt2": {"activation_function": "gelu_new", "tie_word_embeddings": True, "scale_attn_weights": True,
             "scale_attn_by_inverse_layer_idx": False, "layer_norm_epsilon": LAYER_NORM_EPS, "n_embd": 768,
             "n_layer": 12, "n_head": 12, "n_inner": None, "n_positions": 1024, "resid_pdrop": 0.1,
             "attn_pdrop": 0.1},
    "xglm": {"activation_function": "gelu", "tie_word_embeddings": True, "d_model": 1024, "num_layers": 24,
             "attention_heads": 16, "ffn_dim": 4096, "max_position_embeddings": 2048, "pad_token_id": None,
             "scale_embedding": True, "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
             "layerdrop": 0.0},
    "llama": {"hidden_act": "silu", "tie_word_embeddings": False, "hidden_size": 4096, "intermediate_size": 11008,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None, "head_dim": None,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
              "rope_parameters": None, "sliding_window": None, "attention_bias": False, "mlp_bias": False,
              "pretraining_tp": 1, "attention_dropout": 0.0},
}


class HFConfigView:
    """Reads of a Hugging Face ``config.json`` (already checked by :mod:`fairseq.hf_validation`)
    by key, each absent key taking its transformers default from :data:`HF_DEFAULTS`; a key the
    table does not list raises ``KeyError``, so a misspelt key fails instead of reading a default."""

    def __init__(self, hf_config: Mapping[str, Any], model_type: str):
        self.raw = hf_config
        self.defaults = HF_DEFAULTS[model_type]

    def __getitem__(self, key: str) -> Any:
        default = self.defaults[key]
        # optional: config.json may leave out a key at transformers' default (see HF_DEFAULTS)
        return self.raw.get(key, default)


def export_meta(hf_config: Mapping[str, Any]) -> Dict[str, Any]:
    # optional: only configs our exporter wrote carry this key
    meta = hf_config.get(META_KEY)
    return dict(meta) if isinstance(meta, dict) and meta.get("version") == META_VERSION else {}


def strip_prefix(state: Dict[str, Tensor], prefixes: Tuple[str, ...]) -> Dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for p in prefixes:
            if key.startswith(p):
                key = key[len(p):]
                break
        out[key] = value
    return out


def unscale(table: Tensor, lm_head: Tensor, tied: bool, meta: Mapping[str, Any]) -> Tuple[Tensor, bool, bool]:
    """``(embedding, no_scale_embedding, share)`` of a GPT-2 or Llama input table and head.

    Neither class scales its embeddings: an export of a scaled model holds table x scale as
    the input table and the table itself as ``lm_head`` (``meta["embed_scale"]``), recognized
    here and tied again."""
    # optional: only our exports record the scale and the tie
    scale = float(meta.get("embed_scale", 1.0))
    if scale != 1.0 and torch.equal(lm_head * scale, table):
        return lm_head, False, True
    if scale != 1.0 and not meta.get("tied", False) and torch.equal((table / scale) * scale, table):
        return table / scale, False, False
    return table, True, tied or torch.equal(lm_head, table)


def llama_rope_theta(hf: Any, activation_name: str, C: int, H: int) -> float:
    """The rotary base of a Llama config, after refusing what ``transformer_lm`` cannot compute:
    scaled or partial rotary positions, sliding windows, biases, another activation, a head
    dimension other than hidden_size / heads, tensor-parallel slicing.

    Raises:
        UnmappableModelError: the first such option, one line naming the key and the value.
    """
    if activation_name != "silu":
        raise UnmappableModelError(f"hidden_act={activation_name!r}: transformer_lm's Llama feed-forward is SwiGLU "
                                   "(activation_fn=silu); only hidden_act=silu maps")
    scaling = hf["rope_scaling"]
    if scaling is not None and str(scaling.get("rope_type", scaling.get("type", ""))) != "default":
        raise UnmappableModelError(f"rope_scaling={json.dumps(scaling)}: transformer_lm's rotary positions are "
                                   "unscaled; only rope_scaling=null maps")
    params = hf["rope_parameters"] or {}
    kind = str(params.get("rope_type", "default"))  # optional: absent means the plain rotation
    if kind != "default":
        raise UnmappableModelError(f"rope_parameters.rope_type={kind!r} ({json.dumps(params)}): transformer_lm's "
                                   "rotary positions are unscaled; only rope_type 'default' maps")
    if float(params.get("partial_rotary_factor", 1.0)) != 1.0:  # optional: absent means 1
        raise UnmappableModelError(f"rope_parameters.partial_rotary_factor={params['partial_rotary_factor']}: "
                                   "transformer_lm rotates every feature of a head; only 1.0 maps")
    for key in ("attention_bias", "mlp_bias"):
        if hf[key]:
            raise UnmappableModelError(f"{key}=true: transformer_lm's Llama layers have no biases; only "
                                       f"{key}=false maps")
    if hf["sliding_window"] is not None:
        raise UnmappableModelError(f"sliding_window={hf['sliding_window']}: transformer_lm attends to every "
                                   "earlier token; only sliding_window=null maps")
    if hf["head_dim"] is not None and int(hf["head_dim"]) * H != C:
        raise UnmappableModelError(f"head_dim={hf['head_dim']} but hidden_size / num_attention_heads = {C} / {H}: "
                                   "transformer_lm's head dimension is always hidden_size / heads; only head_dim={C // H} (or none) maps")
    if int(hf["pretraining_tp"]) > 1:
        raise UnmappableModelError(f"pretraining_tp={hf['pretraining_tp']}: only pretraining_tp=1 maps (save the "
                                   "model with transformers' default)")
    # transformers 5 keeps the base in rope_parameters, 4.x at the top level
    return float(params.get("rope_theta", hf["rope_theta"]))  # optional: either place


def hf_to_fairseq(hf_config: Mapping[str, Any], hf_state: Mapping[str, Tensor], vocab: VocabMap,
                  safetensors_metadata: Optional[Mapping[str, str]] = None,
                  ) -> Tuple[Dict[str, Any], Dict[str, Tensor], List[str]]:
    """The ``transformer_lm`` config values and state dict of a GPT-2 or XGLM model.

    Args:
        hf_config: its config.json.
        hf_state: its weights (any float dtype; returned as float32).
        vocab: the fairseq dictionary's ids in terms of HF ids (:func:`build_vocab_map`).
        safetensors_metadata: the header metadata of model.safetensors (an export's extra rows).

    Returns:
        ``(model_values, state, notes)``: the values of ``cfg.model`` (``_name`` included), the
        state dict in this package's layout, and lines worth telling the user.

    Raises:
        UnmappableModelError: a model type or option without a ``transformer_lm`` equivalent,
            or weights missing, extra or of the wrong shape.
    """
    # optional: a config without model_type is refused just below, naming the key
    model_type = str(hf_config.get("model_type", ""))
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnmappableModelError(f"config.json has model_type={model_type!r}: only gpt2 (GPT2LMHeadModel), "
                                   "xglm (XGLMForCausalLM) and llama (LlamaForCausalLM) map to transformer_lm")
    if hf_config.get("add_cross_attention"):  # optional: absent means false (transformers' default)
        raise UnmappableModelError("add_cross_attention=true: a decoder with cross-attention is no language model "
                                   "transformer_lm can hold")
    meta = export_meta(hf_config)
    notes: List[str] = list(vocab.notes)
    src = {k: v.detach().to("cpu") for k, v in hf_state.items()}
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in src.values() if v.is_floating_point()})
    if dtypes and dtypes != ["float32"]:
        notes.append(f"weights stored as {', '.join(dtypes)}: converted to float32")
    src = {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in src.items()}
    used = set()

    def take(key: str, shape: Tuple[int, ...]) -> Tensor:
        if key not in src:
            raise UnmappableModelError(f"the {model_type} weights have no {key!r}: the directory is incomplete or "
                                       "not a causal LM checkpoint of that type")
        value = src[key]
        if tuple(value.shape) != tuple(shape):
            raise UnmappableModelError(f"{key} is {tuple(value.shape)}, but config.json implies {tuple(shape)}")
        used.add(key)
        return value

    def blocks(layout: Layout, prefix: str, C: int, F: int, L: int, **sizes: int) -> None:
        """The blocks and final LayerNorm into ``state``, through ``layout``'s table (the keys
        read with or without ``prefix``: a base model's files lack it)."""
        rest = {prefix + k: v for k, v in src.items() if k not in used and k != "lm_head.weight"}
        try:
            converted = to_ours(rest, layout, {"C": C, "F": F, "layers": L, **sizes}, unmapped="keep")
        except LayoutError as e:
            raise UnmappableModelError(str(e)) from None
        state.update((k, v) for k, v in converted.items() if k.startswith("decoder."))
        # a key no row maps comes back under its own name and is reported below as a leftover
        used.update(k[len(prefix):] for k in rest if k not in converted)

    def output_head(C: int) -> Optional[Tensor]:
        """``lm_head.weight`` (V, C), or None where the weights leave it tied to the embedding."""
        lm_head = src.get("lm_head.weight")
        if lm_head is None:
            if not tied:
                raise UnmappableModelError("tie_word_embeddings=false but the weights have no lm_head.weight")
            return None
        used.add("lm_head.weight")
        if tuple(lm_head.shape) != (V, C):
            raise UnmappableModelError(f"lm_head.weight is {tuple(lm_head.shape)}, not ({V}, {C})")
        return lm_head

    V = int(hf_config["vocab_size"])
    hf = HFConfigView(hf_config, model_type)
    act_key = "hidden_act" if model_type == "llama" else "activation_function"
    activation_name = str(hf[act_key])
    if activation_name not in ACTIVATION_FROM_HF:
        raise UnmappableModelError(f"{act_key}={activation_name!r} has no transformer_lm activation_fn "
                                   f"(supported: {', '.join(sorted(ACTIVATION_FROM_HF))})")
    activation = ACTIVATION_FROM_HF[activation_name]
    if activation_name in ("gelu_new", "gelu_fast", "gelu_python_tanh"):
        notes.append(f"activation {activation_name} is computed as gelu_accurate (the same tanh GELU, "
                     "within float rounding)")
    tied = bool(hf["tie_word_embeddings"])
    state: Dict[str, Tensor] = {}
    saved = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    late: Dict[str, Any] = {}  # values that override the common ones below

    if model_type == "gpt2":
        src = strip_prefix(src, ("transformer.",))
        src = {k: v for k, v in src.items() if not (k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"))}
        for key, off in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
            if bool(hf[key]) != off:
                raise UnmappableModelError(f"{key}={not off}: transformer_lm attention scales by 1/sqrt(head_dim) only")
        eps = float(hf["layer_norm_epsilon"])
        if eps != LAYER_NORM_EPS:
            raise UnmappableModelError(f"layer_norm_epsilon={eps}: transformer_lm's LayerNorms use {LAYER_NORM_EPS}")
        C = int(hf["n_embd"])
        L = int(hf["n_layer"])
        H = int(hf["n_head"])
        F = int(hf["n_inner"] or 4 * C)
        P = int(hf["n_positions"])
        wte = take("wte.weight", (V, C))
        wpe = take("wpe.weight", (P, C))
        lm_head = output_head(C)
        if tied or lm_head is None:
            lm_head = wte
        embed_in, no_scale, share = unscale(wte, lm_head, tied, meta)
        offset = 2  # fairseq's pad id 1, plus one
        before = torch.zeros(offset, C)
        raw = (safetensors_metadata or {}).get(UNUSED_ROWS_KEY)
        if raw:
            try:
                info = json.loads(raw)
                rows = torch.frombuffer(bytearray(base64.b64decode(info["float32"])), dtype=torch.float32)
                before = rows.reshape(info["shape"]).clone()
            except (ValueError, KeyError, RuntimeError):
                notes.append(f"ignored a malformed {UNUSED_ROWS_KEY} entry of model.safetensors")
        state["decoder.embed_positions.weight"] = torch.cat([before, wpe], dim=0)
        blocks(HF_GPT2, "transformer.", C, F, L)
        dropout = float(hf["resid_pdrop"])
        values = {"decoder_learned_pos": True, "dropout": dropout,
                  "attention_dropout": float(hf["attn_pdrop"]), "activation_dropout": 0.0,
                  "max_target_positions": P}
        # optional: an absent embd_pdrop is taken to follow resid_pdrop (no note then)
        if float(hf_config.get("embd_pdrop", dropout)) != dropout:
            notes.append(f"embd_pdrop={hf_config['embd_pdrop']} differs from resid_pdrop={dropout}: "
                         "transformer_lm has one dropout (resid_pdrop's)")
    elif model_type == "llama":
        src = strip_prefix(src, ("model.",))
        C, L = int(hf["hidden_size"]), int(hf["num_hidden_layers"])
        H, F = int(hf["num_attention_heads"]), int(hf["intermediate_size"])
        KV = int(hf["num_key_value_heads"] or H)
        P = int(hf["max_position_embeddings"])
        theta = llama_rope_theta(hf, activation_name, C, H)
        embed_tok = take("embed_tokens.weight", (V, C))
        lm_head = output_head(C)
        if tied or lm_head is None:
            lm_head = embed_tok
        embed_in, no_scale, share = unscale(embed_tok, lm_head, tied, meta)
        blocks(HF_LLAMA, "model.", C, F, L, Q=C, KV=KV * (C // H))
        # Llama has no dropout but in attention: an export's own values come back, else none
        values = {"decoder_learned_pos": False, "dropout": float(saved.get("dropout") or 0.0),
                  "attention_dropout": float(hf["attention_dropout"]),
                  "activation_dropout": float(saved.get("activation_dropout") or 0.0), "max_target_positions": P}
        late = {"rope": True, "rope_theta": theta, "decoder_norm": "rmsnorm", "norm_eps": float(hf["rms_norm_eps"]),
                "decoder_ffn_gated": True, "decoder_kv_attention_heads": 0 if KV == H else KV,
                "no_decoder_bias": True,
                "no_token_positional_embeddings": bool(saved.get("no_token_positional_embeddings", False))}
    else:  # xglm
        src = strip_prefix(src, ("model.",))
        src = {k: v for k, v in src.items() if not k.startswith("embed_positions.")}
        C = int(hf["d_model"])
        L = int(hf["num_layers"])
        H = int(hf["attention_heads"])
        F = int(hf["ffn_dim"])
        P = int(hf["max_position_embeddings"])
        hf_pad = special_id(hf["pad_token_id"])
        if hf_pad is not None and hf_pad >= 2:
            raise UnmappableModelError(f"pad_token_id={hf_pad}: XGLM zeroes that row of its sinusoid table, i.e. "
                                       f"position {hf_pad - 2}; fairseq's table zeroes row 1 (no position)")
        embed_in = take("embed_tokens.weight", (V, C))
        lm_head = output_head(C)
        share = tied or lm_head is None or torch.equal(lm_head, embed_in)
        lm_head = embed_in if share else lm_head
        no_scale = not bool(hf["scale_embedding"])
        blocks(HF_XGLM, "model.", C, F, L)
        values = {"decoder_learned_pos": False, "dropout": float(hf["dropout"]),
                  "attention_dropout": float(hf["attention_dropout"]),
                  "activation_dropout": float(hf["activation_dropout"]),
                  "decoder_layerdrop": float(hf["layerdrop"]), "max_target_positions": P}

    # optional: an RMSNorm (Llama) has no bias
    ln_w, ln_b = state["decoder.layer_norm.weight"], state.get("decoder.layer_norm.bias")
    leftover = sorted(set(src) - used)
    if leftover:
        raise UnmappableModelError(f"{model_type} weights with no place in transformer_lm: "
                                   f"{', '.join(leftover[:4])}{' ...' if len(leftover) > 4 else ''}")
    if C % H:
        raise UnmappableModelError(f"hidden size {C} is not divisible by {H} heads")

    # the vocabulary, in fairseq's order; rows for fairseq-only specials
    extras = vocab.extras
    mapped = [i for i, h in enumerate(vocab.hf_ids) if h is not None]
    index = torch.tensor([vocab.hf_ids[i] for i in mapped], dtype=torch.long)

    def reorder(table: Tensor, filler: Optional[Tensor]) -> Tensor:
        if vocab.is_identity:
            return table
        out = torch.zeros(len(vocab.hf_ids), table.size(1), dtype=table.dtype)
        out[torch.tensor(mapped, dtype=torch.long)] = table.index_select(0, index)
        if extras and filler is not None:
            out[torch.tensor(extras, dtype=torch.long)] = filler
        return out

    silent = None
    if extras:
        silent = silent_rows(ln_w, ln_b, len(extras)) if ln_b is not None else None
        names = ", ".join(SPECIAL_SYMBOLS[FAIRSEQ_SPECIALS[i]] for i in extras)
        if silent is None:
            notes.append(f"fairseq's {names} (no HF token) get zero rows: logit 0, which generation may pick and "
                         "which takes probability from the HF tokens (the final norm leaves no constant row)")
        else:
            value = float((silent[0].double() * ln_b.double()).sum())
            notes.append(f"fairseq's {names} (no HF token) get rows of constant logit {value:.3g}: probability 0")
    embed = reorder(embed_in, silent if share else None)
    state["decoder.embed_tokens.weight"] = embed
    state["decoder.output_projection.weight"] = embed if share else reorder(lm_head, silent)

    values.update({
        "_name": "transformer_lm", "activation_fn": activation, "decoder_embed_dim": C, "decoder_input_dim": C,
        "decoder_output_dim": C, "decoder_ffn_embed_dim": F, "decoder_layers": L, "decoder_attention_heads": H,
        "decoder_normalize_before": True, "no_decoder_final_norm": False, "share_decoder_input_output_embed": share,
        "no_scale_embedding": no_scale, "decoder_layers_to_keep": None, "adaptive_input": False,
        "adaptive_softmax_cutoff": None, "layernorm_embedding": False, "no_token_positional_embeddings": False,
        **late,
    })
    keep = {k: v for k, v in saved.items() if k not in values and k not in ("_name",)}
    return {**keep, **values}, state, notes
