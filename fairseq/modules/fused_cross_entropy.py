"""The output projection and its cross entropy as one step, chunk by chunk over tokens.

``fused_linear_cross_entropy(x, weight, target)`` equals
``F.cross_entropy(F.linear(x, weight, bias).float(), target, ignore_index=..., reduction=...)``
within float rounding, in value and in gradients, but never holds the whole
``tokens x vocabulary`` logits (nor their log-softmax, nor its gradient): only one
``(chunk, V)`` block at a time.

How the gradients are made
--------------------------
* ``reduction="sum"`` (training): the gradient of a sum is known in forward, so every block's
  ``softmax - onehot`` is turned into its share of ``grad_x`` (``(n, C)``) and ``grad_weight``
  (``(V, C)``) right away, and the block is dropped. Backward only scales those two by the
  incoming scalar. Three matmuls per block, as many as the plain path's forward + backward.
* ``reduction="none"``: the incoming gradient is one number per token and is only known in
  backward, so backward recomputes each block's logits from the saved ``x`` and the per-token
  log-normaliser (four matmuls per block instead of three).

Mixed precision: under ``torch.autocast`` the matmuls run in the autocast dtype (as
``F.linear`` would), the softmax and the loss in float32, as in the plain path. Inside
:func:`weight_casts_per_update` (the trainer's update), the weight is cast to that dtype once
for all the micro-batches, as autocast's own cache does for ``F.linear``.

Block size
----------
Each block costs the same three matmuls as the plain path on its rows, plus a fixed part that
does not shrink with the rows: every matmul with the (V, C) projection reads (and packs) all of
it, and the (V, C) gradient is read and written once per block. Thin blocks (a few dozen rows
of a large vocabulary) therefore run far below the plain path's speed; large blocks cost memory.
:func:`block_rows` picks, when no ``block_elements`` is given:

* ``max(MIN_BLOCK_ROWS, TARGET_BLOCK_ELEMENTS // V)`` rows: at least 512 rows, so that the fixed
  part is small next to the matmuls, and more (up to 8M logits, 32 MiB) for small vocabularies;
* at most ``max(MAX_BLOCK_ELEMENTS, V * C) // V`` rows: a block holds at most 16M logits
  (64 MiB), or as many as the (V, C) gradient that the fused path holds anyway;
* at most the number of tokens, in blocks of equal size (no thin last block).

With V = 42,856: at most 391 rows at C = 128 (342 for 2048 tokens), 512 at C = 512 (the old
2**21-logit blocks had 48); with V = 8192: 1024 rows.

Where the fused path does not win, the plain computation runs instead (``F.cross_entropy`` of
``F.linear``), when no ``block_elements`` is given: all the logits fit in one block of the target
size (``N * V <= TARGET_BLOCK_ELEMENTS``: the memory to save is small) and the vocabulary is
less than ``PLAIN_VOCAB_PER_HIDDEN`` (4) times the hidden size. What the fused path saves is
passes over the (N, V) logits; what it adds is passes over (N, C) and (V, C) tensors (ignored
rows masked, the gradients scaled by the incoming gradient): with V < 4 C they cost as much
(measured: 2048 tokens, V = 1400, C = 512: 0.84-1.0x the plain path; C = 128: 1.16-1.3x).
"""
import contextlib
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: rows a block should have at least, so that its matmuls run at full speed
MIN_BLOCK_ROWS = 512
#: logits a block should hold (8M floats, 32 MiB), when the vocabulary is small enough
TARGET_BLOCK_ELEMENTS = 2**23
#: logits a block may hold at most (16M floats, 64 MiB), unless the (V, C) projection is larger
MAX_BLOCK_ELEMENTS = 2**24
#: a problem that fits one block takes the plain computation when V < this times C
PLAIN_VOCAB_PER_HIDDEN = 4
#: kept for callers of the old name: the logits a block should hold
DEFAULT_BLOCK_ELEMENTS = TARGET_BLOCK_ELEMENTS


def block_rows(num_tokens: int, vocab_size: int, block_elements: Optional[int] = None,
               hidden_size: int = 0) -> int:
    """Rows of one block of ``num_tokens`` x ``vocab_size`` logits (see the module docstring).

    Args:
        num_tokens: N, the rows to cover.
        vocab_size: V.
        block_elements: logits per block, exactly (``block_elements // V`` rows, at least 1);
            ``None``: the rule below.
        hidden_size: C, the projection's input size (the cap grows with the (V, C) gradient).

    Returns:
        rows per block, between 1 and ``num_tokens``. With the rule, the blocks are of equal
        size: ``ceil(N / blocks)`` rows for the fewest blocks that respect the cap.
    """
    vocab_size, num_tokens = max(vocab_size, 1), max(num_tokens, 1)
    if block_elements is not None:
        return max(1, min(num_tokens, block_elements // vocab_size))
    wanted = max(MIN_BLOCK_ROWS, TARGET_BLOCK_ELEMENTS // vocab_size)
    cap = max(MAX_BLOCK_ELEMENTS, vocab_size * hidden_size) // vocab_size
    rows = max(1, min(num_tokens, wanted, cap))
    blocks = -(-num_tokens // rows)
    return -(-num_tokens // blocks)


def takes_plain_path(num_tokens: int, vocab_size: int, hidden_size: int) -> bool:
    """Whether :func:`fused_linear_cross_entropy` (default block size) runs the plain computation
    for these sizes: all logits within one target block and ``V < PLAIN_VOCAB_PER_HIDDEN * C``."""
    return (num_tokens * vocab_size <= TARGET_BLOCK_ELEMENTS
            and vocab_size < PLAIN_VOCAB_PER_HIDDEN * hidden_size)


def _compute_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The autocast dtype matmuls on ``x``'s device run in, or None when autocast is off."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _block_logits(x: Tensor, weight: Tensor, bias: Optional[Tensor], out: Tensor,
                  low: Optional[Tensor] = None) -> Tensor:
    """(n, C) x (V, C) -> (n, V) float32 logits of one block, written into ``out`` (n, V).

    When the matmuls run in a narrower dtype than ``out`` (bf16 autocast), the product is
    written into ``low`` first ((n, V) in ``x``'s dtype, reused by every block) when given."""
    if x.dtype == out.dtype:
        if bias is None:
            return torch.mm(x, weight.t(), out=out)
        return torch.addmm(bias, x, weight.t(), out=out)
    if low is None:
        logits = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())  # (n, V)
    else:
        logits = torch.mm(x, weight.t(), out=low) if bias is None else torch.addmm(bias, x, weight.t(), out=low)
    return out.copy_(logits)


def _narrow_block(rows: int, vocab: int, mm_dtype: torch.dtype, device: torch.device) -> Optional[Tensor]:
    """The (rows, V) buffer in the matmuls' dtype that bf16/fp16 blocks reuse for their product
    and their ``softmax - onehot`` (a fresh one per block costs page faults on every block, as
    for the float32 block); ``None`` in float32, which needs none."""
    if mm_dtype == torch.float32:
        return None
    return torch.empty((rows, vocab), dtype=mm_dtype, device=device)


def _accumulate(acc: Tensor, a: Tensor, b: Tensor, first: bool) -> None:
    """``acc = a @ b`` on the first block, ``acc += a @ b`` after; ``acc`` may be wider than a, b."""
    if acc.dtype == a.dtype:
        torch.mm(a, b, out=acc) if first else acc.addmm_(a, b)
    else:
        acc.copy_(a @ b) if first else acc.add_(a @ b)


#: (id, dtype) -> (weight, its version when cast, the cast) while weight_casts_per_update is open
_update_casts: Optional[Dict[Tuple[int, torch.dtype], Tuple[Tensor, int, Tensor]]] = None


@contextlib.contextmanager
def weight_casts_per_update() -> Iterator[None]:
    """Within it, the fused loss casts each weight to the matmuls' dtype once, not once per call.

    The trainer holds it around the micro-batches of an update (``--update-freq``). Autocast
    keeps its casts of the layers' weights for the whole region, but the fused loss computes
    with autocast off, so without this the output weight would be cast again for every
    micro-batch. A cast is reused only while the weight has not been changed in place (its
    version counter); all are dropped on exit. Nested uses share the outermost one's casts."""
    global _update_casts
    if _update_casts is not None:
        yield
        return
    _update_casts = {}
    try:
        yield
    finally:
        _update_casts = None


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)``, the same tensor again inside :func:`weight_casts_per_update` while ``t``
    is unchanged."""
    if t.dtype == dtype or _update_casts is None:
        return t.to(dtype)
    key = (id(t), dtype)
    hit = _update_casts.get(key)
    if hit is not None and hit[0] is t and hit[1] == t._version:
        return hit[2]
    cast = t.to(dtype)
    _update_casts[key] = (t, t._version, cast)
    return cast


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """See :func:`fused_linear_cross_entropy`; ``x`` is (N, C), ``target`` (N,)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], target: Tensor,
                ignore_index: int, reduction: str, block_elements: int, grad_now: bool,
                dtype: Optional[torch.dtype]) -> Tensor:
        ctx.compute_dtype = dtype
        N, C = x.shape
        V = weight.size(0)
        mm_dtype = x.dtype if dtype is None else dtype  # the matmuls' dtype, as F.linear's
        acc_dtype = torch.promote_types(mm_dtype, torch.float32)  # grad_weight accumulates in it
        cx, cw = x.to(mm_dtype), _cast(weight, mm_dtype)
        cb = None if bias is None else _cast(bias, mm_dtype)
        valid = target.ne(ignore_index)  # (N,)
        safe_target = torch.where(valid, target, torch.zeros_like(target))  # (N,)
        rows = block_rows(N, V, block_elements, C)
        picked_all = torch.empty(N, dtype=torch.float32, device=x.device)  # (N,) log p(target)
        lse_all = None if grad_now else torch.empty(N, dtype=torch.float32, device=x.device)
        grad_x = grad_w = grad_b = x_masked = minus_one = valid_mm = None
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if grad_now:
            # Few large operations per block: ignored rows are handled once for all blocks, not
            # per block (x rows zeroed before for grad_w; grad_x rows zeroed in backward).
            valid_mm = valid.unsqueeze(1).to(mm_dtype)  # (N, 1)
            minus_one = torch.full((rows, 1), -1.0, dtype=torch.float32, device=x.device)
            if need_x:
                grad_x = torch.empty((N, C), dtype=mm_dtype, device=x.device)  # every row written
            if need_w:
                grad_w = torch.empty((V, C), dtype=acc_dtype, device=x.device)  # first block sets it
                x_masked = cx * valid_mm  # (N, C)
            if bias is not None and need_b:
                grad_b = torch.empty(V, dtype=acc_dtype, device=x.device)
        # one (rows, V) float32 block, reused by every block (fresh large allocations would cost
        # page faults on every block); the log-softmax overwrites the logits in it
        logits_buf = torch.empty((rows, V), dtype=torch.float32, device=x.device)
        low_buf = _narrow_block(rows, V, mm_dtype, x.device)
        for start in range(0, N, rows):
            end = min(start + rows, N)
            n = end - start
            xb = cx[start:end]  # (n, C)
            low = None if low_buf is None else low_buf[:n]
            logits = _block_logits(xb, cw, cb, logits_buf[:n], low)  # (n, V) float32
            tb = safe_target[start:end].unsqueeze(1)  # (n, 1)
            if lse_all is not None:
                target_logits = logits.gather(1, tb)  # (n, 1), before the logits are overwritten
            # in place: each row's max and sum are taken before the row is written (tested in
            # tests/test_fused_cross_entropy.py against an out-of-place log_softmax)
            logp = torch.log_softmax(logits, dim=1, out=logits)  # (n, V)
            picked = logp.gather(1, tb)  # (n, 1)
            picked_all[start:end] = picked.squeeze(1)
            if not grad_now:
                if lse_all is not None:  # log-normaliser of every row, for backward
                    lse_all[start:end] = (target_logits - picked).squeeze(1)
                continue
            # d loss_sum / d logits = softmax - onehot. Ignored rows get it too (their target is
            # 0 here), but their x rows are zero for grad_w and their grad_x rows are zeroed in
            # backward: they contribute nothing, without another pass over the (n, V) block.
            dlogits = logp.exp_()  # (n, V), in place of the log-probabilities
            dlogits.scatter_add_(1, tb, minus_one[:n])
            dl = dlogits.to(mm_dtype) if low is None else low.copy_(dlogits)  # (n, V) in mm_dtype
            if grad_x is not None:
                torch.mm(dl, cw, out=grad_x[start:end])  # (n, C)
            if grad_w is not None:
                _accumulate(grad_w, dl.t(), x_masked[start:end], first=start == 0)  # (V, C)
            if grad_b is not None:
                _accumulate(grad_b.unsqueeze(0), valid_mm[start:end].t(), dl, first=start == 0)  # (1, V)
        losses = torch.where(valid, -picked_all, torch.zeros_like(picked_all))  # (N,)
        ctx.reduction = reduction
        ctx.grad_now = grad_now
        ctx.block_elements = block_elements
        ctx.has_bias = bias is not None
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        if grad_now:
            # kept as attributes, not saved tensors: backward scales them in place and hands
            # them over (no second (V, C) allocation); a second backward finds them gone
            ctx.grads = (grad_x, grad_w, grad_b, valid_mm)
        elif any(ctx.needs_input_grad[:3]):
            ctx.save_for_backward(x, weight, bias, safe_target, valid, lse_all)
        return losses.sum() if reduction == "sum" else losses

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        if ctx.grad_now:
            grads = getattr(ctx, "grads", None)
            if grads is None:
                raise RuntimeError("fused_linear_cross_entropy (reduction='sum'): backward ran twice "
                                   "through the same graph (retain_graph=True); its gradients are "
                                   "made in forward and handed over once")
            del ctx.grads
            grad_x, grad_w, grad_b, valid_mm = grads
            g = grad_out.float()
            gx = gw = gb = None
            if grad_x is not None:  # the incoming scale and the ignored rows' zeros in one pass
                gx = grad_x.mul_(valid_mm * g.to(valid_mm.dtype)).to(x_dtype)
            if grad_w is not None:
                gw = grad_w.mul_(g).to(w_dtype)
            if grad_b is not None:
                gb = grad_b.mul_(g).to(b_dtype)
            return gx, gw, gb, None, None, None, None, None, None
        x, weight, bias, safe_target, valid, lse_all = ctx.saved_tensors
        dtype = ctx.compute_dtype
        mm_dtype = x.dtype if dtype is None else dtype
        acc_dtype = torch.promote_types(mm_dtype, torch.float32)
        cx, cw = x.to(mm_dtype), _cast(weight, mm_dtype)
        cb = None if bias is None else _cast(bias, mm_dtype)
        N, C = x.shape
        V = weight.size(0)
        g = grad_out.float().expand(N) if grad_out.dim() == 0 else grad_out.float()  # (N,)
        g = torch.where(valid, g, torch.zeros_like(g))
        rows = block_rows(N, V, ctx.block_elements, C)
        grad_x = torch.empty((N, C), dtype=mm_dtype, device=x.device)  # every row written
        grad_w = torch.empty((V, C), dtype=acc_dtype, device=x.device)  # first block sets it
        grad_b = torch.empty(V, dtype=acc_dtype, device=x.device) if bias is not None else None
        logits_buf = torch.empty((rows, V), dtype=torch.float32, device=x.device)
        low_buf = _narrow_block(rows, V, mm_dtype, x.device)
        for start in range(0, N, rows):
            end = min(start + rows, N)
            xb = cx[start:end]  # (n, C)
            low = None if low_buf is None else low_buf[: end - start]
            logits = _block_logits(xb, cw, cb, logits_buf[: end - start], low)  # (n, V)
            gb_rows = g[start:end].unsqueeze(1)  # (n, 1)
            dlogits = logits.sub_(lse_all[start:end].unsqueeze(1)).exp_().mul_(gb_rows)  # (n, V)
            dlogits.scatter_add_(1, safe_target[start:end].unsqueeze(1), -gb_rows)
            dl = dlogits.to(mm_dtype) if low is None else low.copy_(dlogits)  # (n, V) in mm_dtype
            torch.mm(dl, cw, out=grad_x[start:end])
            _accumulate(grad_w, dl.t(), xb, first=start == 0)  # (V, C)
            if grad_b is not None:
                ones = torch.ones((1, end - start), dtype=mm_dtype, device=x.device)
                _accumulate(grad_b.unsqueeze(0), ones, dl, first=start == 0)  # (1, V)
        gb = grad_b.to(b_dtype) if grad_b is not None else None
        return grad_x.to(x_dtype), grad_w.to(w_dtype), gb, None, None, None, None, None, None


#: logits per (rows x vocabulary-slice) tile when scoring without gradients: about 2 MiB, so a
#: tile stays in the cache between its matmul and its logsumexp
SCORE_TILE_ELEMENTS = 2**19
#: rows scored per pass over the projection (each pass reads all of it once)
SCORE_ROWS = 2048
#: up to this many logits in all (16 MiB), scoring computes them at once: the slices' fixed
#: costs do not pay off (measured 0.6-0.9x the plain computation at 64 x 45k or 2048 x 1.4k)
SCORE_PLAIN_ELEMENTS = 2**22


def score_vocab_slice(rows: int) -> int:
    """Vocabulary rows per slice when :func:`linear_target_log_probs` scores ``rows`` rows at
    once: ``SCORE_TILE_ELEMENTS // rows`` as a power of two, between 128 and 2048."""
    want = SCORE_TILE_ELEMENTS // max(rows, 1)
    return min(2048, max(128, 1 << max(want, 1).bit_length() - 1))


@torch.no_grad()
def linear_target_log_probs(x: Tensor, weight: Tensor, target: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """log softmax(x @ weight.T + bias)[target] for every row, without gradients: (N,) float32.

    Equals ``F.log_softmax(F.linear(x, weight, bias).float(), -1).gather(1, target[:, None])``
    within float rounding, but never writes the (N, V) logits: the vocabulary is cut in slices
    (:func:`score_vocab_slice`), each slice's (rows, slice) logits go from the matmul to their
    logsumexp while still in the cache, and the slices' logsumexps are combined at the end. The
    target's logit is its own dot product. Up to ``SCORE_PLAIN_ELEMENTS`` logits in all, they
    are computed at once (the plain computation), which is faster there. Measured on 2 CPU cores (V = 45,008, 2048 rows): 2x
    the plain computation's speed at C = 128, 1.25x at C = 512 (``benchmarks/bench_fused_loss.py
    --score``). Under autocast the matmuls run in the autocast dtype and the target's logit is
    rounded to it as well, so both sides of the difference see the same rounding.

    Args:
        x: (N, C) features. weight: (V, C). target: (N,) ids in [0, V). bias: optional (V,).
    """
    if x.dim() != 2 or weight.dim() != 2 or x.size(1) != weight.size(1) or target.shape != x.shape[:1]:
        raise ValueError(f"linear_target_log_probs needs x (N, C), weight (V, C) and target (N,); got "
                         f"x {tuple(x.shape)}, weight {tuple(weight.shape)}, target {tuple(target.shape)}")
    dtype = _compute_dtype(x) or x.dtype
    V = weight.size(0)
    if x.size(0) * V <= SCORE_PLAIN_ELEMENTS:
        logits = F.linear(x, weight, bias).float()
        return torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    out = torch.empty(x.size(0), dtype=torch.float32, device=x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        cx, cw = x.to(dtype), weight.to(dtype)
        cb = None if bias is None else bias.to(dtype)
        for start in range(0, x.size(0), SCORE_ROWS):
            xb = cx[start:start + SCORE_ROWS]  # (n, C)
            tb = target[start:start + SCORE_ROWS]  # (n,)
            width = score_vocab_slice(xb.size(0))
            lse = torch.empty((xb.size(0), -(-V // width)), dtype=torch.float32, device=x.device)
            for j, v0 in enumerate(range(0, V, width)):
                w = cw[v0:v0 + width]
                logits = torch.mm(xb, w.t()) if cb is None else torch.addmm(cb[v0:v0 + width], xb, w.t())
                torch.logsumexp(logits.float(), dim=1, out=lse[:, j])
            picked = (xb * cw.index_select(0, tb)).sum(1, dtype=torch.float32)  # (n,)
            if cb is not None:
                picked += cb.index_select(0, tb).float()
            out[start:start + xb.size(0)] = picked.to(dtype).float() - torch.logsumexp(lse, dim=1)
    return out


def fused_linear_cross_entropy(x: Tensor, weight: Tensor, target: Tensor, bias: Optional[Tensor] = None,
                               ignore_index: int = -100, reduction: str = "sum",
                               block_elements: Optional[int] = None) -> Tensor:
    """Cross entropy of ``x @ weight.T (+ bias)`` against ``target``, block by block.

    Args:
        x: (N, C) features (the decoder's last hidden states, flattened).
        weight: (V, C) output projection (the embedding matrix when tied).
        target: (N,) target ids; positions equal to ``ignore_index`` count 0 and get no gradient.
        bias: optional (V,) output bias.
        ignore_index: the target id to skip (the padding index).
        reduction: ``"sum"`` (a scalar) or ``"none"`` (the (N,) per-token losses, 0 where ignored).
        block_elements: how many logits one block holds (``block_elements // V`` rows);
            ``None`` (the default): :func:`block_rows`' rule, from V and C, and the plain
            computation where the fused one does not win (:func:`takes_plain_path`).

    Returns:
        float32 loss in nats: a scalar for ``"sum"``, (N,) for ``"none"``.

    Raises:
        ValueError: for another ``reduction`` or mismatched shapes.
    """
    if reduction not in ("sum", "none"):
        raise ValueError(f"reduction={reduction!r}: fused_linear_cross_entropy supports 'sum' or 'none'")
    if x.dim() != 2 or weight.dim() != 2 or x.size(1) != weight.size(1) or target.shape != x.shape[:1]:
        raise ValueError(f"fused_linear_cross_entropy needs x (N, C), weight (V, C) and target (N,); got "
                         f"x {tuple(x.shape)}, weight {tuple(weight.shape)}, target {tuple(target.shape)}")
    if block_elements is None and takes_plain_path(x.size(0), weight.size(0), x.size(1)):
        return F.cross_entropy(F.linear(x, weight, bias).float(), target, ignore_index=ignore_index,
                               reduction=reduction)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    if not needs_grad and block_elements is None:  # validation, scoring: slices of the vocabulary
        valid = target.ne(ignore_index)
        logp = linear_target_log_probs(x, weight, torch.where(valid, target, torch.zeros_like(target)), bias)
        losses = torch.where(valid, -logp, torch.zeros_like(logp))
        return losses.sum() if reduction == "sum" else losses
    grad_now = needs_grad and reduction == "sum"
    dtype = _compute_dtype(x)
    # the matmuls run with explicit dtypes: no autocast inside (backward may run outside it)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _FusedLinearCrossEntropy.apply(x, weight, bias, target, ignore_index, reduction,
                                              block_elements, grad_now, dtype)


__all__ = ["DEFAULT_BLOCK_ELEMENTS", "MAX_BLOCK_ELEMENTS", "MIN_BLOCK_ROWS", "PLAIN_VOCAB_PER_HIDDEN",
           "SCORE_PLAIN_ELEMENTS", "SCORE_ROWS", "SCORE_TILE_ELEMENTS", "TARGET_BLOCK_ELEMENTS", "block_rows", "fused_linear_cross_entropy",
           "linear_target_log_probs", "score_vocab_slice", "takes_plain_path", "weight_casts_per_update"]
