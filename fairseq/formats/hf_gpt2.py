"""Hugging Face GPT-2 (``GPT2LMHeadModel``): the blocks and the final LayerNorm.

GPT-2's linear maps are ``Conv1D``, stored (in, out): transposed to our ``nn.Linear``; its
attention keeps queries, keys and values fused as ours does (``c_attn``, so transposed only).
Each block holds two causal-mask buffers (``attn.bias``, ``attn.masked_bias``) that carry no
weights. The token table, the position table (fairseq's starts ``padding_idx + 1`` rows later)
and the output head depend on the vocabulary and the embedding scale: ``fairseq.hf_bridge``
maps those itself and hands the converter the rest.

Context: ``C`` (n_embd), ``F`` (n_inner), ``layers`` (n_layer) for the shape and presence
checks when reading.
"""
from fairseq.formats.layout import DROP, TRANSPOSE, Layout, Row

L = "decoder.layers.{i}."
H = "transformer.h.{i}."


def _vector(size: str):
    return lambda ctx: (int(ctx[size]),)


def _matrix(rows: str, cols: str, times: int = 1):
    return lambda ctx: (int(ctx[rows]), times * int(ctx[cols]))


HF_GPT2 = Layout("gpt2", (
    Row((L + "self_attn_layer_norm.{kind}",), (H + "ln_1.{kind}",), shape=_vector("C"), required=True),
    Row((L + "self_attn.in_proj.weight",), (H + "attn.c_attn.weight",), TRANSPOSE,
        shape=_matrix("C", "C", 3), required=True),
    Row((L + "self_attn.in_proj.bias",), (H + "attn.c_attn.bias",),
        shape=lambda ctx: (3 * int(ctx["C"]),), required=True),
    Row((L + "self_attn.out_proj.weight",), (H + "attn.c_proj.weight",), TRANSPOSE,
        shape=_matrix("C", "C"), required=True),
    Row((L + "self_attn.out_proj.bias",), (H + "attn.c_proj.bias",), shape=_vector("C"), required=True),
    Row((L + "final_layer_norm.{kind}",), (H + "ln_2.{kind}",), shape=_vector("C"), required=True),
    Row((L + "fc1.weight",), (H + "mlp.c_fc.weight",), TRANSPOSE, shape=_matrix("C", "F"), required=True),
    Row((L + "fc1.bias",), (H + "mlp.c_fc.bias",), shape=_vector("F"), required=True),
    Row((L + "fc2.weight",), (H + "mlp.c_proj.weight",), TRANSPOSE, shape=_matrix("F", "C"), required=True),
    Row((L + "fc2.bias",), (H + "mlp.c_proj.bias",), shape=_vector("C"), required=True),
    Row((), (H + "attn.bias",), DROP),
    Row((), (H + "attn.masked_bias",), DROP),
    Row(("decoder.layer_norm.{kind}",), ("transformer.ln_f.{kind}",), shape=_vector("C"), required=True),
))


__all__ = ["HF_GPT2"]
