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
``F.linear`` would), the softmax and the loss in float32, as in the plain path.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

#: about how many logits one block holds (rows x vocabulary): 2**21 floats = 8 MiB
DEFAULT_BLOCK_ELEMENTS = 2**21


def block_rows(num_tokens: int, vocab_size: int, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> int:
    """Rows of one block: ``block_elements // vocab_size``, at least 1, at most ``num_tokens``."""
    return max(1, min(num_tokens, block_elements // max(vocab_size, 1)))


def _compute_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The autocast dtype matmuls on ``x``'s device run in, or None when autocast is off."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _block_logits(x: Tensor, weight: Tensor, bias: Optional[Tensor], out: Tensor) -> Tensor:
    """(n, C) x (V, C) -> (n, V) float32 logits of one block, written into ``out`` (n, V)."""
    if x.dtype == out.dtype:
        if bias is None:
            return torch.mm(x, weight.t(), out=out)
        return torch.addmm(bias, x, weight.t(), out=out)
    logits = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())  # (n, V)
    return out.copy_(logits)


def _accumulate(acc: Tensor, a: Tensor, b: Tensor, first: bool) -> None:
    """``acc = a @ b`` on the first block, ``acc += a @ b`` after; ``acc`` may be wider than a, b."""
    if acc.dtype == a.dtype:
        torch.mm(a, b, out=acc) if first else acc.addmm_(a, b)
    else:
        acc.copy_(a @ b) if first else acc.add_(a @ b)


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
        cx, cw = x.to(mm_dtype), weight.to(mm_dtype)
        cb = None if bias is None else bias.to(mm_dtype)
        valid = target.ne(ignore_index)  # (N,)
        safe_target = torch.where(valid, target, torch.zeros_like(target))  # (N,)
        rows = block_rows(N, V, block_elements)
        losses = torch.empty(N, dtype=torch.float32, device=x.device)  # (N,), every row written
        lse_all = None if grad_now else torch.empty(N, dtype=torch.float32, device=x.device)
        grad_x = grad_w = grad_b = None
        if grad_now:
            grad_x = torch.empty((N, C), dtype=mm_dtype, device=x.device)  # every row written
            grad_w = torch.empty((V, C), dtype=acc_dtype, device=x.device)  # first block sets it
            grad_b = torch.empty(V, dtype=acc_dtype, device=x.device) if bias is not None else None
        # two (rows, V) float32 blocks, reused by every block: fresh large allocations would
        # cost page faults on every block
        logits_buf = torch.empty((rows, V), dtype=torch.float32, device=x.device)
        logp_buf = torch.empty((rows, V), dtype=torch.float32, device=x.device)
        for start in range(0, N, rows):
            end = min(start + rows, N)
            xb = cx[start:end]  # (n, C)
            logits = _block_logits(xb, cw, cb, logits_buf[: end - start])  # (n, V) float32
            logp = torch.log_softmax(logits, dim=1, out=logp_buf[: end - start])  # (n, V)
            tb = safe_target[start:end].unsqueeze(1)  # (n, 1)
            vb = valid[start:end].unsqueeze(1)  # (n, 1)
            picked = logp.gather(1, tb)  # (n, 1)
            losses[start:end] = torch.where(vb, -picked, torch.zeros_like(picked)).squeeze(1)
            if not grad_now:
                if lse_all is not None:  # log-normaliser of every row, for backward
                    lse_all[start:end] = (logits.gather(1, tb) - picked).squeeze(1)
                continue
            # d loss_sum / d logits = softmax - onehot. Ignored rows keep their softmax here, but
            # their x rows are zeroed for grad_w and their grad_x rows are zeroed after: they
            # contribute nothing, without another pass over the (n, V) block.
            dlogits = logp.exp_()  # (n, V), in place of the log-probabilities
            dlogits.scatter_add_(1, tb, -vb.to(dlogits.dtype))
            dl = dlogits.to(mm_dtype)  # (n, V); no copy in float32
            vf = vb.to(mm_dtype)  # (n, 1)
            gxb = grad_x[start:end]  # (n, C)
            torch.mm(dl, cw, out=gxb)
            gxb.mul_(vf)
            xm = xb * vf  # (n, C)
            _accumulate(grad_w, dl.t(), xm, first=start == 0)  # (V, C)
            if grad_b is not None:
                _accumulate(grad_b.unsqueeze(0), vf.t(), dl, first=start == 0)  # (1, V)
        ctx.reduction = reduction
        ctx.grad_now = grad_now
        ctx.block_elements = block_elements
        ctx.has_bias = bias is not None
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        if grad_now:
            ctx.save_for_backward(grad_x, grad_w, grad_b)
        elif any(ctx.needs_input_grad[:3]):
            ctx.save_for_backward(x, weight, bias, safe_target, valid, lse_all)
        return losses.sum() if reduction == "sum" else losses

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        if ctx.grad_now:
            grad_x, grad_w, grad_b = ctx.saved_tensors
            g = grad_out.float()
            gx = (grad_x * g.to(grad_x.dtype)).to(x_dtype)
            gw = (grad_w * g).to(w_dtype)
            gb = (grad_b * g).to(b_dtype) if grad_b is not None else None
            return gx, gw, gb, None, None, None, None, None, None
        x, weight, bias, safe_target, valid, lse_all = ctx.saved_tensors
        dtype = ctx.compute_dtype
        mm_dtype = x.dtype if dtype is None else dtype
        acc_dtype = torch.promote_types(mm_dtype, torch.float32)
        cx, cw = x.to(mm_dtype), weight.to(mm_dtype)
        cb = None if bias is None else bias.to(mm_dtype)
        N, C = x.shape
        V = weight.size(0)
        g = grad_out.float().expand(N) if grad_out.dim() == 0 else grad_out.float()  # (N,)
        g = torch.where(valid, g, torch.zeros_like(g))
        rows = block_rows(N, V, ctx.block_elements)
        grad_x = torch.empty((N, C), dtype=mm_dtype, device=x.device)  # every row written
        grad_w = torch.empty((V, C), dtype=acc_dtype, device=x.device)  # first block sets it
        grad_b = torch.empty(V, dtype=acc_dtype, device=x.device) if bias is not None else None
        logits_buf = torch.empty((rows, V), dtype=torch.float32, device=x.device)
        for start in range(0, N, rows):
            end = min(start + rows, N)
            xb = cx[start:end]  # (n, C)
            logits = _block_logits(xb, cw, cb, logits_buf[: end - start])  # (n, V)
            gb_rows = g[start:end].unsqueeze(1)  # (n, 1)
            dlogits = logits.sub_(lse_all[start:end].unsqueeze(1)).exp_().mul_(gb_rows)  # (n, V)
            dlogits.scatter_add_(1, safe_target[start:end].unsqueeze(1), -gb_rows)
            dl = dlogits.to(mm_dtype)  # (n, V)
            torch.mm(dl, cw, out=grad_x[start:end])
            _accumulate(grad_w, dl.t(), xb, first=start == 0)  # (V, C)
            if grad_b is not None:
                ones = torch.ones((1, end - start), dtype=mm_dtype, device=x.device)
                _accumulate(grad_b.unsqueeze(0), ones, dl, first=start == 0)  # (1, V)
        gb = grad_b.to(b_dtype) if grad_b is not None else None
        return grad_x.to(x_dtype), grad_w.to(w_dtype), gb, None, None, None, None, None, None


def fused_linear_cross_entropy(x: Tensor, weight: Tensor, target: Tensor, bias: Optional[Tensor] = None,
                               ignore_index: int = -100, reduction: str = "sum",
                               block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> Tensor:
    """Cross entropy of ``x @ weight.T (+ bias)`` against ``target``, block by block.

    Args:
        x: (N, C) features (the decoder's last hidden states, flattened).
        weight: (V, C) output projection (the embedding matrix when tied).
        target: (N,) target ids; positions equal to ``ignore_index`` count 0 and get no gradient.
        bias: optional (V,) output bias.
        ignore_index: the target id to skip (the padding index).
        reduction: ``"sum"`` (a scalar) or ``"none"`` (the (N,) per-token losses, 0 where ignored).
        block_elements: about how many logits one block holds; rows per block are
            ``block_elements // V``.

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
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    grad_now = needs_grad and reduction == "sum"
    dtype = _compute_dtype(x)
    # the matmuls run with explicit dtypes: no autocast inside (backward may run outside it)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _FusedLinearCrossEntropy.apply(x, weight, bias, target, ignore_index, reduction,
                                              block_elements, grad_now, dtype)


__all__ = ["DEFAULT_BLOCK_ELEMENTS", "block_rows", "fused_linear_cross_entropy"]
