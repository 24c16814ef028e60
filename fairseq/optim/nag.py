"""``--optimizer nag``: Nesterov accelerated gradient with an lr-aware momentum buffer."""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch
from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.optim import register_optimizer
from fairseq.optim.fairseq_optimizer import check_non_negative
from fairseq.optim.fairseq_optimizer import FairseqOptimizer, first_lr


@dataclass
class FairseqNAGConfig(FairseqDataclass):
    momentum: float = field(default=0.99, metadata={"help": "Nesterov momentum factor", "min": 0})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay (scaled by lr)",
                                                           "min": 0})
    lr: List[float] = II("optimization.lr")


NAGConfig = FairseqNAGConfig  # short alias


class NAG(torch.optim.Optimizer):
    r"""Nesterov accelerated gradient whose momentum buffer already includes the lr.

    For each parameter ``p`` with gradient ``g``, momentum ``m``, weight decay ``wd``, the
    current lr ``lr`` and the lr of the previous step ``lr_old`` (kept in the param group as
    ``"lr_old"``), with the buffer ``b`` starting at zero::

        c  = lr / lr_old                  # rescales b, which holds lr-scaled steps
        p <- p * (1 - lr * wd)            # decoupled weight decay
        p <- p + m^2 c b - (1 + m) lr g   # the Nesterov look-ahead step
        b <- m c b - lr g
        lr_old <- lr

    With a constant lr (``c = 1``) this is the usual Nesterov update written for the
    look-ahead point: with ``v = b``, ``v <- m v - lr g`` and ``p <- p + m v_new - lr g``.
    When ``lr_old`` is 0 the buffer is 0 too (every term of it was scaled by 0), so ``c = 1``.

    Args:
        params: parameters or param groups.
        lr: learning rate (>= 0).
        momentum: momentum factor ``m`` (>= 0).
        weight_decay: decoupled weight decay ``wd`` (>= 0).
        foreach: update all parameters of a group with multi-tensor ops (default) or one by one.

    Raises:
        ValueError: for a negative lr, momentum or weight decay.
    """

    def __init__(self, params: Union[Iterable[torch.Tensor], Iterable[Dict[str, Any]]], lr: float,
                 momentum: float = 0.0, weight_decay: float = 0.0, foreach: bool = True):
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not value >= 0.0:
                raise ValueError(f"NAG: {name}={value} must be >= 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        super().add_param_group(param_group)
        # the first step has no previous lr; its buffer is zero, so any lr_old will do
        self.param_groups[-1].setdefault("lr_old", self.param_groups[-1]["lr"])

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("NAG does not support sparse gradients; use dense embeddings "
                                       "or optimizer=adam")
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                buffers.append(state["momentum_buffer"])
            lr, lr_old = float(group["lr"]), float(group["lr_old"])
            if params:
                update = _foreach_update if group["foreach"] else _loop_update
                update(params, grads, buffers, lr=lr, lr_correct=lr / lr_old if lr_old > 0 else 1.0,
                       momentum=float(group["momentum"]), weight_decay=float(group["weight_decay"]))
            group["lr_old"] = lr
        return loss


def _foreach_update(params: List[torch.Tensor], grads: List[torch.Tensor], buffers: List[torch.Tensor],
                    *, lr: float, lr_correct: float, momentum: float, weight_decay: float) -> None:
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_add_(params, buffers, alpha=momentum * momentum * lr_correct)
    torch._foreach_add_(params, grads, alpha=-(1.0 + momentum) * lr)
    torch._foreach_mul_(buffers, momentum * lr_correct)
    torch._foreach_add_(buffers, grads, alpha=-lr)


def _loop_update(params: List[torch.Tensor], grads: List[torch.Tensor], buffers: List[torch.Tensor],
                 *, lr: float, lr_correct: float, momentum: float, weight_decay: float) -> None:
    for p, g, b in zip(params, grads, buffers):
        if weight_decay != 0.0:
            p.mul_(1.0 - lr * weight_decay)
        p.add_(b, alpha=momentum * momentum * lr_correct)
        p.add_(g, alpha=-(1.0 + momentum) * lr)
        b.mul_(momentum * lr_correct).add_(g, alpha=-lr)


@register_optimizer("nag", dataclass=FairseqNAGConfig)
class FairseqNAG(FairseqOptimizer):
    """Nesterov accelerated gradient (:class:`NAG`); its momentum follows lr changes."""

    def __init__(self, cfg: Any, params: List[torch.nn.Parameter]):
        super().__init__(cfg)
        check_non_negative(cfg, "momentum", "weight_decay")
        self._optimizer = NAG(list(params), lr=first_lr(cfg.lr), momentum=float(cfg.momentum),
                              weight_decay=float(cfg.weight_decay))
