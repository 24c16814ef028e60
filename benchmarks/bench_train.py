#!/usr/bin/env python3
"""Training speed: words/s, model FLOP utilisation (MFU), where the time goes, peak memory.

Variants, all built from the same seed and trained on the same pre-collated batches of the demo
corpus (tokens_per_sample 128, max_tokens 2048; data loading is out of the comparison):

* ``trainer``: our ``Trainer`` as the training loop drives it (``train_step``, stats collected
  and reduced at the log interval), with the defaults: the output projection and the cross
  entropy fused block by block (``criterion.fused_output_loss=true``);
* ``trainer, plain loss``: the same with ``criterion.fused_output_loss=false`` (logits, then
  ``F.cross_entropy``: the path before the fused loss existed);
* ``trainer, compiled``: with ``common.compile=true``, when this checkout has that field;
* ``plain loop``: ``model(src)``, ``F.cross_entropy``, ``backward``, fused AdamW step,
  ``zero_grad(set_to_none=True)``: what a hand-written PyTorch loop does.

Two model sizes: the demo shapes (2 layers, embed 128, ffn 512, 4 heads) and 4x the width
(embed 512, ffn 2048, 8 heads), both with a tied output embedding and the dictionary padded to
``--vocab`` entries (``madeupword`` symbols, as ``--padding-factor`` does; default 8192).

Precision. ``--precision bf16`` trains every variant under bfloat16 autocast
(``common.bf16=true``; the plain loop inside ``torch.autocast``); the default is float32.

Speed. Variants alternate update by update (and the order rotates), and every round also times
a 2048 x 2048 matmul (best of 3) in float32 and in bfloat16, so all see the same load on a
shared machine; medians are reported. MFU = model FLOP/s / the median matmul FLOP/s *of the
precision trained in* (on a CPU without bfloat16 matmul instructions the bf16 product's side
is halved until it takes at most two seconds; the side is printed). Model FLOPs per token =
``6 * (layers * (4 C^2 + 2 C F) + C V) + 12 * layers * T * C`` (forward + backward of every
matmul weight, the output layer counted even when tied, plus attention scores and weighted
sums over the whole T x T square: the convention of ``bench_mfu.py``).

Breakdown. ``torch.profiler`` over ``--profile-steps`` updates of ``trainer`` (and, at the demo
shapes, of ``trainer, plain loss``): the self CPU time of every operator, grouped.

Memory. The profiler with ``profile_memory=True`` records every allocation and free of
PyTorch's CPU allocator; replaying them in time order gives the bytes allocated at every
instant of one steady-state update (forward, backward, optimizer step; optimizer state already
exists), relative to its start. The peak of that curve is reported: tensor storage only, not
the Python heap nor the parameters and optimizer state that live across updates.

    python benchmarks/bench_train.py                     # builds the demo corpus in a temp dir
    python benchmarks/bench_train.py --data demo/data-bin --steps 8 --rounds 3
    python benchmarks/bench_train.py --widths 1 --no-profile
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
import torch.nn.functional as F  # noqa: E402

from bench_common import demo_data, flops_per_token  # noqa: E402
from bench_mfu import PRECISION_DTYPES, bounded_matmul_peak  # noqa: E402

BASE = [
    "task.tokens_per_sample=128", "task.sample_break_mode=none",
    "model.share_decoder_input_output_embed=true", "dataset.max_tokens=2048", "optimizer=adam",
    "optimization.lr=[0.0005]", "lr_scheduler.warmup_updates=4000", "common.log_interval=100",
]

# operator name fragments -> the group they are reported in (first match wins)
GROUPS: List[Tuple[str, Tuple[str, ...]]] = [
    ("matmuls", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
                 "aten::baddbmm", "aten::addmm_")),
    ("log-softmax / cross entropy", ("softmax", "nll_loss", "cross_entropy", "aten::exp",
                                     "aten::gather", "aten::scatter_add", "FusedLinearCrossEntropy")),
    ("fill_ / zero_", ("aten::fill_", "aten::zero_")),
    ("dropout", ("dropout", "bernoulli")),
    ("layer norm", ("layer_norm",)),
    ("optimizer (fused AdamW)", ("adam",)),
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("gelu / relu", ("gelu", "relu", "threshold_backward", "clamp_min")),
    ("elementwise (mul, add, sum, where)", ("aten::mul", "aten::add", "aten::sum", "aten::where",
                                            "aten::div", "aten::sub", "aten::neg")),
    ("copies / casts", ("aten::copy_", "aten::to", "aten::clone", "aten::contiguous")),
    ("embedding", ("embedding",)),
    ("norm / clip", ("norm", "_foreach")),
]


def width_overrides(width: int) -> List[str]:
    """Model fields of the demo shapes (width 1) or ``width`` times as wide."""
    dim, heads = 128 * width, 4 if width == 1 else 8
    return ["model.decoder_layers=2", f"model.decoder_embed_dim={dim}", f"model.decoder_input_dim={dim}",
            f"model.decoder_output_dim={dim}", f"model.decoder_ffn_embed_dim={4 * dim}",
            f"model.decoder_attention_heads={heads}"]


def build(data: str, overrides: List[str], vocab: int):
    """(cfg, task, model, criterion) from the same seed; the dictionary padded to ``vocab``."""
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config

    cfg = compose_config([f"task.data={data}"] + BASE + overrides)
    task = tasks.setup_task(cfg.task)
    if vocab and len(task.dictionary) < vocab:
        task.dictionary.pad_to_multiple_(vocab)
    task.load_dataset("train")
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    return cfg, task, model, task.build_criterion(cfg.criterion)


def has_compile_field() -> bool:
    from fairseq.dataclass.configs import CommonConfig

    return "compile" in getattr(CommonConfig, "__dataclass_fields__", {})


def full_batches(cfg, task, n: int) -> List[Dict[str, Any]]:
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=cfg.dataset.max_tokens,
                                  max_positions=128, seed=1).next_epoch_itr(shuffle=True)
    out = []
    for sample in itr:
        if sample and sample["ntokens"] >= 0.93 * cfg.dataset.max_tokens:  # equal work per step
            out.append(sample)
        if len(out) == n:
            break
    return out


class TrainerStep:
    """One update as the training loop makes it: train_step, stats, reduce at the log interval."""

    def __init__(self, trainer):
        from fairseq.training import IntervalStats

        self.trainer, self.stats = trainer, IntervalStats()

    def __call__(self, sample: Dict[str, Any]) -> None:
        start = time.perf_counter()
        self.stats.add(self.trainer.train_step([sample]))
        if self.trainer.get_num_updates() % self.trainer.cfg.common.log_interval == 0:
            self.stats.reduce(self.trainer.task, self.trainer.criterion, 0.0, start)
            self.stats.reset()


class PlainStep:
    """A hand-written PyTorch update of the same model, at the trainer's learning rate."""

    def __init__(self, model, pad: int, lr: float, bf16: bool = False):
        self.model, self.pad, self.bf16 = model, pad, bf16
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999),
                                           weight_decay=0.0, fused=True)

    def __call__(self, sample: Dict[str, Any]) -> None:
        self.model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits, _ = self.model(sample["net_input"]["src_tokens"])  # (B, T, V)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), sample["target"].view(-1),
                                   ignore_index=self.pad, reduction="sum") / sample["ntokens"]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def make_variants(data: str, width: int, vocab: int, with_plain_loss: bool,
                  precision: str = "fp32") -> Tuple[Any, Any, Dict[str, Callable]]:
    from fairseq.trainer import Trainer

    over = width_overrides(width) + (["common.bf16=true"] if precision == "bf16" else [])
    cfg, task, model, criterion = build(data, over, vocab)
    trainer = Trainer(cfg, task, model, criterion)
    variants: Dict[str, Callable] = {"trainer": TrainerStep(trainer)}
    if with_plain_loss:
        c2, t2, m2, cr2 = build(data, over + ["criterion.fused_output_loss=false"], vocab)
        variants["trainer, plain loss"] = TrainerStep(Trainer(c2, t2, m2, cr2))
    if has_compile_field():
        c3, t3, m3, cr3 = build(data, over + ["common.compile=true"], vocab)
        variants["trainer, compiled"] = TrainerStep(Trainer(c3, t3, m3, cr3))
    _, _, plain_model, _ = build(data, over, vocab)
    variants["plain loop"] = PlainStep(plain_model.to(trainer.device), task.target_dictionary.pad(),
                                       trainer.get_lr(), bf16=precision == "bf16")
    return cfg, task, variants


def time_variants(variants: Dict[str, Callable], samples: List[Dict[str, Any]], rounds: int):
    """Seconds per word of every update of every variant, and the matmul GFLOP/s of every round
    in each precision (``{"fp32": [...], "bf16": [...]}``) with the side the products had."""
    names = list(variants)
    for name in names:  # warm up (allocations, optimizer state, compilation)
        for sample in samples[:3]:
            variants[name](sample)
    per_word: Dict[str, List[float]] = {name: [] for name in names}
    peaks: Dict[str, List[float]] = {p: [] for p in PRECISION_DTYPES}
    sides: Dict[str, int] = {}
    cpu = torch.device("cpu")
    k = 0
    for _ in range(rounds):
        for sample in samples:
            for name, dtype in PRECISION_DTYPES.items():
                flops, sides[name] = bounded_matmul_peak(cpu, dtype, 2048, repeats=3)
                peaks[name].append(flops / 1e9)
            order = names[k % len(names):] + names[:k % len(names)]  # rotate who goes first
            k += 1
            for name in order:
                start = time.perf_counter()
                variants[name](sample)
                per_word[name].append((time.perf_counter() - start) / sample["ntokens"])
    return per_word, peaks, sides


def breakdown(step: Callable, samples: List[Dict[str, Any]]) -> List[Tuple[str, float]]:
    """Share of self CPU time per operator group over ``samples`` updates of ``step``; the
    group "other" is followed by its three largest operators."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for sample in samples:
            step(sample)
    totals: Dict[str, float] = {}
    others: Dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key
        if not (name.startswith("aten::") or "FusedLinearCrossEntropy" in name or "Optimizer" in name):
            continue
        group = next((g for g, keys in GROUPS if any(k in name.lower() or k in name for k in keys)), "other")
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total
        if group == "other":
            others[name] = event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    top = sorted(others, key=lambda k: -others[k])[:3]
    named = {g: g if g != "other" else f"other ({', '.join(n.replace('aten::', '') for n in top)})"
             for g in totals}
    return sorted(((named[g], t / whole) for g, t in totals.items()), key=lambda kv: -kv[1])


def peak_step_bytes(step: Callable, sample: Dict[str, Any]) -> int:
    """Peak bytes allocated by PyTorch's CPU allocator during one update, above its start."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(sample)
    events: List[Tuple[int, int]] = []
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        node = pending.pop()
        pending.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))  # negative: a free
    level = peak = 0
    for _, size in sorted(events):
        level += size
        peak = max(peak, level)
    return peak


def report(width: int, cfg, task, variants, per_word, peaks, vocab: int, sides: Dict[str, int],
           precision: str = "fp32") -> None:
    m = cfg.model
    fpt = flops_per_token(m.decoder_layers, m.decoder_embed_dim, m.decoder_ffn_embed_dim,
                          cfg.task.tokens_per_sample, vocab)
    peak = statistics.median(peaks[precision])  # MFU against the peak of the precision trained in
    plain = 1.0 / statistics.median(per_word["plain loop"])
    shown = "; ".join(
        f"{name} {sides[name]}^2 matmul peak {statistics.median(v):.1f} GFLOP/s (median of {len(v)}, range "
        f"{min(v):.1f}-{max(v):.1f}){' <- MFU' if name == precision else ''}" for name, v in peaks.items())
    print(f"\n== width x{width}, {precision}: {m.decoder_layers} layers x {m.decoder_embed_dim}, ffn "
          f"{m.decoder_ffn_embed_dim}, {m.decoder_attention_heads} heads, vocabulary {vocab}, "
          f"{fpt / 1e6:.2f} MFLOP/token; {shown}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'variant':24s} {'words/s':>9s} {'GFLOP/s':>8s} {'MFU':>6s} {'vs plain loop':>14s}")
    for name, values in per_word.items():
        wps = 1.0 / statistics.median(values)
        print(f"{name:24s} {wps:9.0f} {wps * fpt / 1e9:8.1f} {wps * fpt / 1e9 / peak:6.3f} {wps / plain:14.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a preprocessed data directory (default: build the demo corpus)")
    parser.add_argument("--steps", type=int, default=8, help="distinct batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the batches")
    parser.add_argument("--vocab", type=int, default=8192, help="pad the dictionary to this size")
    parser.add_argument("--widths", default="1,4", help="model widths, multiples of the demo's 128")
    parser.add_argument("--profile-steps", type=int, default=5, help="updates in the breakdown")
    parser.add_argument("--no-profile", action="store_true", help="skip the breakdown and memory")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--precision", choices=list(PRECISION_DTYPES), default="fp32",
                        help="train in float32 or under bfloat16 autocast (common.bf16=true)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, common.compile "
          f"{'available' if has_compile_field() else 'not in this checkout'}")

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or demo_data(tmp)
        for width in (int(w) for w in args.widths.split(",")):
            cfg, task, variants = make_variants(data, width, args.vocab, with_plain_loss=True,
                                                precision=args.precision)
            vocab = len(task.target_dictionary)
            samples = full_batches(cfg, task, args.steps)
            per_word, peaks, sides = time_variants(variants, samples, args.rounds)
            report(width, cfg, task, variants, per_word, peaks, vocab, sides, args.precision)
            if args.no_profile:
                continue
            shown = [n for n in ("trainer", "trainer, plain loss") if n in variants]
            for name in shown:
                shares = breakdown(variants[name], samples[:args.profile_steps])
                print(f"-- {name}: share of CPU time over {args.profile_steps} updates (torch.profiler)")
                for group, share in shares:
                    print(f"   {group:40s} {100 * share:5.1f}%")
            if width == 1:
                sample = samples[0]
                mem = {n: peak_step_bytes(variants[n], sample) for n in ("trainer, plain loss", "trainer")}
                before, after = mem["trainer, plain loss"], mem["trainer"]
                print(f"-- peak memory of one update (tensor storage above the update's start, "
                      f"{sample['ntokens']} tokens): plain loss {before / 2**20:.1f} MiB, fused "
                      f"{after / 2**20:.1f} MiB, {100 * (1 - after / before):.0f}% lower")


if __name__ == "__main__":
    main()
