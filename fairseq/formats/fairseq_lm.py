"""fairseq 0.12's ``transformer_lm`` layout (and the spellings of older fairseq versions).

Most keys are ours already. The differences: attention keeps separate ``q_proj``/``k_proj``/
``v_proj`` (ours: one fused ``in_proj``); an adaptive input band ``i`` is an
``nn.Sequential(embedding, projection)``; the adaptive softmax keeps its head as one matrix
(words then clusters), or, tied to an adaptive input, as ``word_proj`` + ``class_proj``, and
tail ``i`` as ``nn.Sequential(proj, dropout, out)`` whose projection is an ``nn.Linear``
(transposed to ours) unless it is the adaptive input's own; ``version`` and ``_float_tensor``
buffers carry no weights. Older versions call the output projection ``embed_out`` and the
layer norms of a block ``layer_norms.0`` / ``layer_norms.2``; a cached sinusoid table
(``embed_positions.weights``) is recomputed, so dropped.

Context (``ctx``), from the model: ``adaptive_softmax`` (bool), ``adaptive_tied`` (the softmax
shares the adaptive input's tables), ``tie_proj`` (and its projections), ``head_words`` (the
first band's size, ``cutoff[0]``), and for grouped-query attention ``q_rows`` and ``kv_rows``
(the query and the key/value blocks of ``in_proj``, fewer key/value rows than query rows).

The parts of Llama-style decoders that fairseq 0.12 lacks keep our names in this layout (the
linear branch ``fc3`` of a gated feed-forward; norms and linears without bias simply have no
``.bias``), so that our own checkpoints of such models read back through it.
"""
from typing import List

import torch

from fairseq.formats.layout import DROP, IDENTITY, TRANSPOSE, Concat, Constant, Layout, Row, same

D = "decoder."
L = "decoder.layers.{i}."
A = "decoder.adaptive_softmax."


def _tied(ctx) -> bool:
    return bool(ctx.get("adaptive_tied"))


def _untied(ctx) -> bool:
    return not ctx.get("adaptive_tied")


def _tie_proj(ctx) -> bool:
    return bool(ctx.get("tie_proj"))


def _own_proj(ctx) -> bool:
    return not ctx.get("tie_proj")


def _has_softmax(ctx) -> bool:
    return bool(ctx.get("adaptive_softmax"))


def _grouped_heads(ctx) -> bool:
    return bool(ctx.get("kv_rows")) and ctx.get("kv_rows") != ctx.get("q_rows")


def _equal_heads(ctx) -> bool:
    return not _grouped_heads(ctx)


def _qkv_rows(ctx) -> List[int]:
    return [int(ctx["q_rows"]), int(ctx["kv_rows"]), int(ctx["kv_rows"])]


FAIRSEQ_LM = Layout("fairseq", tuple([
    # the decoder around the stack
    *same(D + "embed_tokens.weight", D + "embed_positions.weight", D + "layernorm_embedding.{kind}",
          D + "project_in_dim.weight", D + "project_out_dim.weight", D + "layer_norm.{kind}"),
    *same(D + "output_projection.weight", older=[D + "embed_out"]),
    Row((), (D + "version",), Constant(lambda ctx: torch.tensor([3.0]))),
    Row((), (D + "embed_positions._float_tensor",), DROP),
    Row((), (D + "embed_positions.weights",), DROP),
    Row((), (D + "embed_tokens._float_tensor",), DROP),
    # one block
    Row((L + "self_attn.in_proj.{kind}",),
        (L + "self_attn.q_proj.{kind}", L + "self_attn.k_proj.{kind}", L + "self_attn.v_proj.{kind}"),
        Concat(fused_ours=True, parts=3), when=_equal_heads),
    Row((L + "self_attn.in_proj.{kind}",),
        (L + "self_attn.q_proj.{kind}", L + "self_attn.k_proj.{kind}", L + "self_attn.v_proj.{kind}"),
        Concat(fused_ours=True, parts=3, sizes=_qkv_rows), when=_grouped_heads),
    *same(L + "self_attn_layer_norm.{kind}", L + "final_layer_norm.{kind}",
          older=[L + "layer_norms.0.{kind}", L + "layer_norms.2.{kind}"]),
    *same(L + "self_attn.out_proj.{kind}", L + "fc1.{kind}", L + "fc2.{kind}", L + "fc3.{kind}",
          L + "attn_ln.{kind}", L + "ffn_layernorm.{kind}", L + "c_attn", L + "w_resid"),
    # adaptive input: band i is Sequential(embedding, projection)
    Row((D + "embed_tokens.embeddings.{j}.weight",), (D + "embed_tokens.embeddings.{j}.0.weight",)),
    Row((D + "embed_tokens.projections.{j}.weight",), (D + "embed_tokens.embeddings.{j}.1.weight",)),
    # adaptive softmax
    Row((), (A + "version",), Constant(lambda ctx: torch.tensor([1], dtype=torch.long)), when=_has_softmax),
    Row((A + "head_word_weight", A + "head_cluster_weight"), (A + "head.weight",),
        Concat(fused_ours=False, parts=2, sizes=lambda ctx: [int(ctx["head_words"]), -1]), when=_untied),
    Row((A + "head_word_weight",), (A + "head.word_proj.weight",), IDENTITY, when=_tied),
    Row((A + "head_cluster_weight",), (A + "head.class_proj.weight",), IDENTITY, when=_tied),
    Row((), (A + "head._float_tensor",), Constant(lambda ctx: torch.zeros(1)), when=_tied),
    Row((A + "tail_proj.{j}",), (A + "tail.{j}.0.weight",), TRANSPOSE, when=_own_proj),
    Row((A + "tail_proj.{j}",), (A + "tail.{j}.0.weight",), IDENTITY, when=_tie_proj),
    Row((A + "tail_out.{j}",), (A + "tail.{j}.2.weight",)),
]))


__all__ = ["FAIRSEQ_LM"]
