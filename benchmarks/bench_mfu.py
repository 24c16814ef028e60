#!/usr/bin/env python3
"""How far from the hardware's limit: model FLOPs per token, achieved FLOP/s and MFU.

Two ``transformer_lm`` models train on the demo corpus through our ``Trainer`` (the real
``train_step``: forward, cross-entropy, backward, Adam), with tied input/output embeddings:

* ``demo``: 2 layers x 128, ffn 512, 4 heads, tokens_per_sample 128, max_tokens 2048;
* ``gpt2_small``: 12 layers x 768, ffn 3072, 12 heads (GPT-2 small's shape; the vocabulary is
  the demo corpus's), tokens_per_sample 256, max_tokens 1024 (a few updates only).

**FLOPs per token** (counted from the config, the convention of the PaLM paper's appendix B):
with L layers, width d, ffn width f, context T and output vocabulary V,
``N = L * (4*d*d + 2*d*f) + d*V`` weights take part in matrix products per token (the
attention projections q, k, v, out; the two ffn layers; the output layer, counted even when tied
to the embedding, whose lookup is not a product). A forward costs ``2*N + 4*L*T*d`` FLOPs per
token (``2*L*T*d`` for q.k, as many for the weighted sum of v, over the whole context: the
causal mask is applied, not skipped, by the attention kernel); training costs three times that,
``6*N + 12*L*T*d``. Biases, layer norms, softmax, dropout and the optimizer are not counted.

**Achieved FLOP/s** = FLOPs per token x tokens per second of the median update (``ntokens``
of the batch / seconds of ``train_step`` with the device synchronised). **MFU** = achieved /
peak *of the precision the run computes in*: a ``common.bf16=true`` run against the bfloat16
matmul peak, a float32 run against the float32 one. Each peak is the best of several square
matrix products (2048 x 2048 on a CPU, 8192 x 8192 on a GPU), and both precisions' peaks are
measured in the same run before every round, so load from other users of the machine weighs on
all figures. On a CPU without bfloat16 matmul instructions that product is very slow, so its
side is halved until one product takes at most two seconds (the side used is printed); the run then
also prints the notice that bf16 is slower than float32 there. Updates alternate model by model
and round by round; medians are reported.

The same run also reports, for each model (after training): eval-lm tokens/s
(``fairseq_cli.eval_lm.eval_lm`` over the first 8 batches of max_tokens of the valid split,
context_window 0; with ``common.bf16=true`` on a copy of the model held in bfloat16, as
``fairseq-eval-lm --bf16`` does, with its MFU against the bf16 peak) and generation tokens/s (``benchmarks/bench_generate.py``'s cached greedy
decoding of ``--gen-tokens`` tokens after a 16-token prompt, batch 1 and 8).

    python benchmarks/bench_mfu.py                       # builds the demo corpus in a temp dir
    python benchmarks/bench_mfu.py --data demo/data-bin --models demo --rounds 5
    python benchmarks/bench_mfu.py --set common.bf16=true --set common.compile=true   # GPU
    torchrun --standalone --nproc_per_node 8 benchmarks/bench_mfu.py \\
        --set distributed_training.ddp_backend=fully_sharded          # per-GPU figures

Under ``torchrun`` every process trains its own batches; figures are per process (per GPU),
printed by rank 0.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402

from bench_common import demo_data, flops_per_token, matmul_peak, sync  # noqa: E402

MODELS = {
    "demo": dict(layers=2, dim=128, ffn=512, heads=4, tokens_per_sample=128, max_tokens=2048),
    "gpt2_small": dict(layers=12, dim=768, ffn=3072, heads=12, tokens_per_sample=256, max_tokens=1024),
}


class Bench:
    """One model: its config, task, Trainer and a fixed list of full batches."""

    def __init__(self, name: str, data: str, extra: List[str], steps: int):
        from fairseq import tasks
        from fairseq.dataclass.initialize import compose_config
        from fairseq.trainer import Trainer

        s = MODELS[name]
        self.name, self.shape = name, s
        overrides = [
            f"task.data={data}", f"task.tokens_per_sample={s['tokens_per_sample']}", "task.sample_break_mode=none",
            f"model.decoder_layers={s['layers']}", f"model.decoder_embed_dim={s['dim']}",
            f"model.decoder_input_dim={s['dim']}", f"model.decoder_output_dim={s['dim']}",
            f"model.decoder_ffn_embed_dim={s['ffn']}", f"model.decoder_attention_heads={s['heads']}",
            "model.share_decoder_input_output_embed=true", f"dataset.max_tokens={s['max_tokens']}",
            "optimizer=adam", "optimization.lr=[0.0005]", "lr_scheduler.warmup_updates=4000",
            "common.log_interval=1000", "dataset.num_workers=0",
        ] + extra
        self.cfg = compose_config(overrides)
        from fairseq import distributed_utils

        distributed_utils.init_from_env(self.cfg)
        self.task = tasks.setup_task(self.cfg.task)
        self.task.load_dataset("train")
        self.task.load_dataset("valid")
        torch.manual_seed(1)
        model = self.task.build_model(self.cfg.model)
        self.trainer = Trainer(self.cfg, self.task, model, self.task.build_criterion(self.cfg.criterion))
        self.device = self.trainer.device
        self.vocab = len(self.task.target_dictionary)
        self.params = sum(p.numel() for p in model.parameters())
        self.flops = flops_per_token(s["layers"], s["dim"], s["ffn"], s["tokens_per_sample"], self.vocab)
        itr = self.task.get_batch_iterator(
            self.task.dataset("train"), max_tokens=s["max_tokens"], max_positions=s["tokens_per_sample"],
            seed=1, num_shards=distributed_utils.get_data_parallel_world_size(),
            shard_id=distributed_utils.get_data_parallel_rank()).next_epoch_itr(shuffle=True)
        self.samples = []
        for sample in itr:  # full batches only: equal work per update
            if sample and sample["ntokens"] >= 0.9 * s["max_tokens"]:
                self.samples.append(sample)
            if len(self.samples) == steps:
                break
        self.seconds: List[float] = []
        self.tokens: List[int] = []

    def step(self, i: int) -> None:
        """One timed update on batch ``i``."""
        sample = self.samples[i % len(self.samples)]
        sync(self.device)
        start = time.perf_counter()
        self.trainer.train_step([sample])
        sync(self.device)
        self.seconds.append(time.perf_counter() - start)
        self.tokens.append(int(sample["ntokens"]))

    def tokens_per_second(self) -> float:
        """Of the median update (seconds per token)."""
        return 1.0 / statistics.median(s / n for s, n in zip(self.seconds, self.tokens))

    def inference_model(self) -> torch.nn.Module:
        """The trained model as eval-lm and generation run it: with ``common.bf16``, a copy held
        in bfloat16 (``--bf16`` there casts the weights once); else the model itself."""
        model = _unwrap(self.trainer.model)
        if self.cfg.common.bf16:
            import copy

            model = copy.deepcopy(model).to(dtype=torch.bfloat16)
        return model.eval()

    def eval_lm_tokens_per_second(self, max_tokens: int) -> float:
        from fairseq_cli.eval_lm import eval_lm

        model = self.inference_model()
        itr = self.task.eval_lm_dataloader(self.task.dataset("valid"), max_tokens=max_tokens,
                                           max_positions=self.shape["tokens_per_sample"], num_workers=0)
        batches = [b for _, b in zip(range(8), itr)]  # the first 8 batches: a few seconds at most
        sync(self.device)
        start = time.perf_counter()
        with torch.no_grad():
            result = eval_lm([model], self.task.source_dictionary, batches, device=self.device)
        sync(self.device)
        model.train()
        return result["ntokens"] / (time.perf_counter() - start)

    def generate_tokens_per_second(self, batch: int, new_tokens: int) -> float:
        from bench_generate import run

        model = self.inference_model()
        prompt = 16
        new = min(new_tokens, self.shape["tokens_per_sample"] - prompt - 1)
        with torch.no_grad():
            speed = run(model, self.task.target_dictionary, batch, prompt, new, use_cache=True)
        model.train()
        return speed


PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def bounded_matmul_peak(device: torch.device, dtype: torch.dtype, size: int,
                        budget_s: float = 2.0, repeats: int = 5) -> Tuple[float, int]:
    """``(FLOP/s, side)``: :func:`matmul_peak` of ``size``, or, for a reduced precision on a
    CPU, of a smaller power-of-two side where one product of ``size`` would take more than
    ``budget_s`` (bfloat16 without hardware support runs at well under 1 GFLOP/s, and 2048^3
    would take a minute). float32 always keeps ``size``: its figures stay comparable."""
    if device.type == "cpu" and dtype != torch.float32:
        probe = min(256, size)
        rate = matmul_peak(device, dtype, probe, repeats=1)
        while size > probe and 2.0 * size ** 3 / rate > budget_s:
            size //= 2
    return matmul_peak(device, dtype, size, repeats=repeats), size


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a preprocessed data directory (default: build the demo corpus)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=3, help="timed updates per model per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peak-size", type=int, default=None,
                        help="side of the peak matrix product (default: 2048 on a CPU, 8192 on a GPU)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra config override for both models (repeatable), e.g. common.bf16=true")
    parser.add_argument("--batch-scale", type=int, default=1,
                        help="multiply every model's max_tokens (a GPU needs larger batches than a CPU)")
    parser.add_argument("--gen-tokens", type=int, default=64, help="tokens each generation adds")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-eval", action="store_true", help="skip the eval-lm and generation figures")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or demo_data(tmp, workers=1)
        for shape in MODELS.values():
            shape["max_tokens"] *= args.batch_scale
        benches = [Bench(name, data, args.set, args.steps) for name in args.models]
        device = benches[0].device
        precision = "bf16" if benches[0].cfg.common.bf16 else "fp32"
        dtype = PRECISION_DTYPES[precision]
        size = args.peak_size or (8192 if device.type == "cuda" else 2048)
        from fairseq.precision import notice_if_bf16_is_slow

        if precision == "bf16":
            notice_if_bf16_is_slow(device.type)
        for bench in benches:  # warm-up (and compilation, if any) outside the timings
            bench.step(0)
            bench.step(1)
            bench.seconds.clear()
            bench.tokens.clear()
        all_peaks: Dict[str, List[float]] = {p: [] for p in PRECISION_DTYPES}
        sides: Dict[str, int] = {}
        peaks = all_peaks[precision]  # the MFU of this run is against its own precision's peak
        mfu: Dict[str, List[float]] = {b.name: [] for b in benches}
        for r in range(args.rounds):
            for name, peak_dtype in PRECISION_DTYPES.items():
                flops, sides[name] = bounded_matmul_peak(device, peak_dtype, size)
                all_peaks[name].append(flops)
            marks = {b.name: len(b.seconds) for b in benches}
            for i in range(args.steps):
                for bench in (benches if (i + r) % 2 == 0 else benches[::-1]):
                    bench.step(r * args.steps + i)
            for b in benches:
                sec = sum(b.seconds[marks[b.name]:])
                tok = sum(b.tokens[marks[b.name]:])
                mfu[b.name].append(b.flops * tok / sec / peaks[-1])
        from fairseq import distributed_utils

        if distributed_utils.get_global_rank() != 0:
            return
        peak = statistics.median(peaks)
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"device {device} ({where}), torch {torch.__version__}, dtype {dtype}, world size "
              f"{distributed_utils.get_world_size()}, overrides {args.set or 'none'}; {args.rounds} rounds x "
              f"{args.steps} updates per model, load average {os.getloadavg()[0]:.1f} at the end")
        for name, values in all_peaks.items():
            used = " <- the MFU of this run" if name == precision else ""
            print(f"peak {name}: {sides[name]}x{sides[name]} {str(PRECISION_DTYPES[name]).replace('torch.', '')} "
                  f"matmul, best of 5 per round: median {statistics.median(values) / 1e9:.1f} GFLOP/s "
                  f"(rounds: {', '.join(f'{p / 1e9:.1f}' for p in values)}){used}")
        for b in benches:
            s = b.shape
            tps = b.tokens_per_second()
            print(f"{b.name}: {s['layers']} x {s['dim']}, ffn {s['ffn']}, {s['heads']} heads, T {s['tokens_per_sample']}, "
                  f"max_tokens {s['max_tokens']}, vocab {b.vocab}, {b.params / 1e6:.2f} M parameters")
            print(f"  train: {b.flops / 1e6:.2f} MFLOP/token, {tps:.0f} tokens/s (median update), "
                  f"{b.flops * tps / 1e9:.1f} GFLOP/s, MFU {100 * b.flops * tps / peak:.1f}% "
                  f"(per round: {', '.join(f'{100 * m:.1f}' for m in mfu[b.name])}%)")
            if args.no_eval:
                continue
            ev = statistics.median(b.eval_lm_tokens_per_second(s["max_tokens"]) for _ in range(args.rounds))
            fwd = flops_per_token(s["layers"], s["dim"], s["ffn"], s["tokens_per_sample"], b.vocab, training=False)
            print(f"  eval-lm ({precision}): {ev:.0f} tokens/s (median of {args.rounds}), "
                  f"{fwd * ev / 1e9:.1f} GFLOP/s, MFU {100 * fwd * ev / peak:.1f}%")
            for batch in (1, 8):
                g = statistics.median(b.generate_tokens_per_second(batch, args.gen_tokens) for _ in range(args.rounds))
                print(f"  generate ({precision}, cached, greedy, batch {batch}): {g:.0f} tokens/s (median of {args.rounds})")


if __name__ == "__main__":
    main()
