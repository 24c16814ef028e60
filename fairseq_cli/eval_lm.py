#!/usr/bin/env python3
"""Evaluate a language model: ``fairseq-eval-lm DATA --path CHECKPOINT``.

Prints the loss (base 2) and perplexity over ``--gen-subset`` (default ``test``). The model and
task are rebuilt from the checkpoint's own config; flags given here (``--tokens-per-sample``,
``--max-tokens``, ...) win over it.
"""
import logging
import math
import os
import sys
from typing import Any, Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

logger = logging.getLogger("fairseq_cli.eval_lm")


@torch.no_grad()
def eval_lm(model: torch.nn.Module, task: Any, split: str, max_tokens: Optional[int],
            batch_size: Optional[int], num_workers: int = 0, output_word_probs: bool = False,
            device: Optional[torch.device] = None) -> Dict[str, float]:
    """Token-level loss (base 2) and perplexity of ``model`` on ``split``.

    Returns:
        ``{"loss", "ppl", "ntokens"}``.
    """
    device = device or next(model.parameters()).device
    dataset = task.dataset(split)
    limits = [p for p in (task.max_positions(), model.max_positions()) if p is not None]
    itr = task.get_batch_iterator(
        dataset, max_tokens=max_tokens, max_sentences=batch_size,
        max_positions=min(limits) if limits else None,
        ignore_invalid_inputs=True,
        num_workers=num_workers,
    ).next_epoch_itr(shuffle=False)
    pad = task.target_dictionary.pad()
    total_nll = torch.zeros((), dtype=torch.float64, device=device)
    ntokens = 0
    for sample in itr:
        if not sample:
            continue
        src = sample["net_input"]["src_tokens"].to(device)
        target = sample["target"].to(device)
        net_output = model(src, src_lengths=sample["net_input"]["src_lengths"].to(device))
        lprobs = model.get_normalized_probs(net_output, log_probs=True)  # (B, T, V)
        token_lp = lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
        mask = target.ne(pad)
        total_nll -= token_lp[mask].double().sum()
        ntokens += int(mask.sum())
        if output_word_probs:
            for row_t, row_lp, row_m in zip(target, token_lp, mask):
                words = [f"{task.target_dictionary[int(t)]} [{lp / math.log(2):.2f}]"
                         for t, lp, m in zip(row_t, row_lp.tolist(), row_m) if m]
                logger.info(" ".join(words))
    if ntokens == 0:
        raise ValueError(f"split {split!r} has no tokens to evaluate")
    loss = total_nll.item() / ntokens / math.log(2)
    return {"loss": loss, "ppl": 2.0 ** loss, "ntokens": ntokens}


def _explicit_values(parser, args, argv: List[str]) -> Dict[str, Any]:
    """The values of the flags given on the command line (not defaults): these win over the
    checkpoint's config, even when they equal a default."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    explicit = {}
    for action in parser._actions:
        if action.dest in ("data", "path", "task", "help") or not action.option_strings:
            continue
        if given & set(action.option_strings):
            explicit[action.dest] = getattr(args, action.dest)
    return explicit


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Parse ``fairseq-eval-lm`` flags, evaluate, log and return ``{"loss", "ppl", "ntokens"}``."""
    from fairseq import options
    from fairseq.checkpoint_utils import load_model_for_inference
    from fairseq.logging.progress_bar import setup_logging
    from fairseq_cli.train import run_with_clear_errors

    parser = options.get_eval_lm_parser(input_args=argv)
    args = options.parse_args_and_arch(parser, argv)
    if not args.path:
        parser.error("the checkpoint to evaluate is required: --path CHECKPOINT")
    if not args.data:
        parser.error("the data directory is required: fairseq-eval-lm DATA_DIR --path CHECKPOINT")
    setup_logging()

    def run() -> Dict[str, float]:
        overrides = _explicit_values(parser, args, list(sys.argv[1:] if argv is None else argv))
        model, task, cfg = load_model_for_inference(args.path, overrides=overrides, data=args.data)
        use_cuda = torch.cuda.is_available() and not args.cpu
        device = torch.device("cuda" if use_cuda else "cpu")
        model.to(device)
        split = args.gen_subset
        task.load_dataset(split)
        max_tokens = args.max_tokens or (None if args.batch_size else cfg.dataset.max_tokens or 4096)
        stats = eval_lm(model, task, split, max_tokens, args.batch_size, num_workers=0,
                        output_word_probs=args.output_word_probs, device=device)
        logger.info("evaluated %d tokens of %r", stats["ntokens"], split)
        logger.info("loss (base 2): %.4f, perplexity: %.2f", stats["loss"], stats["ppl"])
        return stats

    return run_with_clear_errors(run)


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-eval-lm``."""
    main(argv)


if __name__ == "__main__":
    cli_main()
