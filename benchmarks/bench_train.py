#!/usr/bin/env python3
"""Training speed of our Trainer against a plain PyTorch loop of the same model and batches.

Both train a transformer_lm (2 layers, embed 128, ffn 512, 4 heads) with Adam on the same
pre-collated batches of the demo corpus (tokens_per_sample 128, max_tokens 2048), so data loading
is out of the comparison. The two loops alternate update by update, so both see the same machine load; the
median update speed is reported (the mean too).

    python benchmarks/bench_train.py [--data DATA_BIN] [--steps 30] [--rounds 5]

Prints words per second of each and their ratio (ours / plain); the goal is >= 0.9.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

OVERRIDES = [
    "task.tokens_per_sample=128", "task.sample_break_mode=none",
    "model.decoder_layers=2", "model.decoder_embed_dim=128", "model.decoder_input_dim=128",
    "model.decoder_output_dim=128", "model.decoder_ffn_embed_dim=512",
    "model.decoder_attention_heads=4", "model.share_decoder_input_output_embed=true",
    "dataset.max_tokens=2048", "optimizer=adam", "optimization.lr=[0.0005]",
    "lr_scheduler.warmup_updates=4000", "common.log_interval=100",
]


def demo_data(directory: str) -> str:
    text = os.path.join(directory, "text")
    dest = os.path.join(directory, "data-bin")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "prepare_demo_corpus.py"), "--out", text],
                   check=True, capture_output=True)
    from fairseq_cli import preprocess

    preprocess.cli_main(["--only-source", "--trainpref", f"{text}/train.txt",
                         "--validpref", f"{text}/valid.txt", "--destdir", dest, "--workers", "2"])
    return dest


def build(data: str):
    from fairseq import tasks
    from fairseq.dataclass.initialize import compose_config
    from fairseq.trainer import Trainer

    cfg = compose_config([f"task.data={data}"] + OVERRIDES)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return cfg, task, model, criterion, Trainer


def batches(cfg, task, n):
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=cfg.dataset.max_tokens,
                                  max_positions=128, seed=1).next_epoch_itr(shuffle=True)
    out = []
    for sample in itr:
        if sample and sample["ntokens"] >= 1900:  # full batches only: equal work per step
            out.append(sample)
        if len(out) == n:
            break
    return out


def run_ours(trainer, samples, stats):
    """What the training loop does per update: train_step, collect stats, reduce at log time."""
    start = time.perf_counter()
    for sample in samples:
        stats.add(trainer.train_step([sample]))
        if trainer.get_num_updates() % trainer.cfg.common.log_interval == 0:
            stats.reduce(trainer.task, trainer.criterion, 0.0, start)
            stats.reset()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return time.perf_counter() - start


def run_plain(model, optimizer, samples, pad, lr):
    model.train()
    for group in optimizer.param_groups:  # follow the trainer's schedule: same arithmetic
        group["lr"] = lr
    start = time.perf_counter()
    for sample in samples:
        logits, _ = model(sample["net_input"]["src_tokens"])
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), sample["target"].view(-1),
                               ignore_index=pad, reduction="sum") / sample["ntokens"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a preprocessed data directory (default: build the demo corpus)")
    parser.add_argument("--steps", type=int, default=30, help="distinct batches")
    parser.add_argument("--rounds", type=int, default=4, help="passes over the batches")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or demo_data(tmp)
        cfg, task, model, criterion, Trainer = build(data)
        trainer = Trainer(cfg, task, model, criterion)
        torch.manual_seed(1)
        plain_model = task.build_model(cfg.model)
        device = trainer.device
        plain_model.to(device)
        plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=5e-4, betas=(0.9, 0.999),
                                      weight_decay=0.0, fused=True)
        samples = batches(cfg, task, args.steps)
        from fairseq.trainer import move_to_device

        samples = [move_to_device(s, device) for s in samples]
        from fairseq.training import IntervalStats

        stats = IntervalStats()
        pad = task.target_dictionary.pad()
        run_ours(trainer, samples[:5], stats)  # warm up both
        run_plain(plain_model, plain_opt, samples[:5], pad, trainer.get_lr())
        ours, plain = [], []  # seconds per word, one entry per update
        for r in range(args.rounds):
            for i, sample in enumerate(samples):
                n = sample["ntokens"]
                if (i + r) % 2 == 0:  # alternate who goes first
                    ours.append(run_ours(trainer, [sample], stats) / n)
                    plain.append(run_plain(plain_model, plain_opt, [sample], pad, trainer.get_lr()) / n)
                else:
                    plain.append(run_plain(plain_model, plain_opt, [sample], pad, trainer.get_lr()) / n)
                    ours.append(run_ours(trainer, [sample], stats) / n)
    # medians: a shared machine's bursts of load hit single updates, not the typical one
    o, p = 1.0 / statistics.median(ours), 1.0 / statistics.median(plain)
    mo, mp = len(ours) / sum(ours), len(plain) / sum(plain)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.rounds} passes x {len(samples)} updates of ~{cfg.dataset.max_tokens} tokens, "
          f"vocabulary {len(task.target_dictionary)}, loops alternating update by update")
    print(f"trainer     {o:10.0f} words/s (median update; mean {mo:.0f})")
    print(f"plain loop  {p:10.0f} words/s (median update; mean {mp:.0f})")
    print(f"ratio trainer/plain = {o / p:.3f}")


if __name__ == "__main__":
    main()
