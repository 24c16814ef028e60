"""Whether this machine computes bfloat16 matrix products in hardware, and the one-line notice
a ``common.bf16`` run prints when it does not.

On a CPU without bfloat16 instructions (no ``avx512_bf16`` or ``amx_bf16`` on x86, no ``bf16``
on Arm), PyTorch's bfloat16 matmuls take a generic fallback: measured on a 2-core AMD EPYC
(Zen 3, AVX2 only) with torch 2.13, a 1024^3 product ran at 0.5 GFLOP/s in bfloat16 against
46 GFLOP/s in float32, about 90x slower. A bf16 run there still computes correctly, only far
slower than float32, so it is said once, at the start, and the run goes on.

The check costs well under a millisecond (the first ``flags`` line of ``/proc/cpuinfo`` and,
where PyTorch has it, oneDNN's own device check) and is cached for the process.
"""
import functools
import logging
from typing import FrozenSet, Optional, Sequence

import torch

__all__ = ["bf16_matmul_supported", "cast_for_inference", "cpu_flags", "notice_if_bf16_is_slow",
           "slow_bf16_notice"]

logger = logging.getLogger(__name__)

#: CPU feature flags (``/proc/cpuinfo``) that mean bfloat16 dot products in hardware
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
_noticed = False


@functools.lru_cache(maxsize=1)
def cpu_flags() -> Optional[FrozenSet[str]]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (``flags`` on x86, ``Features``
    on Arm), or ``None`` where that file cannot be read (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:  # the first processor's line is enough: all cores share the ISA
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def _torch_cpu_check() -> Optional[bool]:
    """oneDNN's own answer to "does this CPU run bf16 kernels", or ``None`` when this build of
    PyTorch has no such check (a private op: absent or failing means unknown)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


@functools.lru_cache(maxsize=4)
def bf16_matmul_supported(device_type: str = "cpu") -> bool:
    """Whether bfloat16 matrix products on ``device_type`` run in hardware (so that bf16 is
    faster than float32). Unknown counts as supported: the notice is for a known slow case only.

    On a CPU: the ``/proc/cpuinfo`` flags decide when they can be read (oneDNN's check alone
    also says yes for AVX-512 without bf16 instructions, where it emulates them); otherwise
    PyTorch's oneDNN check. On CUDA: ``torch.cuda.is_bf16_supported()``.
    """
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return True
    flags = cpu_flags()
    torch_says = _torch_cpu_check()
    if flags is not None:
        return bool(flags & BF16_CPU_FLAGS) and torch_says is not False
    return torch_says is not False


def slow_bf16_notice(setting: str) -> str:
    """The one line a run asked for ``setting`` (e.g. ``common.bf16=true``) prints on a CPU
    without bfloat16 matmul instructions."""
    return (f"{setting}: this CPU has no bfloat16 matrix instructions (no avx512_bf16/amx_bf16 "
            "in /proc/cpuinfo), so bfloat16 matmuls take a slow fallback and this run will be "
            "many times slower than in float32; drop --bf16 (common.bf16=false) to run in "
            "float32")


def notice_if_bf16_is_slow(device_type: str, setting: str = "common.bf16=true") -> bool:
    """Log :func:`slow_bf16_notice` once per process when ``device_type`` lacks bf16 matmuls.

    Returns:
        True when the device lacks them (whether or not the line was printed by this call).
    """
    global _noticed
    if bf16_matmul_supported(device_type):
        return False
    if not _noticed:
        _noticed = True
        logger.warning(slow_bf16_notice(setting))
    return True


def cast_for_inference(models: Sequence[torch.nn.Module], bf16: bool, device: torch.device) -> None:
    """With ``bf16`` (``common.bf16`` of eval-lm and generation), hold every model's weights in
    bfloat16, once, instead of casting them at every product under autocast; the scores stay
    float32 (the log-softmax and log-sum-exp upcast the logits). A CPU without bfloat16
    matmuls gets :func:`slow_bf16_notice` first. Without ``bf16``, nothing changes."""
    if not bf16:
        return
    notice_if_bf16_is_slow(device.type, "common.bf16=true (--bf16)")
    for model in models:
        model.to(dtype=torch.bfloat16)
