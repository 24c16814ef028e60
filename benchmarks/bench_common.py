"""Pieces the benchmark scripts share: the demo data-bin, the model FLOPs count, the matmul peaks
of both precisions and the machine's load.

torch is imported inside the functions that need it, so that a script can take the FLOPs count
or the load from an interpreter without torch (``vs_fairseq.py`` may run from one)."""
import os
import time
from typing import TYPE_CHECKING, Dict, Iterable, Optional

if TYPE_CHECKING:
    import torch


def demo_data(directory: str, workers: int = 2) -> str:
    """Write the demo corpus and preprocess it under ``directory``; returns the data-bin path."""
    from fairseq.data.demo_corpus import write_demo_corpus
    from fairseq_cli import preprocess

    text, dest = os.path.join(directory, "text"), os.path.join(directory, "data-bin")
    write_demo_corpus(text)
    preprocess.cli_main(["--only-source", "--trainpref", f"{text}/train.txt",
                         "--validpref", f"{text}/valid.txt", "--destdir", dest, "--workers", str(workers)])
    return dest


def flops_per_token(layers: int, dim: int, ffn: int, context: int, vocab: int, training: bool = True,
                    kv_dim: Optional[int] = None, gated: bool = False) -> float:
    """Model FLOPs per token of a decoder-only transformer (the convention is explained in bench_mfu.py).

    Args:
        layers, dim, ffn: L, d, f. context: T, the tokens each position attends over.
        vocab: V, the rows of the output layer. training: forward + backward (x3), else forward.
        kv_dim: the width of the key and value projections (grouped-query attention: kv heads x
            head dim); default ``dim``. gated: a gated feed-forward (SwiGLU: three ``d x f``
            matrices instead of two).

    Returns:
        ``6*N + 12*L*T*d`` (training) or ``2*N + 4*L*T*d`` (forward), with
        ``N = L*(4*d*d + 2*d*f) + d*V`` (plain) or ``L*(2*d*d + 2*d*kv + 3*d*f) + d*V`` (gated, GQA).
    """
    kv = dim if kv_dim is None else kv_dim
    attention = 2 * dim * dim + 2 * dim * kv
    n = layers * (attention + (3 if gated else 2) * dim * ffn) + dim * vocab
    forward = 2 * n + 4 * layers * context * dim
    return 3.0 * forward if training else float(forward)


def sync(device: "torch.device") -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def matmul_peak(device: Optional["torch.device"] = None, dtype: Optional["torch.dtype"] = None,
                size: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of ``repeats`` timed ``size x size`` matrix products (after a warm-up),
    on ``device`` (default: the CPU), in ``dtype`` (default float32)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    device = device if device is not None else torch.device("cpu")
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    inner = 1 if device.type == "cpu" else 20
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2.0 * size ** 3 / best


PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}


def matmul_peaks(precisions: Iterable[str] = ("fp32", "bf16"), size: int = 2048, repeats: int = 5,
                 device: Optional["torch.device"] = None, probe: int = 512) -> Dict[str, float]:
    """``{precision: GFLOP/s}``: :func:`matmul_peak` of each of ``precisions`` (``fp32``,
    ``bf16``), the peak an MFU of that precision is measured against.

    On a CPU, bf16 is first probed at ``probe``-cubed against fp32 at the same size: where it is
    under half the fp32 rate (no bf16 matmul support: tens of times slower, and one 2048-cubed
    product would take minutes), the probe's figure is the bf16 peak returned."""
    import torch

    on_cpu = device is None or torch.device(device).type == "cpu"
    out: Dict[str, float] = {}
    for p in precisions:
        dtype = getattr(torch, PRECISIONS[p])
        if on_cpu and p != "fp32" and probe < size:
            quick = matmul_peak(device, dtype, probe, 3)
            if quick < 0.5 * matmul_peak(device, torch.float32, probe, 3):
                out[p] = quick / 1e9
                continue
        out[p] = matmul_peak(device, dtype, size, repeats) / 1e9
    return out


def gflops_text(value: float) -> str:
    """A GFLOP/s figure for a report: whole numbers, two significant digits below 10."""
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def slow_bf16_note(peaks: Dict[str, float]) -> Optional[str]:
    """One line when the bf16 matmul peak is below the fp32 one (a CPU without bf16 matmul
    support, where bf16 would be slower), else None."""
    if "bf16" in peaks and "fp32" in peaks and peaks["bf16"] < peaks["fp32"]:
        return (f"this CPU has no fast bf16 matmul (bf16 {gflops_text(peaks['bf16'])} < fp32 "
                f"{gflops_text(peaks['fp32'])} GFLOP/s): bf16 will be slower than fp32 here")
    return None


def load_text() -> str:
    """The load average (1, 5, 15 minutes) as ``"a b c"``; ``"?"`` where the OS has none."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
