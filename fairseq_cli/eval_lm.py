#!/usr/bin/env python3
"""Evaluate a language model: ``fairseq-eval-lm DATA --path CHECKPOINT``.

Logs ``Evaluated N tokens in Xs (Y tokens/s)`` and ``Loss (base 2): L, Perplexity: P`` for
``--gen-subset`` (default ``test``). The model and task are rebuilt from the checkpoint's own
config; the values given here (``--tokens-per-sample``, ``--max-tokens``, ...) win over it.
``--context-window N`` scores blocks of ``tokens_per_sample - N`` tokens, each with up to ``N``
tokens of the text before it as context.
"""
import logging
import math
import os
import sys
from argparse import ArgumentParser, Namespace
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from fairseq.utils import move_to_device  # noqa: E402
from fairseq_cli.common import (  # noqa: E402
    model_overrides, overrides_from_argv, overrides_from_config, progress_settings, run_with_clear_errors, setting,
    setup_logging,
)

logger = logging.getLogger("fairseq_cli.eval_lm")

# Subword markers --post-process knows: the value given -> the suffix of a continued token.
BPE_CONTINUATION = {"subword_nmt": "@@", "@@ ": "@@"}


class WordStat:
    """Statistics of one word over an evaluation (``--output-word-stats``).

    Args:
        word: the word (subwords joined).
        is_bpe: whether it was made of several subword tokens.
    """

    def __init__(self, word: str, is_bpe: bool) -> None:
        self.word = word
        self.is_bpe = is_bpe
        self.log_prob = 0.0
        self.next_word_prob = 0.0
        self.count = 0
        self.missing_next_words = 0

    def add(self, log_prob: float, next_word_prob: Optional[float]) -> None:
        """Count one occurrence with its log-probability and that of the word after it
        (``None`` when no scored word follows in the same sample)."""
        if next_word_prob is not None:
            self.next_word_prob += next_word_prob
        else:
            self.missing_next_words += 1
        self.log_prob += log_prob
        self.count += 1

    def __str__(self) -> str:
        return "\t".join(str(v) for v in (self.word, self.count, self.log_prob, self.is_bpe,
                                          self.next_word_prob, self.count - self.missing_next_words))


def _bpe_tokens(dictionary: Any, post_process: Optional[str]) -> Tuple[Optional[Set[int]], int]:
    """The ids of subword tokens continued by the next one, and the marker length.

    Raises:
        ConfigError: for a ``post_process`` other than ``subword_nmt`` / ``'@@ '``.
    """
    from fairseq.errors import ConfigError

    if post_process is None:
        return None, 0
    if post_process not in BPE_CONTINUATION:
        raise ConfigError(f"common_eval.post_process={post_process!r} is not supported by "
                          f"fairseq-eval-lm: use one of {sorted(BPE_CONTINUATION)} (--post-process) "
                          "or leave it unset")
    marker = BPE_CONTINUATION[post_process]
    return {i for i in range(len(dictionary)) if dictionary[i].endswith(marker)}, len(marker)


@torch.no_grad()
def eval_lm(models: Sequence[torch.nn.Module], source_dictionary: Any, batch_iterator: Iterable[Dict[str, Any]],
            post_process: Optional[str] = None, output_word_probs: bool = False,
            output_word_stats: bool = False, target_dictionary: Optional[Any] = None,
            softmax_batch: int = 0, remove_bos_token: bool = False,
            device: Optional[torch.device] = None) -> Dict[str, float]:
    """Score every target token of ``batch_iterator`` and return the mean loss.

    Args:
        models: one model, or an ensemble whose probabilities are averaged.
        source_dictionary: to print words and find subword tokens.
        batch_iterator: batches (e.g. from ``task.eval_lm_dataloader``).
        post_process: ``"subword_nmt"`` (or ``"@@ "``): a token ending in ``@@`` is joined to
            the next one, whose score becomes the sum of both, and counts as no word.
        output_word_probs: log each sample's words with their log-probabilities (natural log).
        output_word_stats: log per-word statistics at the end (see :class:`WordStat`).
        target_dictionary: the output vocabulary (default: ``source_dictionary``).
        softmax_batch: normalize over at most this many tokens at a time (0: no limit).
        remove_bos_token: do not score a leading beginning-of-sentence target.
        device: where to run (default: the first model's device).

    Returns:
        ``{"loss": mean negative log-likelihood in base 2, "perplexity": 2 ** loss,
        "ntokens": number of scored tokens}``.

    Raises:
        ValueError: if no token was scored.
    """
    from fairseq.logging.meters import StopwatchMeter
    from fairseq.sequence_scorer import SequenceScorer

    target_dictionary = target_dictionary if target_dictionary is not None else source_dictionary
    device = device if device is not None else next(models[0].parameters()).device
    scorer = SequenceScorer(target_dictionary, softmax_batch)
    timer = StopwatchMeter()
    bpe_toks, bpe_len = _bpe_tokens(source_dictionary, post_process)
    word_stats: Dict[str, WordStat] = {}
    score_sum = torch.zeros((), dtype=torch.float64)
    count = 0

    for sample in batch_iterator:
        if not sample or "net_input" not in sample:
            continue
        sample = move_to_device(sample, device)
        timer.start()
        hypos = scorer.generate(models, sample)
        timer.stop(int(sample["ntokens"]))
        for row, hypos_i in enumerate(hypos):
            tokens = hypos_i[0]["tokens"]
            pos_scores = hypos_i[0]["positional_scores"].float()
            if remove_bos_token and tokens.numel() and int(tokens[0]) == target_dictionary.bos():
                tokens, pos_scores = tokens[1:], pos_scores[1:]
            skipped = 0
            if bpe_toks is not None:
                for i in range(tokens.numel() - 1):
                    if int(tokens[i]) in bpe_toks:
                        skipped += 1
                        pos_scores[i + 1] += pos_scores[i]
                        pos_scores[i] = 0
            infinite = torch.isinf(pos_scores)
            if infinite.any():
                logger.info("skipping tokens with inf scores: %s",
                            target_dictionary.string(tokens[infinite]))
                pos_scores = pos_scores[~infinite]
                tokens = tokens[~infinite]
            score_sum += pos_scores.double().sum().cpu()
            count += pos_scores.numel() - skipped
            if output_word_probs or output_word_stats:
                words = _word_scores(tokens, pos_scores, source_dictionary, bpe_toks, bpe_len, word_stats)
                if output_word_probs:
                    sample_id = int(sample["id"][row])
                    logger.info("%d %s", sample_id, "\t".join(f"{w} [{p:2f}]" for w, p in words))

    if count == 0:
        raise ValueError("no token was scored: the batches hold no targets")
    loss = -score_sum.item() / count / math.log(2)
    rate = timer.n / timer.sum if timer.sum > 0 else 0.0
    logger.info("Evaluated %s tokens in %.1fs (%.2f tokens/s)", f"{timer.n:,}", timer.sum, rate)
    if output_word_stats:
        for stat in sorted(word_stats.values(), key=lambda s: s.count, reverse=True):
            logger.info("%s", stat)
    return {"loss": loss, "perplexity": 2.0 ** loss, "ntokens": count}


def _word_scores(tokens: torch.Tensor, pos_scores: torch.Tensor, dictionary: Any,
                 bpe_toks: Optional[Set[int]], bpe_len: int,
                 word_stats: Dict[str, WordStat]) -> List[Tuple[str, float]]:
    """Join subwords into words, record their stats and return ``[(word, log-prob)]``."""
    words: List[Tuple[str, float]] = []
    word, is_bpe = "", False
    scores = pos_scores.tolist()
    for i, index in enumerate(tokens.tolist()):
        word += dictionary[index]
        if bpe_toks is not None and index in bpe_toks:
            word, is_bpe = word[:-bpe_len], True
            continue
        words.append((word, scores[i]))
        next_prob = next((s for s in scores[i + 1:] if s != 0), None)
        word_stats.setdefault(word, WordStat(word, is_bpe)).add(scores[i], next_prob)
        word, is_bpe = "", False
    return words


# -- the command ---------------------------------------------------------------------------------
def evaluate(path: Optional[str], data: Optional[str], overrides: Dict[str, Any]) -> Dict[str, float]:
    """Rebuild the checkpoint's model and task (``overrides`` winning), score ``gen_subset``, log
    and return the results of :func:`eval_lm`.

    Raises:
        ConfigError: for a missing path or data, a negative or too large context window,
            samples longer than the model's positions, or an empty split.
        CheckpointError: for an unreadable checkpoint.
        FileNotFoundError: for a split the data directory lacks.
    """
    from fairseq import checkpoint_utils, tasks
    from fairseq.errors import ConfigError
    from fairseq.logging.progress_bar import progress_bar

    if not path:
        raise ConfigError("the checkpoint to evaluate is required: --path CHECKPOINT "
                          "(common_eval.path)")
    overrides = dict(overrides)
    overrides.update(model_overrides(setting(overrides, "model_overrides", "{}", pop=True)))
    from fairseq.cpu_threads import given_cpu_threads, local_processes, set_cpu_threads

    logger.info("%s", set_cpu_threads(given_cpu_threads(overrides), local_processes()))
    logger.info("loading model(s) from %s", path)
    import os

    arg_overrides = dict(overrides)
    if data is not None:
        arg_overrides["data"] = data
    # an ensemble: a.pt:b.pt (fairseq's separator); probabilities are averaged
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        str(path).split(os.pathsep), arg_overrides=arg_overrides)
    context_window = int(cfg.eval_lm.context_window)
    tokens_per_sample = int(cfg.task.tokens_per_sample)
    if context_window < 0:
        raise ConfigError(f"eval_lm.context_window={context_window} is negative: give 0 (no context) "
                          "or a positive number of tokens (--context-window)")
    if context_window >= tokens_per_sample:
        raise ConfigError(
            f"eval_lm.context_window={context_window} leaves no new tokens in blocks of "
            f"task.tokens_per_sample={tokens_per_sample} (each block scores tokens_per_sample - "
            f"context_window tokens): give a --context-window below {tokens_per_sample}")
    limits = [m.max_positions() for m in models if m.max_positions() is not None]
    positions = min(limits) if limits else None
    if positions is not None and tokens_per_sample > positions:
        raise ConfigError(
            f"task.tokens_per_sample={tokens_per_sample} exceeds the {positions} positions of the "
            f"model in {path} (model.max_target_positions): give --tokens-per-sample {positions} "
            "or less (with --context-window, context included)")
    if context_window > 0:
        # blocks shrink by the context so that block + context fit tokens_per_sample
        cfg.task.tokens_per_sample = tokens_per_sample - context_window
        task = tasks.setup_task(cfg.task)

    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    device = torch.device("cuda" if use_cuda else "cpu")
    from fairseq.precision import cast_for_inference

    cast_for_inference(models, bool(cfg.common.bf16), device)  # --bf16: weights held in bfloat16
    for model in models:
        model.to(device)
        logger.info("num. model params: %s", f"{sum(p.numel() for p in model.parameters()):,}")
    split = str(cfg.dataset.gen_subset)
    task.load_dataset(split)
    dataset = task.dataset(split)
    logger.info("%s %s %s examples", cfg.task.data, split, f"{len(dataset):,}")
    if len(dataset) == 0:
        raise ConfigError(f"split {split!r} of {cfg.task.data} has no samples to evaluate: choose "
                          "another --gen-subset")
    from fairseq.data.data_utils import name_batch_limits, positions_within_batch

    max_tokens = cfg.dataset.max_tokens or 36000
    skip = bool(cfg.dataset.skip_invalid_size_inputs_valid_test)
    # optional: a task other than language_modeling (a plugin's) may have no tokens_per_sample
    with name_batch_limits(split, cfg.task.data, "dataset.max_tokens", cfg.task.get("tokens_per_sample"), skip):
        itr = task.eval_lm_dataloader(
            dataset=dataset,
            max_tokens=max_tokens,
            batch_size=cfg.dataset.batch_size,
            # with --skip-invalid-size-inputs-valid-test a block no batch can hold is skipped too
            max_positions=positions_within_batch(positions, max_tokens) if skip else positions,
            num_workers=int(cfg.dataset.num_workers),
            data_buffer_size=10,  # the dataset node declares no data_buffer_size: this was always the value
            context_window=context_window,
        )
    itr = progress_bar(itr, **progress_settings(overrides))
    results_file = _results_handler(cfg.common_eval.results_path, split)
    try:
        results = eval_lm(
            models=models, source_dictionary=task.source_dictionary, batch_iterator=itr,
            post_process=cfg.common_eval.post_process, output_word_probs=bool(cfg.eval_lm.output_word_probs),
            output_word_stats=bool(cfg.eval_lm.output_word_stats), target_dictionary=task.target_dictionary,
            softmax_batch=int(cfg.eval_lm.softmax_batch),
            # optional: add_bos_token belongs to language_modeling; a plugin task's node may lack it
            remove_bos_token=bool(cfg.task.get("add_bos_token", False)), device=device,
        )
        logger.info("Loss (base 2): %.4f, Perplexity: %.2f", results["loss"], results["perplexity"])
    finally:
        itr.close()
        if results_file is not None:
            logger.removeHandler(results_file)
            results_file.close()
    return results


def _results_handler(results_path: Optional[str], split: str) -> Optional[logging.Handler]:
    """With ``--results-path DIR``, everything this command reports (word probabilities and
    statistics, the summary) also goes to ``DIR/eval_lm-SPLIT.txt``, one record a line."""
    if not results_path:
        return None
    import os

    from fairseq.errors import ConfigError

    try:
        os.makedirs(results_path, exist_ok=True)
        handler = logging.FileHandler(os.path.join(results_path, f"eval_lm-{split}.txt"), mode="w",
                                      encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"common_eval.results_path={results_path!r} cannot be written: "
                          f"{e.strerror}; give a writable directory (--results-path)") from None
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return handler


def _parse(argv: Optional[List[str]]) -> Tuple[ArgumentParser, Namespace]:
    from fairseq import options

    parser = options.get_eval_lm_parser(input_args=argv)
    args = options.parse_args_and_arch(parser, argv)
    if not args.path:
        parser.error("the checkpoint to evaluate is required: --path CHECKPOINT")
    if not args.data:
        parser.error("the data directory is required: fairseq-eval-lm DATA_DIR --path CHECKPOINT")
    return parser, args


def main(cfg: Union[DictConfig, Namespace, List[str], None] = None, **unused_kwargs: Any) -> Dict[str, float]:
    """Evaluate the checkpoint ``common_eval.path`` on ``dataset.gen_subset`` of ``task.data``.

    Args:
        cfg: a config (DictConfig), a legacy namespace (``options.parse_args_and_arch(
            options.get_eval_lm_parser(), [...])``), or the command-line arguments as a list
            (``None``: ``sys.argv[1:]``). With a config or namespace, the values that differ
            from their defaults win over the checkpoint's config; with arguments, the flags
            given win (even at their default values), and errors a user can cause end the
            process with one line.

    Returns:
        ``{"loss" (base 2), "perplexity", "ntokens"}``.
    """

    if cfg is None or isinstance(cfg, (list, tuple)):
        argv = list(sys.argv[1:] if cfg is None else cfg)
        parser, args = _parse(argv)
        setup_logging()
        overrides = overrides_from_argv(parser, args, argv)
        return run_with_clear_errors(evaluate, args.path, args.data, overrides)
    if isinstance(cfg, Namespace):
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        cfg = convert_namespace_to_omegaconf(cfg)
    setup_logging()
    data = None if OmegaConf.is_missing(cfg.task, "data") else cfg.task.data
    return evaluate(cfg.common_eval.path, data, overrides_from_config(cfg))


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-eval-lm``."""
    # everything it runs, plugin import included, ends a user error with one line

    run_with_clear_errors(main, argv)


if __name__ == "__main__":
    cli_main()
