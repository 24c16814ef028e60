"""Hugging Face XGLM (``XGLMForCausalLM``): the blocks and the final LayerNorm.

XGLM is fairseq's own decoder under the ``model.`` prefix, with queries, keys and values in
three matrices (ours: one fused ``in_proj``). Its sinusoid table is recomputed on both sides;
the token table and output head are mapped by ``fairseq.hf_bridge``.

Context: ``C`` (d_model), ``F`` (ffn_dim), ``layers`` (num_layers) for the checks when reading.
"""
from fairseq.formats.layout import Concat, Layout, Row

L = "decoder.layers.{i}."
X = "model.layers.{i}."


def _shape(*dims: str):
    return lambda ctx: tuple(int(ctx[d]) for d in dims)


def _block(ours: str, theirs: str, weight: tuple, bias: tuple) -> tuple:
    return (Row((L + ours + ".weight",), (X + theirs + ".weight",), shape=_shape(*weight), required=True),
            Row((L + ours + ".bias",), (X + theirs + ".bias",), shape=_shape(*bias), required=True))


HF_XGLM = Layout("xglm", (
    Row((L + "self_attn.in_proj.weight",),
        tuple(X + f"self_attn.{n}_proj.weight" for n in "qkv"), Concat(fused_ours=True, parts=3),
        shape=_shape("C", "C"), required=True),
    Row((L + "self_attn.in_proj.bias",),
        tuple(X + f"self_attn.{n}_proj.bias" for n in "qkv"), Concat(fused_ours=True, parts=3),
        shape=_shape("C"), required=True),
    *_block("self_attn.out_proj", "self_attn.out_proj", ("C", "C"), ("C",)),
    *_block("self_attn_layer_norm", "self_attn_layer_norm", ("C",), ("C",)),
    *_block("fc1", "fc1", ("F", "C"), ("F",)),
    *_block("fc2", "fc2", ("C", "F"), ("C",)),
    *_block("final_layer_norm", "final_layer_norm", ("C",), ("C",)),
    Row(("decoder.layer_norm.{kind}",), ("model.layer_norm.{kind}",), shape=_shape("C"), required=True),
))


__all__ = ["HF_XGLM"]
