"""Hugging Face Llama (``LlamaForCausalLM``): the blocks and the final RMSNorm.

Llama keeps queries, keys and values in three matrices; ours is one fused ``in_proj`` whose
rows are ``[q (H*hd); k (KV*hd); v (KV*hd)]``, so with grouped-query attention the blocks are
of unequal sizes. The gated feed-forward's activation branch is Llama's ``gate_proj`` (our
``fc1``), its linear branch ``up_proj`` (our ``fc3``) and its output ``down_proj`` (our ``fc2``).
No linear layer and no norm has a bias. Transformers before 4.31 saved each layer's rotary
frequencies (``rotary_emb.inv_freq``); they are recomputed, so dropped. The token table and the
output head are mapped by ``fairseq.hf_bridge``.

Context: ``C`` (hidden_size), ``F`` (intermediate_size), ``Q`` (heads x head dim, i.e. ``C``),
``KV`` (key/value heads x head dim) and ``layers`` (num_hidden_layers) for the split sizes
and the checks when reading.
"""
from fairseq.formats.layout import DROP, Concat, Layout, Row

L = "decoder.layers.{i}."
M = "model.layers.{i}."


def _shape(*dims: str):
    return lambda ctx: tuple(int(ctx[d]) for d in dims)


def _qkv_sizes(ctx) -> list:
    return [int(ctx["Q"]), int(ctx["KV"]), int(ctx["KV"])]


def _qkv_shapes(ctx) -> list:
    return [(int(ctx["Q"]), int(ctx["C"])), (int(ctx["KV"]), int(ctx["C"])), (int(ctx["KV"]), int(ctx["C"]))]


def _one(ours: str, theirs: str, *dims: str) -> Row:
    return Row((L + ours,), (M + theirs,), shape=_shape(*dims), required=True)


HF_LLAMA = Layout("llama", (
    Row((L + "self_attn.in_proj.weight",), tuple(M + f"self_attn.{n}_proj.weight" for n in "qkv"),
        Concat(fused_ours=True, parts=3, sizes=_qkv_sizes), shape=_qkv_shapes, required=True),
    _one("self_attn.out_proj.weight", "self_attn.o_proj.weight", "C", "Q"),
    _one("self_attn_layer_norm.weight", "input_layernorm.weight", "C"),
    _one("final_layer_norm.weight", "post_attention_layernorm.weight", "C"),
    _one("fc1.weight", "mlp.gate_proj.weight", "F", "C"),
    _one("fc3.weight", "mlp.up_proj.weight", "F", "C"),
    _one("fc2.weight", "mlp.down_proj.weight", "C", "F"),
    Row(("decoder.layer_norm.weight",), ("model.norm.weight",), shape=_shape("C"), required=True),
    Row((), (M + "self_attn.rotary_emb.inv_freq",), DROP),
    Row((), ("model.rotary_emb.inv_freq",), DROP),
))


__all__ = ["HF_LLAMA"]
