#!/usr/bin/env python3
"""Side by side with Hugging Face transformers: one Llama-shaped model trained and decoded by
this package and as ``transformers.LlamaForCausalLM``.

A script, not a test. Both sides hold the same weights: ours is built from the
``transformer_lm_llama_tiny`` preset at the shape the flags give, exported with
``fairseq.hf_bridge.export_model`` and loaded back by transformers (the export itself is checked:
the logits of both must agree within 1e-4 before anything is timed).

Training: the same synthetic batches (Zipf-distributed token ids over ``--vocab`` entries, or
the words of ``--text FILE`` mapped to the most frequent ``--vocab`` ones), the same tokens
per update, AdamW with the same settings on both sides, in float32 and under bfloat16
autocast. Ours is an update of the training loop (``Trainer.train_step``, the criterion's fused
output loss, the run's ``common.bf16`` autocast); theirs a plain PyTorch loop (``model(ids)``,
``F.cross_entropy``, ``backward``, ``AdamW.step``, ``zero_grad``) inside ``torch.autocast``.
The two alternate update by update (who goes first rotates); words/s = tokens / median
seconds of an update; the ratio ours / theirs (> 1: ours faster) is printed with
``os.getloadavg()`` before and after, because a shared machine's load moves the numbers.

Decoding: greedy and sampling (top-k 10), batch 1 and 8, prompts of 8 tokens, exactly
``--gen-tokens`` new tokens: ours through the hub's ``generate`` (``SequenceGenerator``, our
incremental state), theirs through ``generate()`` (its KV cache); new tokens/s, median of
``--gen-rounds`` alternating runs.

    python benchmarks/vs_hf_llama.py                      # ~2-3 minutes on 2 idle CPU cores
    python benchmarks/vs_hf_llama.py --dtypes fp32,bf16   # bfloat16 autocast on a CPU too (slow)
    python benchmarks/vs_hf_llama.py --layers 12 --dim 768 --heads 12 --kv-heads 4 --ffn 2048 \\
        --batch 8 --tokens-per-sample 512 --device cuda  # transformer_lm_llama_small's shape
"""
import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def parse_args(argv: List[str] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=688)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--tokens-per-sample", type=int, default=128)
    p.add_argument("--batch", type=int, default=4, help="sequences per update")
    p.add_argument("--steps", type=int, default=4, help="timed updates per round and side")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtypes", default=None,
                   help="comma-separated: fp32, bf16 (autocast); default fp32,bf16 on a GPU, fp32 on a CPU, "
                        "where bfloat16 without hardware support measured ~15x slower on both sides")
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--gen-rounds", type=int, default=2)
    p.add_argument("--no-generate", action="store_true")
    p.add_argument("--text", default=None, metavar="FILE", help="train on the words of FILE instead of Zipf ids")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args(argv)


# -- data -----------------------------------------------------------------------------------------
def token_stream(args: argparse.Namespace, n: int) -> torch.Tensor:
    """``n`` token ids >= 4 (fairseq's specials are 0-3): Zipf over the vocabulary, or ``--text``."""
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            words = f.read().split()
        ranks = {w: 4 + i for i, (w, _) in enumerate(collections.Counter(words).most_common(args.vocab - 4))}
        ids = torch.tensor([ranks.get(w, 3) for w in words], dtype=torch.long)
        return ids.repeat(n // max(len(ids), 1) + 1)[:n]
    g = torch.Generator().manual_seed(0)
    weights = 1.0 / torch.arange(1, args.vocab - 3, dtype=torch.float64)
    return 4 + torch.multinomial(weights, n, replacement=True, generator=g)


def batches(args: argparse.Namespace, count: int) -> List[Dict[str, Any]]:
    """fairseq samples of ``batch`` x ``tokens_per_sample`` tokens (source, next-token target)."""
    B, T = args.batch, args.tokens_per_sample
    stream = token_stream(args, count * B * (T + 1)).view(count, B, T + 1)
    return [{"id": torch.arange(B), "nsentences": B, "ntokens": B * T,
             "net_input": {"src_tokens": rows[:, :-1].contiguous(), "src_lengths": torch.full((B,), T)},
             "target": rows[:, 1:].contiguous()} for rows in stream]


# -- the two models -------------------------------------------------------------------------------
def build_ours(args: argparse.Namespace, data_dir: str, bf16: bool):
    """``(cfg, task, trainer)`` of the Llama preset at the flags' shape, seed 1."""
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config
    from fairseq.trainer import Trainer

    overrides = [
        f"task.data={data_dir}", "model=transformer_lm_llama_tiny", f"model.decoder_layers={args.layers}",
        f"model.decoder_embed_dim={args.dim}", f"model.decoder_input_dim={args.dim}",
        f"model.decoder_output_dim={args.dim}", f"model.decoder_ffn_embed_dim={args.ffn}",
        f"model.decoder_attention_heads={args.heads}", f"model.decoder_kv_attention_heads={args.kv_heads}",
        f"task.tokens_per_sample={args.tokens_per_sample}", f"dataset.batch_size={args.batch}",
        "optimizer=adam", "optimizer.adam_betas=[0.9,0.95]", "optimizer.weight_decay=0.1",
        "optimization.lr=[0.0003]", "lr_scheduler=fixed", "common.log_interval=1000000",
        f"common.bf16={str(bf16).lower()}", f"common.cpu={str(args.device == 'cpu').lower()}",
    ]
    cfg = compose_config(overrides)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    return cfg, task, Trainer(cfg, task, model, task.build_criterion(cfg.criterion))


def export_to_hf(cfg, task, model, directory: str):
    """Our model's weights as a ``LlamaForCausalLM`` (through the bridge), on CPU, float32."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from fairseq.hf_bridge import export_model

    hf_logging.disable_progress_bar()

    export_model(model.cpu().eval(), cfg, task.source_dictionary, directory, overwrite=True)
    return AutoModelForCausalLM.from_pretrained(directory)


class OursStep:
    def __init__(self, trainer):
        self.trainer = trainer

    def __call__(self, sample: Dict[str, Any]) -> None:
        self.trainer.train_step([sample])


class HFStep:
    """A plain PyTorch update of the transformers model, the same AdamW settings."""

    def __init__(self, hf, device: str, bf16: bool):
        self.hf, self.device, self.bf16 = hf.to(device).train(), device, bf16
        kind = "cuda" if device.startswith("cuda") else "cpu"
        self.autocast = lambda: torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16)
        self.optimizer = torch.optim.AdamW(hf.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                                           weight_decay=0.1)

    def __call__(self, sample: Dict[str, Any]) -> None:
        src = sample["net_input"]["src_tokens"].to(self.device)
        target = sample["target"].to(self.device)
        with self.autocast():
            logits = self.hf(input_ids=src).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), target.view(-1))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def alternate(steps: Dict[str, Callable], samples: List[Dict[str, Any]], args: argparse.Namespace) -> Dict[str, float]:
    """Median seconds per update of each side, the sides alternating (order rotating)."""
    names = list(steps)
    for name in names:
        for sample in samples[:args.warmup]:
            steps[name](sample)
    sync(args.device)
    times: Dict[str, List[float]] = {n: [] for n in names}
    k = 0
    for _ in range(args.rounds):
        for sample in samples[args.warmup:args.warmup + args.steps]:
            for name in names[k % 2:] + names[:k % 2]:
                start = time.perf_counter()
                steps[name](sample)
                sync(args.device)
                times[name].append(time.perf_counter() - start)
            k += 1
    return {n: statistics.median(t) for n, t in times.items()}


# -- decoding -------------------------------------------------------------------------------------
def decode_rates(hub, hf, prompts: torch.Tensor, args: argparse.Namespace, sampling: bool) -> Dict[str, float]:
    """New tokens/s of ours and transformers', ``prompts`` (B, 8) continued by ``gen_tokens``."""
    n, new = prompts.size(1), args.gen_tokens
    options = dict(sampling=True, sampling_topk=10) if sampling else dict(beam=1)

    def ours() -> None:
        hub.generate([p for p in prompts], max_len_a=0, max_len_b=n + new, min_len=n + new, **options)

    def theirs() -> None:
        with torch.no_grad():
            start = torch.full((prompts.size(0), 1), 2, dtype=torch.long)  # fairseq's </s> first
            ids = torch.cat([start, prompts], dim=1).to(args.device)
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                        do_sample=sampling,
                        top_k=10 if sampling else None, pad_token_id=2)

    rates: Dict[str, List[float]] = {"ours": [], "transformers": []}
    ours()
    theirs()  # warm up
    for r in range(args.gen_rounds):
        for name, fn in (("ours", ours), ("transformers", theirs))[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            fn()
            sync(args.device)
            rates[name].append(prompts.size(0) * new / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in rates.items()}


def main(argv: List[str] = None) -> None:
    args = parse_args(argv)
    if args.dtypes is None:
        args.dtypes = "fp32" if args.device == "cpu" else "fp32,bf16"
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fairseq.data import Dictionary

    work = tempfile.mkdtemp(prefix="vs_hf_llama_")
    d = Dictionary()
    for i in range(args.vocab - d.nspecial):
        d.add_symbol(f"w{i}")
    d.save(os.path.join(work, "dict.txt"))
    samples = batches(args, args.warmup + args.steps)
    load_before = os.getloadavg()
    print(f"shape: {args.layers} layers x {args.dim}, ffn {args.ffn}, {args.heads} heads / {args.kv_heads} kv heads, "
          f"vocabulary {args.vocab:,}; {args.batch} x {args.tokens_per_sample} tokens per update; device "
          f"{args.device}, {torch.get_num_threads()} threads; torch {torch.__version__}")
    started = time.perf_counter()
    for dtype in [x.strip() for x in args.dtypes.split(",") if x.strip()]:
        bf16 = dtype == "bf16"
        cfg, task, trainer = build_ours(args, work, bf16)
        hf = export_to_hf(cfg, task, trainer.model, os.path.join(work, "hf"))
        trainer.model.to(trainer.device)
        with torch.no_grad():
            probe = samples[0]["net_input"]["src_tokens"][:1, :32]
            trainer.model.eval()
            diff = (trainer.model(probe.to(trainer.device))[0].float().cpu() - hf(input_ids=probe).logits).abs().max()
        assert diff < 1e-4, f"the exported model disagrees with ours by {diff:.3g}"
        n_params = sum(p.numel() for p in hf.parameters())
        seconds = alternate({"ours": OursStep(trainer), "transformers": HFStep(hf, args.device, bf16)}, samples, args)
        tokens = args.batch * args.tokens_per_sample
        wps = {n: tokens / s for n, s in seconds.items()}
        print(f"train {dtype:>4} ({n_params / 1e6:.1f}M parameters): ours {wps['ours']:,.0f} words/s, transformers "
              f"{wps['transformers']:,.0f} words/s, ratio {wps['ours'] / wps['transformers']:.2f}x "
              f"(load {os.getloadavg()[0]:.2f})")
    if not args.no_generate:
        from fairseq.hub_utils import GeneratorHubInterface

        cfg, task, trainer = build_ours(args, work, False)
        model = trainer.model.cpu().eval() if args.device == "cpu" else trainer.model.eval()
        hf = export_to_hf(cfg, task, model, os.path.join(work, "hf")).to(args.device).eval()
        model.to(args.device)
        hub = GeneratorHubInterface(cfg, task, [model]).to(args.device)
        for batch in (1, 8):
            prompts = samples[0]["target"].repeat(2, 1)[:batch, :8]
            for sampling in (False, True):
                rate = decode_rates(hub, hf, prompts, args, sampling)
                print(f"generate {'sampling top-10' if sampling else 'greedy':>15}, batch {batch}: ours "
                      f"{rate['ours']:,.0f} tokens/s, transformers {rate['transformers']:,.0f} tokens/s, ratio "
                      f"{rate['ours'] / rate['transformers']:.2f}x (load {os.getloadavg()[0]:.2f})")
    print(f"load average (1, 5, 15 min): before {tuple(round(x, 2) for x in load_before)}, after "
          f"{tuple(round(x, 2) for x in os.getloadavg())}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
