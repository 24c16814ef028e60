#!/usr/bin/env python3
"""Side by side with Hugging Face transformers: the same models trained (and decoded) by this
package and as ``transformers`` models in a plain PyTorch loop, alternating update by update.

A script, not a test (tests/test_benchmark_scripts.py checks only its arguments and plan).

Models (``--model``, comma-separated):

* ``gpt2``: our ``transformer_lm`` with learned positions (``--decoder-learned-pos``), relu,
  pre-norm, dropout 0.1, tied and unscaled embeddings (unscaled so that the tied table is the
  very one ``GPT2LMHeadModel`` multiplies by), against ``transformers.GPT2LMHeadModel``;
* ``llama``: our ``transformer_lm_llama_tiny`` preset (RoPE, RMSNorm, SwiGLU, grouped-query
  attention, no biases) at the shape below, against ``transformers.LlamaForCausalLM``.

Both sides hold the same weights: ours is built at seed 1, exported with
``fairseq.hf_bridge.export_model`` and loaded by transformers; the logits of both must agree
within 1e-4 before anything is timed. Shapes (``--shapes``): ``demo`` (2 layers x 128, ffn 512,
4 heads) and ``4x`` (2 x 512, ffn 2048, 8 heads), those of ``benchmarks/vs_fairseq.py``; any of
``--layers/--dim/--ffn/--heads`` gives one custom shape instead. Llama's kv heads:
``--kv-heads`` (default half the heads); its ffn is gated, so at the same ffn width it does 1.5x
the feed-forward work (counted in its MFU).

Training: the same batches on both sides (Zipf-distributed token ids over ``--vocab`` entries,
or the words of ``--text FILE`` mapped to the most frequent ``--vocab`` ones), ``--batch`` x
``--tokens-per-sample`` tokens per update (default 16 x 128 = 2048), AdamW (lr 3e-4, betas
(0.9, 0.95), weight decay 0.1) on both sides, in float32 and bfloat16. Ours is an update of
the training loop (``Trainer.train_step``: the criterion's fused output loss, ``common.bf16``);
theirs a plain loop (``model(ids)``, ``F.cross_entropy`` in float32, ``backward``,
``AdamW.step``, ``zero_grad``) inside ``torch.autocast(bfloat16)`` for bf16. The two alternate
update by update (who goes first rotates); words/s = tokens / median seconds of an update.

The matmul peaks of both precisions (2048^3, best of 5) are measured in the same run, at the
start and at the end; MFU = words/s x training FLOPs per token (``bench_common.flops_per_token``)
/ the higher peak *of the precision used*. Where the bf16 peak is below the fp32 one (a CPU
without bf16 matmul support) one line says so and bf16 is left out unless ``--dtypes`` asks
for it. Every figure is printed with the load average.

Decoding (``--no-generate`` skips it): greedy and sampling (top-k 10), batch 1 and 8, prompts
of 8 tokens, exactly ``--gen-tokens`` new tokens, float32, at the first shape: ours through the
hub's ``generate``, theirs through ``generate()``; new tokens/s, median of ``--gen-rounds``.

    python benchmarks/vs_hf.py                                  # gpt2 + llama, demo + 4x, fp32 + bf16
    python benchmarks/vs_hf.py --model gpt2 --shapes 4x --text corpus.txt --vocab 14000
    python benchmarks/vs_hf.py --steps 2 --rounds 1 --shapes demo --no-generate   # a quick look
    python benchmarks/vs_hf.py --dry-run                        # print the plan, build nothing
"""
import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_common import flops_per_token, gflops_text, load_text, matmul_peaks, slow_bf16_note  # noqa: E402

SHAPES = {  # name: (layers, dim, ffn, heads), as in vs_fairseq.py
    "demo": (2, 128, 512, 4),
    "4x": (2, 512, 2048, 8),
}
MODELS = ("gpt2", "llama")
HF_CLASS = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (``argv``, default ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gpt2,llama", help="comma-separated: gpt2, llama")
    p.add_argument("--shapes", default="demo,4x", help="comma-separated: demo (2 x 128), 4x (2 x 512)")
    p.add_argument("--layers", type=int, default=None, help="a custom shape (with --dim, --ffn, --heads)")
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--ffn", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--kv-heads", type=int, default=None, help="llama's key/value heads (default heads / 2)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--tokens-per-sample", type=int, default=128)
    p.add_argument("--batch", type=int, default=16, help="sequences per update")
    p.add_argument("--steps", type=int, default=4, help="timed updates per round and side")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtypes", default=None,
                   help="comma-separated: fp32, bf16 (ours common.bf16, theirs autocast); default both, "
                        "fp32 only where the bf16 matmul peak is below the fp32 one")
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--gen-rounds", type=int, default=2)
    p.add_argument("--no-generate", action="store_true")
    p.add_argument("--text", default=None, metavar="FILE", help="train on the words of FILE instead of Zipf ids")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--dry-run", action="store_true", help="print the runs it would make and stop")
    args = p.parse_args(argv)
    models = [m for m in args.model.split(",") if m]
    if not models or set(models) - set(MODELS):
        p.error(f"--model {args.model!r}: give gpt2, llama or gpt2,llama")
    custom = [args.layers, args.dim, args.ffn, args.heads]
    if any(v is not None for v in custom) and not all(v is not None for v in custom):
        p.error("a custom shape needs all of --layers, --dim, --ffn and --heads")
    if args.dtypes is not None and (not args.dtypes or set(args.dtypes.split(",")) - {"fp32", "bf16"}):
        p.error(f"--dtypes {args.dtypes!r}: give fp32, bf16 or fp32,bf16")
    if args.layers is None and (not args.shapes or set(args.shapes.split(",")) - set(SHAPES)):
        p.error(f"--shapes {args.shapes!r}: give demo, 4x or demo,4x")
    if args.text and not os.path.isfile(args.text):
        p.error(f"--text {args.text}: no such file")
    return args


def shapes(args: argparse.Namespace) -> List[Tuple[str, Tuple[int, int, int, int]]]:
    """``[(name, (layers, dim, ffn, heads))]`` of the run."""
    if args.layers is not None:
        return [(f"{args.layers}x{args.dim}", (args.layers, args.dim, args.ffn, args.heads))]
    return [(name, SHAPES[name]) for name in args.shapes.split(",")]


def kv_heads(args: argparse.Namespace, heads: int) -> int:
    return args.kv_heads if args.kv_heads is not None else max(1, heads // 2)


def plan(args: argparse.Namespace, dtypes: List[str]) -> List[str]:
    """One line per training comparison the run makes (what ``--dry-run`` prints)."""
    lines = []
    for model in args.model.split(","):
        for name, (layers, dim, ffn, heads) in shapes(args):
            kv = f", {kv_heads(args, heads)} kv heads" if model == "llama" else ""
            for dtype in dtypes:
                lines.append(f"{model} {name} {dtype}: {layers} layers x {dim}, ffn {ffn}, {heads} heads{kv}, "
                             f"vocabulary {args.vocab:,}; {args.batch} x {args.tokens_per_sample} tokens per "
                             f"update; ours vs transformers.{HF_CLASS[model]}")
    return lines


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
def model_overrides(model: str, shape: Tuple[int, int, int, int], args: argparse.Namespace) -> List[str]:
    """The config overrides of our side of ``model`` at ``shape``."""
    layers, dim, ffn, heads = shape
    common = [f"model.decoder_layers={layers}", f"model.decoder_embed_dim={dim}", f"model.decoder_input_dim={dim}",
              f"model.decoder_output_dim={dim}", f"model.decoder_ffn_embed_dim={ffn}",
              f"model.decoder_attention_heads={heads}"]
    if model == "llama":
        return ["model=transformer_lm_llama_tiny", *common,
                f"model.decoder_kv_attention_heads={kv_heads(args, heads)}"]
    # no_scale_embedding: the tied table is then the one GPT-2 multiplies by (the export stays tied)
    return ["model=transformer_lm", *common, "model.decoder_learned_pos=true", "model.activation_fn=relu",
            "model.decoder_normalize_before=true", "model.share_decoder_input_output_embed=true",
            "model.no_scale_embedding=true", "model.dropout=0.1", "model.attention_dropout=0.0",
            f"model.max_target_positions={args.tokens_per_sample}"]


def build_ours(args: argparse.Namespace, model: str, shape: Tuple[int, int, int, int], data_dir: str, bf16: bool):
    """``(cfg, task, trainer)`` of our side, seed 1."""
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config
    from fairseq.trainer import Trainer

    overrides = [
        f"task.data={data_dir}", *model_overrides(model, shape, args),
        f"task.tokens_per_sample={args.tokens_per_sample}", f"dataset.batch_size={args.batch}",
        "optimizer=adam", "optimizer.adam_betas=[0.9,0.95]", "optimizer.weight_decay=0.1",
        "optimization.lr=[0.0003]", "lr_scheduler=fixed", "common.log_interval=1000000",
        f"common.bf16={str(bf16).lower()}", f"common.cpu={str(args.device == 'cpu').lower()}",
    ]
    cfg = compose_config(overrides)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(1)
    net = task.build_model(cfg.model)
    return cfg, task, Trainer(cfg, task, net, task.build_criterion(cfg.criterion))


def export_to_hf(cfg, task, model, directory: str):
    """Our model's weights as a transformers model (through the bridge), on CPU, float32."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from fairseq.hf_bridge import export_model

    hf_logging.disable_progress_bar()
    export_model(model.cpu().eval(), cfg, task.source_dictionary, directory, overwrite=True)
    return AutoModelForCausalLM.from_pretrained(directory)


class OursStep:
    """One update of our training loop."""

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


def train_flops(model: str, shape: Tuple[int, int, int, int], args: argparse.Namespace, vocab_rows: int) -> float:
    """Training FLOPs per token of our side of ``model`` at ``shape``."""
    layers, dim, ffn, heads = shape
    if model == "llama":
        return flops_per_token(layers, dim, ffn, args.tokens_per_sample, vocab_rows,
                               kv_dim=kv_heads(args, heads) * (dim // heads), gated=True)
    return flops_per_token(layers, dim, ffn, args.tokens_per_sample, vocab_rows)


# -- decoding -------------------------------------------------------------------------------------
def decode_rates(hub, hf, prompts: torch.Tensor, args: argparse.Namespace, sampling: bool) -> Dict[str, float]:
    """New tokens/s of ours and transformers', ``prompts`` (B, 8) continued by ``gen_tokens``."""
    n, new = prompts.size(1), args.gen_tokens
    # beam=1: the hub's default beam (5) would draw five samples per prompt
    options = dict(sampling=True, sampling_topk=10, beam=1) if sampling else dict(beam=1)

    def ours() -> None:
        hub.generate([p for p in prompts], max_len_a=0, max_len_b=n + new, min_len=n + new, **options)

    def theirs() -> None:
        with torch.no_grad():
            start = torch.full((prompts.size(0), 1), 2, dtype=torch.long)  # fairseq's </s> first
            ids = torch.cat([start, prompts], dim=1).to(args.device)
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                        do_sample=sampling, top_k=10 if sampling else None, pad_token_id=2)

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


def measure_peaks(args: argparse.Namespace, peaks: Dict[str, List[float]]) -> None:
    """Append this moment's matmul peaks (GFLOP/s) of both precisions to ``peaks`` and print them."""
    for k, v in matmul_peaks(device=torch.device(args.device)).items():
        peaks.setdefault(k, []).append(v)
    print("matmul peak (2048^3): " + ", ".join(f"{k} {gflops_text(v[-1])} GFLOP/s" for k, v in peaks.items())
          + f" (load {load_text()})", flush=True)


def train_one(args: argparse.Namespace, model: str, name: str, shape: Tuple[int, int, int, int], dtype: str,
              work: str, samples: List[Dict[str, Any]], peaks: Dict[str, List[float]]) -> Dict[str, Any]:
    """One alternating training comparison; prints its line and returns its figures."""
    bf16 = dtype == "bf16"
    cfg, task, trainer = build_ours(args, model, shape, work, bf16)
    hf = export_to_hf(cfg, task, trainer.model, os.path.join(work, "hf"))
    trainer.model.to(trainer.device)
    with torch.no_grad():
        probe = samples[0]["net_input"]["src_tokens"][:1, :32]
        trainer.model.eval()
        diff = (trainer.model(probe.to(trainer.device))[0].float().cpu() - hf(input_ids=probe).logits).abs().max()
    assert diff < 1e-4, f"the exported model disagrees with ours by {diff:.3g}"
    trainer.model.train()
    n_params = sum(p.numel() for p in hf.parameters())
    load_before = load_text()
    seconds = alternate({"ours": OursStep(trainer), "transformers": HFStep(hf, args.device, bf16)}, samples, args)
    tokens = args.batch * args.tokens_per_sample
    wps = {n: tokens / s for n, s in seconds.items()}
    fpt = train_flops(model, shape, args, hf.config.vocab_size)
    mfu = {n: w * fpt / 1e9 / max(peaks[dtype]) for n, w in wps.items()} if dtype in peaks else {}
    row = {"model": model, "shape": name, "dtype": dtype, "params": n_params, "wps": wps, "fpt": fpt,
           "ratio": wps["ours"] / wps["transformers"], "load": f"{load_before} -> {load_text()}"}
    share = {n: f" ({mfu[n]:.0%} of the {dtype} peak)" if mfu else "" for n in wps}
    print(f"train {model} {name} {dtype} ({n_params / 1e6:.1f}M parameters): ours {wps['ours']:,.0f} words/s"
          f"{share['ours']}, transformers {wps['transformers']:,.0f} words/s{share['transformers']}, "
          f"ratio {row['ratio']:.2f}x (load {row['load']})", flush=True)
    return row


def generate_all(args: argparse.Namespace, model: str, shape: Tuple[int, int, int, int], work: str,
                 samples: List[Dict[str, Any]]) -> None:
    """The decoding comparisons of ``model`` at ``shape`` (float32)."""
    from fairseq.hub_utils import GeneratorHubInterface

    cfg, task, trainer = build_ours(args, model, shape, work, False)
    net = trainer.model.cpu().eval() if args.device == "cpu" else trainer.model.eval()
    hf = export_to_hf(cfg, task, net, os.path.join(work, "hf")).to(args.device).eval()
    net.to(args.device)
    hub = GeneratorHubInterface(cfg, task, [net]).to(args.device)
    for batch in (1, 8):
        prompts = samples[0]["target"].repeat(8, 1)[:batch, :8]
        for sampling in (False, True):
            rate = decode_rates(hub, hf, prompts, args, sampling)
            print(f"generate {model} {'sampling top-10' if sampling else 'greedy':>15}, batch {batch}: ours "
                  f"{rate['ours']:,.0f} tokens/s, transformers {rate['transformers']:,.0f} tokens/s, ratio "
                  f"{rate['ours'] / rate['transformers']:.2f}x (load {load_text()})", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the comparisons the command line asks for; 0 when done."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.dry_run:
        for line in plan(args, (args.dtypes or "fp32,bf16").split(",")):
            print(line)
        return 0
    load_before = load_text()
    print(f"device {args.device}, {torch.get_num_threads()} threads; torch {torch.__version__}; load {load_before}",
          flush=True)
    peaks: Dict[str, List[float]] = {}
    measure_peaks(args, peaks)
    dtypes = args.dtypes.split(",") if args.dtypes else ["fp32", "bf16"]
    slow = slow_bf16_note({k: v[-1] for k, v in peaks.items()})
    # without bf16 matmul support the bf16 "peak" is a probe's slow rate, no ceiling: no bf16 MFU
    mfu_peaks = {k: v for k, v in peaks.items() if not (slow and k == "bf16")}
    if slow:
        print(("note: " + slow) + ("" if args.dtypes else "; bf16 left out (--dtypes fp32,bf16 runs it anyway)"))
        if not args.dtypes:
            dtypes = ["fp32"]
    from fairseq.data import Dictionary

    work = tempfile.mkdtemp(prefix="vs_hf_")
    d = Dictionary()
    for i in range(args.vocab - d.nspecial):
        d.add_symbol(f"w{i}")
    d.save(os.path.join(work, "dict.txt"))
    samples = batches(args, args.warmup + args.steps)
    started = time.perf_counter()
    rows = []
    for model in args.model.split(","):
        for name, shape in shapes(args):
            for dtype in dtypes:
                rows.append(train_one(args, model, name, shape, dtype, work, samples, mfu_peaks))
        if not args.no_generate:
            generate_all(args, model, shapes(args)[0][1], work, samples)
    measure_peaks(args, peaks)
    print()
    print("| model | shape | precision | ours words/s | transformers words/s | ratio | MFU ours / transformers "
          "| load (1, 5, 15 min) before -> after |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = ""
        if r["dtype"] in mfu_peaks:  # against the higher of the start and end peaks
            mfu = " / ".join(f"{r['wps'][n] * r['fpt'] / 1e9 / max(mfu_peaks[r['dtype']]):.0%}"
                             for n in ("ours", "transformers"))
        print(f"| {r['model']} | {r['shape']} | {r['dtype']} | {r['wps']['ours']:,.0f} | "
              f"{r['wps']['transformers']:,.0f} | **{r['ratio']:.2f}** | {mfu} | {r['load']} |")
    print()
    print("matmul peaks (2048^3) at the start / end: " + "; ".join(
        f"{k} {' / '.join(gflops_text(x) for x in v)} GFLOP/s" for k, v in peaks.items())
        + "; MFU against the higher peak of the precision used")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_text()}; "
          f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
