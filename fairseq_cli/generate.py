"""``fairseq-generate``: continue every sentence of a data split with a trained language model.

    fairseq-generate DATA --task language_modeling --path checkpoints/checkpoint_best.pt \\
        --gen-subset valid --sample-break-mode eos --beam 5 --max-len-b 50

For each sentence (the prompt) it prints fairseq's lines: ``S-id`` the prompt, ``T-id`` the
reference, then for each of the ``--nbest`` hypotheses ``H-id score text`` (BPE kept),
``D-id score text`` (detokenized) and ``P-id`` the per-token scores, all scores in base 2.
"""
import logging
import math
import sys
import time
from argparse import Namespace
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple, Union

import torch
from omegaconf import DictConfig, OmegaConf

from fairseq.utils import move_to_device

logger = logging.getLogger("fairseq_cli.generate")

def parse(argv: Sequence[str], interactive: bool = False) -> Tuple[DictConfig, Dict[str, Any]]:
    """The command's config and the values that win over the checkpoint's (the flags given),
    from legacy command-line arguments; the namespace goes no further than this edge."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli.common import overrides_from_argv

    parser = options.get_generation_parser(interactive=interactive, default_task="language_modeling",
                                           input_args=list(argv))
    args = options.parse_args_and_arch(parser, list(argv))
    if not args.path:
        parser.error("the checkpoint is required: --path CHECKPOINT (a.pt:b.pt for an ensemble)")
    return convert_namespace_to_omegaconf(args), overrides_from_argv(parser, args, argv)


def as_config(cfg: Union[Namespace, DictConfig]) -> Tuple[DictConfig, Dict[str, Any]]:
    """The command's config and the values that win over the checkpoint's, for a legacy
    namespace or a composed config: those that differ from their defaults."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.errors import ConfigError
    from fairseq_cli.common import overrides_from_config

    if isinstance(cfg, Namespace):
        cfg = convert_namespace_to_omegaconf(cfg)
    if not cfg.common_eval.path:
        raise ConfigError("the checkpoint is required: common_eval.path=CHECKPOINT (--path in the "
                          "legacy door; a.pt:b.pt for an ensemble)")
    return cfg, overrides_from_config(cfg)


def load_ensemble(cfg: DictConfig, overrides: Dict[str, Any]):
    """``(models, saved_cfg, task)`` of ``common_eval.path`` (``a.pt:b.pt``), with ``overrides``
    and ``common_eval.model_overrides`` winning over the checkpoint's config."""
    import os

    from fairseq import checkpoint_utils
    from fairseq_cli.common import model_overrides, setting

    overrides = dict(overrides)
    setting(overrides, "model_overrides", pop=True)
    overrides.update(model_overrides(cfg.common_eval.model_overrides or "{}"))
    # optional: an evaluation command may be given no task (the checkpoint's is used)
    if cfg.get("task") is not None and not OmegaConf.is_missing(cfg.task, "data") and cfg.task.data:
        overrides["data"] = cfg.task.data
    path = str(cfg.common_eval.path)
    logger.info("loading model(s) from %s", path)
    return checkpoint_utils.load_model_ensemble_and_task(path.split(os.pathsep), arg_overrides=overrides)


def set_threads(cfg: DictConfig) -> None:
    """Set and log the CPU threads (``common.cpu_threads``, given to this command; never the
    checkpoint's training value), as training does."""
    from fairseq.cpu_threads import local_processes, set_cpu_threads

    logger.info("%s", set_cpu_threads(int(cfg.common.cpu_threads or 0), local_processes()))


def generation_settings(cfg: DictConfig) -> Dict[str, Any]:
    """The command's generation settings (``cfg.generation``) as a plain dict."""
    return OmegaConf.to_container(cfg.generation, resolve=True)


def strip_pad(tokens: torch.Tensor, pad: int) -> torch.Tensor:
    return tokens[tokens.ne(pad)]


def prompts_of(sample: Dict[str, Any], bos: int, prefix_size: int) -> Optional[torch.Tensor]:
    """The tokens to force at the start of each hypothesis: ``--prefix-size`` tokens of the
    reference, or else the sample's source without its leading BOS."""
    if prefix_size > 0:
        return sample["target"][:, :prefix_size]
    src = sample["net_input"]["src_tokens"]
    if src.numel() == 0:
        return None
    if bool(src[:, 0].eq(bos).all()):
        src = src[:, 1:]
    return src


class Printer:
    """fairseq's output lines, scores in base 2."""

    def __init__(self, cfg: DictConfig, tgt_dict: Any, bpe: Any, tokenizer: Any, out: TextIO):
        self.nbest = int(cfg.generation.nbest or 1)
        self.post_process = cfg.common_eval.post_process
        self.quiet = bool(cfg.common_eval.quiet)
        self.print_step = bool(cfg.generation.print_step)
        self.tgt_dict = tgt_dict
        self.bpe, self.tokenizer = bpe, tokenizer
        self.out = out

    def detok(self, text: str) -> str:
        if self.bpe is not None:
            text = self.bpe.decode(text)
        if self.tokenizer is not None:
            text = self.tokenizer.decode(text)
        return text

    def string(self, tokens: torch.Tensor) -> str:
        return self.tgt_dict.string(tokens, self.post_process)

    def hypotheses(self, sid: Union[int, str], hypos: List[Dict[str, Any]]) -> int:
        """Print the H-/D-/P- lines; return the number of tokens printed."""
        ntokens = 0
        for hypo in hypos[: self.nbest]:
            tokens = hypo["tokens"].int().cpu()
            text = self.string(tokens)
            score = float(hypo["score"]) / math.log(2)
            ntokens += len(tokens)
            if self.quiet:
                continue
            print(f"H-{sid}\t{score}\t{text}", file=self.out)
            print(f"D-{sid}\t{score}\t{self.detok(text)}", file=self.out)
            positional = (hypo["positional_scores"].float() / math.log(2)).tolist()
            print(f"P-{sid}\t" + " ".join(f"{x:.4f}" for x in positional), file=self.out)
            if self.print_step:  # the decoding step at which the hypothesis ended
                print(f"I-{sid}\t{hypo.get('steps', len(tokens) - 1)}", file=self.out)
        return ntokens


def build_encoders(saved_cfg: DictConfig, cfg: DictConfig):
    """The BPE and tokenizer: those the command chose (``--bpe``/``bpe=NAME``), else the
    checkpoint's."""
    from fairseq.data.encoders import build_bpe, build_tokenizer

    def chosen(group: str) -> Any:
        # optional: no BPE / tokenizer may be chosen, by the command or by the checkpoint
        node = cfg.get(group)
        return node if node is not None and node.get("_name") else saved_cfg.get(group)  # optional: as above

    return build_bpe(chosen("bpe")), build_tokenizer(chosen("tokenizer"))


def generate(cfg: DictConfig, overrides: Dict[str, Any]) -> Dict[str, float]:
    """Load the checkpoint ``common_eval.path`` (``overrides`` winning over its config), generate
    for every sentence of ``dataset.gen_subset``, print; return the throughput."""
    import os

    from fairseq.errors import ConfigError
    from fairseq.logging.progress_bar import progress_bar
    from fairseq.sequence_generator import GenerationSettingError, build_generator

    set_threads(cfg)
    models, saved_cfg, task = load_ensemble(cfg, overrides)
    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    device = torch.device("cuda" if use_cuda else "cpu")
    from fairseq.precision import cast_for_inference

    cast_for_inference(models, bool(cfg.common.bf16), device)  # --bf16: weights held in bfloat16
    for model in models:
        model.to(device)
    if cfg.common.seed is not None and not cfg.generation.no_seed_provided:
        torch.manual_seed(int(cfg.common.seed))
    tgt_dict = task.target_dictionary
    try:
        generator = build_generator(models, generation_settings(cfg), tgt_dict)
    except GenerationSettingError as e:
        raise ConfigError(str(e)) from None
    bpe, tokenizer = build_encoders(saved_cfg, cfg)

    split = str(cfg.dataset.gen_subset)
    data_cfg = cfg.dataset
    task.load_dataset(split)
    dataset = task.dataset(split)
    if len(dataset) == 0:
        raise ConfigError(f"split {split!r} of {saved_cfg.task.data} has no sentences: choose another "
                          "--gen-subset")
    from fairseq.data.data_utils import name_batch_limits, positions_within_batch

    positions = min(m.max_positions() for m in models)
    skip = bool(data_cfg.skip_invalid_size_inputs_valid_test)
    with name_batch_limits(split, saved_cfg.task.data, "dataset.max_tokens",
                           # optional: a task other than language_modeling (a plugin's) may have no tokens_per_sample
                           saved_cfg.task.get("tokens_per_sample"), skip):
        itr = task.get_batch_iterator(
            dataset, max_tokens=data_cfg.max_tokens, max_sentences=data_cfg.batch_size,
            # with --skip-invalid-size-inputs-valid-test a sample no batch can hold is skipped too
            max_positions=positions_within_batch(positions, data_cfg.max_tokens) if skip else positions,
            ignore_invalid_inputs=skip,
            required_batch_size_multiple=int(data_cfg.required_batch_size_multiple),
            num_workers=int(data_cfg.num_workers),
        ).next_epoch_itr(shuffle=False)
    progress = progress_bar(itr, log_format=cfg.common.log_format, log_interval=cfg.common.log_interval,
                            log_seconds=cfg.common.log_seconds,
                            no_progress_bar=bool(cfg.common.no_progress_bar))

    out: TextIO = sys.stdout
    results_path = cfg.common_eval.results_path
    if results_path:
        os.makedirs(results_path, exist_ok=True)
        out = open(os.path.join(results_path, f"generate-{split}.txt"), "w", encoding="utf-8")
    printer = Printer(cfg, tgt_dict, bpe, tokenizer, out)
    src_dict = task.source_dictionary
    # optional: add_bos_token belongs to language_modeling; a plugin task's node may lack it
    bos = src_dict.bos() if saved_cfg.task.get("add_bos_token", False) else src_dict.eos()
    prefix_size = int(cfg.generation.prefix_size or 0)
    score_reference = bool(cfg.generation.score_reference)
    sentences = tokens = 0
    warned_no_room = False
    start = time.perf_counter()
    try:
        for sample in progress:
            sample = move_to_device(sample, device)
            if not sample:
                continue
            prefix = None if score_reference else prompts_of(sample, bos, prefix_size)
            if prefix is not None and not warned_no_room and prefix.size(1) + 1 >= positions:
                warned_no_room = True
                logger.warning(
                    "the prompts fill the model's %d positions (blocks of task.tokens_per_sample=%s), so "
                    "no token can be added and the H- lines repeat the S- lines: give "
                    "--sample-break-mode eos (one sentence per prompt) or --prefix-size K (continue "
                    # optional: a task other than language_modeling (a plugin's) may have no tokens_per_sample
                    "the first K tokens of each block)", positions, saved_cfg.task.get("tokens_per_sample"))
            with torch.no_grad():
                if score_reference:
                    hypos = generator.generate(models, sample)
                else:
                    hypos = generator.generate(models, sample, prefix_tokens=prefix, bos_token=bos)
            for i, sid in enumerate(sample["id"].tolist()):
                src = strip_pad(sample["net_input"]["src_tokens"][i], tgt_dict.pad())
                if len(src) and int(src[0]) == bos:
                    src = src[1:]
                if not printer.quiet:
                    print(f"S-{sid}\t{printer.detok(printer.string(src))}", file=out)
                    if sample.get("target") is not None:
                        target = strip_pad(sample["target"][i], tgt_dict.pad())
                        print(f"T-{sid}\t{printer.detok(printer.string(target))}", file=out)
                tokens += printer.hypotheses(sid, hypos[i])
                sentences += 1
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    elapsed = max(time.perf_counter() - start, 1e-9)
    logger.info("NOTE: hypothesis and token scores are output in base 2")
    logger.info("Translated %s sentences (%s tokens) in %.1fs (%.2f sentences/s, %.2f tokens/s)",
                f"{sentences:,}", f"{tokens:,}", elapsed, sentences / elapsed, tokens / elapsed)
    return {"sentences": sentences, "tokens": tokens, "seconds": elapsed}


def main(args: Union[Namespace, DictConfig, List[str], None] = None) -> Dict[str, float]:
    """Run generation.

    Args:
        args: a composed config (``fairseq-hydra-generate``), a legacy namespace from
            ``options.parse_args_and_arch(options.get_generation_parser(), [...])``, or the
            command-line arguments (``None``: ``sys.argv[1:]``). With arguments, the flags given
            win over the checkpoint's config (even at their defaults) and errors a user can
            cause end the process with one line; with a config or namespace, the values that
            differ from their defaults win.
    """
    from fairseq_cli.common import run_with_clear_errors, setup_logging

    setup_logging()
    if args is None or isinstance(args, (list, tuple)):
        argv = list(sys.argv[1:] if args is None else args)
        cfg, overrides = run_with_clear_errors(parse, argv)
        return run_with_clear_errors(generate, cfg, overrides)
    return generate(*as_config(args))


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-generate``."""
    # everything it runs, plugin import included, ends a user error with one line
    from fairseq_cli.common import run_with_clear_errors

    run_with_clear_errors(main, argv)


if __name__ == "__main__":
    cli_main()
