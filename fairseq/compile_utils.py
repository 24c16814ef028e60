"""``common.compile=true``: the training forward of a model through ``torch.compile``.

:func:`compile_training_forward` replaces the model's ``forward`` on the instance (the module,
its class, its parameters and so its ``state_dict`` keys stay as they are: checkpoints hold the
plain names, no ``_orig_mod.`` prefix) by a :class:`TrainingForward`, which

* runs the compiled forward only while the model is in training mode with gradients enabled;
  validation, ``eval_lm``, generation and incremental decoding (eval mode, ``no_grad``) run the
  eager forward, so they neither pay for another compilation nor depend on the compiler;
* falls back to the eager forward, with one warning, when ``torch.compile`` is not supported on
  this platform or the compiler fails (no C++ compiler, an unsupported op, a backend error): the
  first failing call is re-run eagerly, and every later call is eager. When the eager re-run
  fails too, its error is raised: the fault is in the model or the batch, not the compiler.

Hooks (``DistributedDataParallel``, FSDP2) stay outside the compiled region, which is the
module's own ``forward``.

Environment:
    ``FAIRSEQ_COMPILE_BACKEND``: the ``torch.compile`` backend (default ``inductor``; e.g.
    ``aot_eager`` to check a problem without code generation, or the name of a backend
    registered with ``torch._dynamo.register_backend``).
"""
import logging
import os
import sys
import warnings
from typing import Any, Callable, Optional

import torch

logger = logging.getLogger(__name__)

BACKEND_ENV = "FAIRSEQ_COMPILE_BACKEND"
DEFAULT_BACKEND = "inductor"


def compile_unsupported_reason() -> Optional[str]:
    """Why ``torch.compile`` cannot run here, or ``None`` when it can (as far as can be told
    before compiling: a missing C++ compiler only shows at the first compilation)."""
    try:
        import torch._dynamo
    except Exception as e:  # noqa: BLE001 - any import failure means no compiler
        return f"torch._dynamo cannot be imported ({type(e).__name__}: {e})"
    if not torch._dynamo.is_dynamo_supported():
        return f"torch.compile does not support this platform or Python version (Python {sys.version.split()[0]})"
    return None


def describe_error(error: BaseException) -> str:
    """``"Type: first line"`` of ``error`` and of the error it wraps, innermost last (dynamo's
    ``BackendCompilerFailed`` wraps the backend's own error)."""
    parts, seen = [], set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        lines = [line.strip() for line in str(current).splitlines() if line.strip()]
        parts.append(f"{type(current).__name__}: {lines[0][:200] if lines else ''}".rstrip(": "))
        current = getattr(current, "inner_exception", None) or current.__cause__
    return " <- ".join(parts)


class TrainingForward:
    """A model's forward: compiled while training with gradients, eager otherwise or after a
    compiler failure.

    Args:
        module: the model whose ``forward`` this replaces.
        eager: its original (bound) forward.
        compiled: the ``torch.compile`` of ``eager``; ``None`` runs everything eagerly.
        backend: the backend's name, for messages.
    """

    def __init__(self, module: torch.nn.Module, eager: Callable[..., Any],
                 compiled: Optional[Callable[..., Any]], backend: str):
        self.module = module
        self.eager = eager
        self.compiled = compiled
        self.backend = backend

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None or not (self.module.training and torch.is_grad_enabled()):
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as compile_error:  # noqa: BLE001 - decided by the eager re-run below
            out = self.eager(*args, **kwargs)  # raises when the fault is not the compiler's
            self.compiled = None
            message = (f"common.compile=true: torch.compile (backend {self.backend!r}) failed on the "
                       f"training forward ({describe_error(compile_error)}); training continues "
                       "in eager mode, with the same results and without the compiled speed-up. "
                       "Set common.compile=false (drop --compile) to skip the attempt.")
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)
            return out


def compile_training_forward(module: torch.nn.Module, backend: Optional[str] = None) -> bool:
    """Compile ``module``'s training forward in place (see the module docstring).

    Args:
        module: the model (before any data-parallel wrapper).
        backend: the ``torch.compile`` backend; default: ``$FAIRSEQ_COMPILE_BACKEND``, else
            ``inductor``.

    Returns:
        True when the forward will be compiled, False when ``torch.compile`` is unavailable
        here (a warning says why; the module then runs eagerly).

    Raises:
        ValueError: ``module`` already has a replaced forward.
    """
    if isinstance(module.__dict__.get("forward"), TrainingForward):
        raise ValueError("common.compile: the model's forward is already compiled; compile it once")
    backend = backend or os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND
    eager = module.forward
    reason = compile_unsupported_reason()
    compiled = None
    if reason is not None:
        message = (f"common.compile=true: {reason}; training runs in eager mode "
                   "(set common.compile=false to silence this)")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        logger.warning(message)
    else:
        compiled = torch.compile(eager, backend=backend)
        logger.info("common.compile=true: the training forward is compiled with torch.compile "
                    "(backend %s) at its first call", backend)
    module.forward = TrainingForward(module, eager, compiled, backend)
    return compiled is not None


__all__ = ["BACKEND_ENV", "DEFAULT_BACKEND", "TrainingForward", "compile_training_forward",
           "compile_unsupported_reason", "describe_error"]
