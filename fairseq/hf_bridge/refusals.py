"""Which Hugging Face class a transformer_lm becomes (GPT-2, XGLM or Llama), and the options it
cannot hold."""
from typing import Any, List



from fairseq.hf_bridge.common import ACTIVATION_TO_HF, LAYER_NORM_EPS, UnmappableModelError, cfg_dim, cfg_value


# -- which HF class a transformer_lm becomes ----------------------------------------------------
def kv_heads(model_cfg: Any) -> int:
    """The model's key/value heads (``decoder_kv_attention_heads``, 0 meaning one per head)."""
    heads = int(cfg_value(model_cfg, "decoder_attention_heads", 8))
    return int(cfg_value(model_cfg, "decoder_kv_attention_heads", 0) or heads)


def modern_options(model_cfg: Any) -> List[str]:
    """The Llama-family options ``model_cfg`` turns on (rotary positions, RMSNorm, a gated
    feed-forward, grouped-query attention, bias-free layers): any of them makes it a Llama."""
    found = []
    if cfg_value(model_cfg, "rope", False):
        found.append("rope=true")
    if str(cfg_value(model_cfg, "decoder_norm", "layernorm")) != "layernorm":
        found.append(f"decoder_norm={cfg_value(model_cfg, 'decoder_norm')}")
    if cfg_value(model_cfg, "decoder_ffn_gated", False):
        found.append("decoder_ffn_gated=true")
    if kv_heads(model_cfg) != int(cfg_value(model_cfg, "decoder_attention_heads", 8)):
        found.append(f"decoder_kv_attention_heads={kv_heads(model_cfg)}")
    if cfg_value(model_cfg, "no_decoder_bias", False):
        found.append("no_decoder_bias=true")
    return found


def shared_refusals(model_cfg: Any, names: str) -> List[str]:
    """The options that no HF class here has (``names`` is the target, for the message)."""
    found = []
    if not cfg_value(model_cfg, "decoder_normalize_before", True):
        found.append(f"post-norm blocks (decoder_normalize_before=false): {names} are pre-norm")
    if cfg_value(model_cfg, "no_decoder_final_norm", False):
        found.append(f"no final norm (no_decoder_final_norm=true): {names} end in one")
    if cfg_value(model_cfg, "adaptive_softmax_cutoff") is not None:
        found.append(f"an adaptive softmax (adaptive_softmax_cutoff={cfg_value(model_cfg, 'adaptive_softmax_cutoff')}): "
                     "HF models have one full output layer")
    if cfg_value(model_cfg, "adaptive_input", False):
        found.append("adaptive input embeddings (adaptive_input=true): HF models have one embedding table")
    if cfg_value(model_cfg, "layernorm_embedding", False):
        found.append(f"a LayerNorm of the embeddings (layernorm_embedding=true): {names} have none")
    for key in ("scale_attn", "scale_fc", "scale_heads", "scale_resids"):
        if cfg_value(model_cfg, key, False):
            found.append(f"NormFormer's {key}=true: {names} have no such scale")
    embed_dim = int(cfg_value(model_cfg, "decoder_embed_dim"))
    for key in ("decoder_input_dim", "decoder_output_dim"):
        if cfg_dim(model_cfg, key) != embed_dim:
            found.append(f"{key}={cfg_dim(model_cfg, key)} != decoder_embed_dim={embed_dim} (a projection "
                         f"{names} have not)")
    return found


def refusals(model_cfg: Any) -> List[str]:
    """The options of ``model_cfg`` that neither GPT-2 nor XGLM has, each with its fix."""
    found = shared_refusals(model_cfg, "GPT-2 and XGLM")
    if cfg_value(model_cfg, "no_token_positional_embeddings", False):
        found.append("no position embeddings (no_token_positional_embeddings=true): GPT-2 and XGLM add them")
    activation = str(cfg_value(model_cfg, "activation_fn", "relu"))
    if activation not in ACTIVATION_TO_HF:
        found.append(f"activation_fn={activation}: no transformers activation computes it")
    eps = float(cfg_value(model_cfg, "norm_eps", LAYER_NORM_EPS))
    if eps != LAYER_NORM_EPS:
        found.append(f"norm_eps={eps:g}: the GPT-2 and XGLM exports keep LayerNorm's {LAYER_NORM_EPS:g}")
    return found


def llama_refusals(model_cfg: Any) -> List[str]:
    """The options of a Llama-family ``model_cfg`` that ``LlamaForCausalLM`` cannot hold: a Llama
    is rotary positions, RMSNorm, a gated SiLU feed-forward and no biases, all together."""
    names = "LlamaForCausalLM's blocks"
    found = []
    if not cfg_value(model_cfg, "rope", False):
        found.append("rope=false: LlamaForCausalLM's positions are rotary; train with --rope (its other Llama "
                     f"parts: {', '.join(modern_options(model_cfg))})")
    if str(cfg_value(model_cfg, "decoder_norm", "layernorm")) != "rmsnorm":
        found.append(f"decoder_norm={cfg_value(model_cfg, 'decoder_norm', 'layernorm')}: LlamaForCausalLM's norms "
                     "are RMSNorm; train with --decoder-norm rmsnorm")
    if not cfg_value(model_cfg, "decoder_ffn_gated", False):
        found.append("decoder_ffn_gated=false: LlamaForCausalLM's feed-forward is gated (SwiGLU); train with "
                     "--decoder-ffn-gated --activation-fn silu")
    activation = str(cfg_value(model_cfg, "activation_fn", "relu"))
    if activation != "silu":
        found.append(f"activation_fn={activation}: LlamaForCausalLM's gate is SiLU; train with --activation-fn silu")
    if not cfg_value(model_cfg, "no_decoder_bias", False):
        found.append("biases in the blocks (no_decoder_bias=false): LlamaForCausalLM has none; train with "
                     "--no-decoder-bias")
    heads = int(cfg_value(model_cfg, "decoder_attention_heads", 8))
    if heads % kv_heads(model_cfg):
        found.append(f"decoder_kv_attention_heads={kv_heads(model_cfg)} does not divide "
                     f"decoder_attention_heads={heads}")
    return found + shared_refusals(model_cfg, names)


def hf_target(model_cfg: Any) -> str:
    """``"llama"`` (a model with any Llama-family part), ``"gpt2"`` (learned positions) or
    ``"xglm"`` (sinusoids) for a ``transformer_lm`` config.

    Raises:
        UnmappableModelError: the first option the target cannot represent, one line.
    """
    name = str(cfg_value(model_cfg, "_name", "transformer_lm"))
    if not name.startswith("transformer_lm"):
        raise UnmappableModelError(f"model {name!r} cannot be exported: only transformer_lm models map to "
                                   "GPT2LMHeadModel / XGLMForCausalLM / LlamaForCausalLM")
    llama = bool(modern_options(model_cfg))
    problems = llama_refusals(model_cfg) if llama else refusals(model_cfg)
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        target = "LlamaForCausalLM" if llama else "transformers"
        raise UnmappableModelError(f"cannot export to {target}: {problems[0]}{more}")
    if llama:
        return "llama"
    return "gpt2" if cfg_value(model_cfg, "decoder_learned_pos", False) else "xglm"


# the weights that depend on the vocabulary and embedding scale, mapped here rather than by a table
