"""Pieces the benchmark scripts share: the demo data-bin, the model FLOPs count and the matmul peak."""
import os
import time
from typing import Optional

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


def flops_per_token(layers: int, dim: int, ffn: int, context: int, vocab: int, training: bool = True) -> float:
    """Model FLOPs per token of a decoder-only transformer (the convention is explained in bench_mfu.py).

    Args:
        layers, dim, ffn: L, d, f. context: T, the tokens each position attends over.
        vocab: V, the rows of the output layer. training: forward + backward (x3), else forward.

    Returns:
        ``6*N + 12*L*T*d`` (training) or ``2*N + 4*L*T*d`` (forward), with
        ``N = L*(4*d*d + 2*d*f) + d*V``.
    """
    n = layers * (4 * dim * dim + 2 * dim * ffn) + dim * vocab
    forward = 2 * n + 4 * layers * context * dim
    return 3.0 * forward if training else float(forward)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32,
                size: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of ``repeats`` timed ``size x size`` matrix products (after a warm-up),
    on ``device`` (default: the CPU)."""
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
