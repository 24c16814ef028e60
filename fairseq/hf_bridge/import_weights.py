"""Hugging Face -> fairseq: the model config and weights of an import."""
import base64
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from fairseq.formats import HF_GPT2, HF_XGLM, Layout, LayoutError, to_ours

from fairseq.hf_bridge.common import ACTIVATION_FROM_HF, FAIRSEQ_SPECIALS, LAYER_NORM_EPS, META_KEY, META_VERSION, SPECIAL_SYMBOLS, SUPPORTED_MODEL_TYPES, UNUSED_ROWS_KEY, UnmappableModelError
from fairseq.hf_bridge.vocab import VocabMap, silent_rows, special_id


def export_meta(hf_config: Mapping[str, Any]) -> Dict[str, Any]:
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
    model_type = str(hf_config.get("model_type", ""))
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnmappableModelError(f"config.json has model_type={model_type!r}: only gpt2 (GPT2LMHeadModel) and "
                                   "xglm (XGLMForCausalLM) map to transformer_lm")
    if hf_config.get("add_cross_attention"):
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

    def blocks(layout: Layout, prefix: str, C: int, F: int, L: int) -> None:
        """The blocks and final LayerNorm into ``state``, through ``layout``'s table (the keys
        read with or without ``prefix``: a base model's files lack it)."""
        rest = {prefix + k: v for k, v in src.items() if k not in used and k != "lm_head.weight"}
        try:
            converted = to_ours(rest, layout, {"C": C, "F": F, "layers": L}, unmapped="keep")
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
    activation_name = str(hf_config.get("activation_function", "gelu_new" if model_type == "gpt2" else "gelu"))
    if activation_name not in ACTIVATION_FROM_HF:
        raise UnmappableModelError(f"activation_function={activation_name!r} has no transformer_lm activation_fn "
                                   f"(supported: {', '.join(sorted(ACTIVATION_FROM_HF))})")
    activation = ACTIVATION_FROM_HF[activation_name]
    if activation_name in ("gelu_new", "gelu_fast", "gelu_python_tanh"):
        notes.append(f"activation {activation_name} is computed as gelu_accurate (the same tanh GELU, "
                     "within float rounding)")
    tied = bool(hf_config.get("tie_word_embeddings", True))
    state: Dict[str, Tensor] = {}

    if model_type == "gpt2":
        src = strip_prefix(src, ("transformer.",))
        src = {k: v for k, v in src.items() if not (k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"))}
        for key, off in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
            if bool(hf_config.get(key, off)) != off:
                raise UnmappableModelError(f"{key}={not off}: transformer_lm attention scales by 1/sqrt(head_dim) only")
        eps = float(hf_config.get("layer_norm_epsilon", LAYER_NORM_EPS))
        if eps != LAYER_NORM_EPS:
            raise UnmappableModelError(f"layer_norm_epsilon={eps}: transformer_lm's LayerNorms use {LAYER_NORM_EPS}")
        C = int(hf_config.get("n_embd", 768))
        L = int(hf_config.get("n_layer", 12))
        H = int(hf_config.get("n_head", 12))
        F = int(hf_config.get("n_inner") or 4 * C)
        P = int(hf_config.get("n_positions", 1024))
        wte = take("wte.weight", (V, C))
        wpe = take("wpe.weight", (P, C))
        lm_head = output_head(C)
        if tied or lm_head is None:
            lm_head = wte
        # an export of a scaled model: wte = table * scale, lm_head = table
        scale = float(meta.get("embed_scale", 1.0))
        embed_in, no_scale, share = wte, True, tied
        if scale != 1.0 and torch.equal(lm_head * scale, wte):
            embed_in, no_scale, share = lm_head, False, True
        elif scale != 1.0 and not meta.get("tied", False) and torch.equal((wte / scale) * scale, wte):
            embed_in, no_scale, share = wte / scale, False, False
        elif not tied and torch.equal(lm_head, wte):
            share = True
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
        dropout = float(hf_config.get("resid_pdrop", 0.1))
        values = {"decoder_learned_pos": True, "dropout": dropout,
                  "attention_dropout": float(hf_config.get("attn_pdrop", 0.1)), "activation_dropout": 0.0,
                  "max_target_positions": P}
        if float(hf_config.get("embd_pdrop", dropout)) != dropout:
            notes.append(f"embd_pdrop={hf_config.get('embd_pdrop')} differs from resid_pdrop={dropout}: "
                         "transformer_lm has one dropout (resid_pdrop's)")
    else:  # xglm
        src = strip_prefix(src, ("model.",))
        src = {k: v for k, v in src.items() if not k.startswith("embed_positions.")}
        C = int(hf_config.get("d_model", 1024))
        L = int(hf_config.get("num_layers", 24))
        H = int(hf_config.get("attention_heads", 16))
        F = int(hf_config.get("ffn_dim", 4096))
        P = int(hf_config.get("max_position_embeddings", 2048))
        hf_pad = special_id(hf_config.get("pad_token_id"))
        if hf_pad is not None and hf_pad >= 2:
            raise UnmappableModelError(f"pad_token_id={hf_pad}: XGLM zeroes that row of its sinusoid table, i.e. "
                                       f"position {hf_pad - 2}; fairseq's table zeroes row 1 (no position)")
        embed_in = take("embed_tokens.weight", (V, C))
        lm_head = output_head(C)
        share = tied or lm_head is None or torch.equal(lm_head, embed_in)
        lm_head = embed_in if share else lm_head
        no_scale = not bool(hf_config.get("scale_embedding", True))
        blocks(HF_XGLM, "model.", C, F, L)
        values = {"decoder_learned_pos": False, "dropout": float(hf_config.get("dropout", 0.1)),
                  "attention_dropout": float(hf_config.get("attention_dropout", 0.1)),
                  "activation_dropout": float(hf_config.get("activation_dropout", 0.0)),
                  "decoder_layerdrop": float(hf_config.get("layerdrop", 0.0)), "max_target_positions": P}

    ln_w, ln_b = state["decoder.layer_norm.weight"], state["decoder.layer_norm.bias"]
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
        silent = silent_rows(ln_w, ln_b, len(extras))
        names = ", ".join(SPECIAL_SYMBOLS[FAIRSEQ_SPECIALS[i]] for i in extras)
        if silent is None:
            notes.append(f"fairseq's {names} (no HF token) get zero rows: logit 0, which generation may pick and "
                         "which takes probability from the HF tokens (the final LayerNorm leaves no constant row)")
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
    })
    saved = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    keep = {k: v for k, v in saved.items() if k not in values and k not in ("_name",)}
    return {**keep, **values}, state, notes
