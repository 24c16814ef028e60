"""Which Hugging Face class a transformer_lm becomes, and the options neither can hold."""
from typing import Any, List



from fairseq.hf_bridge.common import ACTIVATION_TO_HF, UnmappableModelError, cfg_dim, cfg_value


# -- which HF class a transformer_lm becomes ----------------------------------------------------
def refusals(model_cfg: Any) -> List[str]:
    """The options of ``model_cfg`` that neither GPT-2 nor XGLM has, each with its fix."""
    found = []
    if not cfg_value(model_cfg, "decoder_normalize_before", True):
        found.append("post-norm blocks (decoder_normalize_before=false): GPT-2 and XGLM are pre-norm")
    if cfg_value(model_cfg, "no_decoder_final_norm", False):
        found.append("no final LayerNorm (no_decoder_final_norm=true): GPT-2 and XGLM end in one")
    if cfg_value(model_cfg, "adaptive_softmax_cutoff") is not None:
        found.append(f"an adaptive softmax (adaptive_softmax_cutoff={cfg_value(model_cfg, 'adaptive_softmax_cutoff')}): "
                     "HF models have one full output layer")
    if cfg_value(model_cfg, "adaptive_input", False):
        found.append("adaptive input embeddings (adaptive_input=true): HF models have one embedding table")
    if cfg_value(model_cfg, "layernorm_embedding", False):
        found.append("a LayerNorm of the embeddings (layernorm_embedding=true): neither GPT-2 nor XGLM has one")
    for key in ("scale_attn", "scale_fc", "scale_heads", "scale_resids"):
        if cfg_value(model_cfg, key, False):
            found.append(f"NormFormer's {key}=true: neither GPT-2 nor XGLM has it")
    if cfg_value(model_cfg, "no_token_positional_embeddings", False):
        found.append("no position embeddings (no_token_positional_embeddings=true): GPT-2 and XGLM add them")
    embed_dim = int(cfg_value(model_cfg, "decoder_embed_dim"))
    for key in ("decoder_input_dim", "decoder_output_dim"):
        if cfg_dim(model_cfg, key) != embed_dim:
            found.append(f"{key}={cfg_dim(model_cfg, key)} != decoder_embed_dim={embed_dim} (a projection "
                         "neither GPT-2 nor XGLM has)")
    activation = str(cfg_value(model_cfg, "activation_fn", "relu"))
    if activation not in ACTIVATION_TO_HF:
        found.append(f"activation_fn={activation}: no transformers activation computes it")
    return found


def hf_target(model_cfg: Any) -> str:
    """``"gpt2"`` (learned positions) or ``"xglm"`` (sinusoids) for a ``transformer_lm`` config.

    Raises:
        UnmappableModelError: the first option neither can represent, one line.
    """
    name = str(cfg_value(model_cfg, "_name", "transformer_lm"))
    if not name.startswith("transformer_lm"):
        raise UnmappableModelError(f"model {name!r} cannot be exported: only transformer_lm models map to "
                                   "GPT2LMHeadModel / XGLMForCausalLM")
    problems = refusals(model_cfg)
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise UnmappableModelError(f"cannot export to transformers: {problems[0]}{more}")
    return "gpt2" if cfg_value(model_cfg, "decoder_learned_pos", False) else "xglm"


# the weights that depend on the vocabulary and embedding scale, mapped here rather than by a table
