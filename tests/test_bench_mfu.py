"""benchmarks/bench_mfu.py counts the weights that take part in matrix products as a real
transformer_lm has them (the MFU figures in docs/benchmarks.md rest on this count)."""
import sys

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


def test_flops_per_token_counts_the_model_matmul_weights():
    from bench_mfu import flops_per_token
    from bench_generate import build

    layers, dim, context, vocab = 2, 64, 32, 1000  # bench_generate builds ffn = 4 * dim, tied output
    model, d = build(vocab, layers, dim, context)
    # every 2-D weight inside the layers is a matmul weight (q, k, v, out, fc1, fc2)
    in_layers = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and p.dim() == 2)
    n = in_layers + model.decoder.output_projection.weight.numel()  # tied: counted as a product
    assert flops_per_token(layers, dim, 4 * dim, context, len(d)) == 6 * n + 12 * layers * context * dim
    assert flops_per_token(layers, dim, 4 * dim, context, len(d), training=False) == 2 * n + 4 * layers * context * dim
    # and the forward count is what a profiler-free count of the products gives for one token
    assert in_layers == layers * (4 * dim * dim + 2 * dim * 4 * dim)
    assert torch.equal(model.decoder.output_projection.weight, model.decoder.embed_tokens.weight)
