#!/usr/bin/env python3
"""Activation memory of a training step with and without activation checkpointing.

For each variant (``plain``; ``checkpoint``: ``model.checkpoint_activations=true``;
``offload``: ``model.offload_activations=true``) the same ``transformer_lm`` is built from the
same seed and runs the same batch of the demo corpus through the real training path
(``task.train_step``: model + cross-entropy criterion, then ``loss.backward()``). Two figures:

* **held after forward**: memory allocated during the forward and still live when it returns,
  i.e. what is kept for backward (saved activations, the logits, the loss);
* **peak forward+backward**: the highest memory allocated above the level at the start of the
  step, from the start of the forward to the end of backward (it includes the parameter
  gradients, the same in every variant, and backward's temporaries).

How it is measured. On a CPU there is no ``torch.cuda.max_memory_allocated``; the PyTorch
profiler with ``profile_memory=True`` records every allocation and free of PyTorch's CPU
allocator (size and time). Replaying them in time order gives the allocated bytes at every
instant, relative to the start of the profile, and so the peak; this counts tensor storage only
(not the Python heap or allocator slack), exactly what checkpointing changes. On a GPU the script
uses ``torch.cuda.max_memory_allocated`` instead. Steps also alternate variant by variant for
a time per step (median), since checkpointing trades memory for a second forward.

    python benchmarks/bench_memory.py                       # demo shapes: 2 layers x 128
    python benchmarks/bench_memory.py --layers 8 --dim 256 --ffn 1024
    python benchmarks/bench_memory.py --data demo/data-bin --steps 5
    python benchmarks/bench_memory.py --set criterion.fused_output_loss=false   # with (B, T, V) logits
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402

from bench_common import demo_data  # noqa: E402

VARIANTS: Dict[str, List[str]] = {
    "plain": [],
    "checkpoint": ["model.checkpoint_activations=true"],
    "offload": ["model.offload_activations=true"],
}


def model_overrides(layers: int, dim: int, ffn: int, heads: int, tokens_per_sample: int,
                    max_tokens: int, dropout: float) -> List[str]:
    """Config overrides of a ``transformer_lm`` of the given shape on the demo task."""
    return [
        f"task.tokens_per_sample={tokens_per_sample}", "task.sample_break_mode=none",
        f"model.decoder_layers={layers}", f"model.decoder_embed_dim={dim}",
        f"model.decoder_input_dim={dim}", f"model.decoder_output_dim={dim}",
        f"model.decoder_ffn_embed_dim={ffn}", f"model.decoder_attention_heads={heads}",
        "model.share_decoder_input_output_embed=true", f"model.dropout={dropout}",
        f"dataset.max_tokens={max_tokens}", "optimizer=adam", "optimization.lr=[0.0005]",
        "common.log_interval=100",
    ]


def build_trainer(data: str, overrides: List[str]) -> Any:
    """A Trainer for ``overrides`` on ``data`` (model built from seed 1)."""
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config
    from fairseq.trainer import Trainer

    cfg = compose_config([f"task.data={data}"] + overrides)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    return Trainer(cfg, task, model, task.build_criterion(cfg.criterion))


def full_batches(trainer: Any, n: int) -> List[Dict[str, Any]]:
    """The first ``n`` batches with at least 90% of ``max_tokens`` tokens (equal work per step)."""
    cfg, task = trainer.cfg, trainer.task
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=cfg.dataset.max_tokens,
                                  max_positions=cfg.task.tokens_per_sample, seed=1).next_epoch_itr(shuffle=True)
    out = []
    for sample in itr:
        if sample and sample["ntokens"] >= 0.9 * cfg.dataset.max_tokens:
            out.append(sample)
        if len(out) == n:
            break
    return out


def cpu_allocated_profile(fn: Callable[[], Any]) -> Tuple[int, int]:
    """Run ``fn`` under the profiler; returns ``(peak, final)`` bytes allocated by PyTorch's CPU
    allocator above the level at the start (from its allocation and free records)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records: List[Tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            records.append((node.start_time_ns, node.extra_fields.alloc_size))  # < 0 for a free
        stack.extend(node.children)
    records.sort()
    level = peak = 0
    for _, size in records:
        level += size
        peak = max(peak, level)
    return peak, level


def clear_grads(trainer: Any) -> None:
    """Drop every parameter's gradient (so backward allocates them inside the measurement)."""
    for p in trainer.unwrapped_model.parameters():
        p.grad = None


def measure(trainer: Any, sample: Dict[str, Any]) -> Tuple[int, int]:
    """``(held after forward, peak forward+backward)`` in bytes for one training step's forward
    and backward on ``sample`` (gradients cleared before; no optimizer step)."""
    from fairseq.trainer import move_to_device

    sample = move_to_device(sample, trainer.device)
    model, criterion, task = trainer.model, trainer.criterion, trainer.task
    model.train()
    kept: Dict[str, Any] = {}

    def forward() -> None:
        kept["loss"] = task.train_step(sample, model, criterion)[0]

    def forward_backward() -> None:
        task.train_step(sample, model, criterion)[0].backward()

    if trainer.device.type == "cuda":
        results = []
        for fn in (forward, forward_backward):
            clear_grads(trainer)
            kept.clear()
            torch.cuda.synchronize()
            start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            results.append((torch.cuda.max_memory_allocated() - start, torch.cuda.memory_allocated() - start))
        (_, held), (peak, _) = results
    else:
        clear_grads(trainer)
        _, held = cpu_allocated_profile(forward)
        kept.clear()
        clear_grads(trainer)
        peak, _ = cpu_allocated_profile(forward_backward)
    clear_grads(trainer)
    return held, peak


def timed_step(trainer: Any, sample: Dict[str, Any]) -> float:
    """Seconds for one ``train_step`` (forward, backward, update)."""
    start = time.perf_counter()
    trainer.train_step([sample])
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a preprocessed data directory (default: build the demo corpus)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--tokens-per-sample", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more config overrides for every variant")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or demo_data(tmp)
        base = model_overrides(args.layers, args.dim, args.ffn, args.heads, args.tokens_per_sample,
                               args.max_tokens, args.dropout) + list(args.set)
        trainers = {name: build_trainer(data, base + extra) for name, extra in VARIANTS.items()}
        first = next(iter(trainers.values()))
        samples = full_batches(first, args.steps + 1)
        memory = {name: measure(trainer, samples[0]) for name, trainer in trainers.items()}
        times: Dict[str, List[float]] = {name: [] for name in trainers}
        for trainer in trainers.values():
            timed_step(trainer, samples[0])  # warm-up (and optimizer state)
        for i, sample in enumerate(samples[1:]):
            order = list(trainers) if i % 2 == 0 else list(reversed(trainers))
            for name in order:
                times[name].append(timed_step(trainers[name], sample))

    params = sum(p.numel() * p.element_size() for p in first.unwrapped_model.parameters())
    ntokens = samples[0]["ntokens"]
    how = "torch.cuda.max_memory_allocated" if first.device.type == "cuda" else \
        "torch.profiler CPU allocation records"
    print(f"device {first.device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"{args.layers} layers x {args.dim}, ffn {args.ffn}, {args.heads} heads, "
          f"vocabulary {len(first.task.target_dictionary)}, batch of {ntokens} tokens, "
          f"dropout {args.dropout}, criterion.fused_output_loss="
          f"{first.cfg.criterion.get('fused_output_loss', 'n/a')}; parameters {params / 2**20:.1f} MiB; "
          f"memory by {how}")
    mib = 2**20
    plain_held, plain_peak = memory["plain"]
    plain_time = statistics.median(times["plain"])
    print(f"{'variant':<11} {'held after fwd MiB':>19} {'peak fwd+bwd MiB':>17} {'step s (median)':>16}")
    for name, (held, peak) in memory.items():
        t = statistics.median(times[name])
        print(f"{name:<11} {held / mib:>12.1f} ({held / plain_held:4.2f}) {peak / mib:>10.1f} "
              f"({peak / plain_peak:4.2f}) {t:>9.3f} ({t / plain_time:4.2f})")


if __name__ == "__main__":
    main()
