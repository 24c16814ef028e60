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
from argparse import ArgumentParser, Namespace
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple, Union

import torch
from omegaconf import DictConfig

from fairseq.utils import move_to_device

logger = logging.getLogger("fairseq_cli.generate")

# flags that select the checkpoint or the data; they are not config overrides
NOT_OVERRIDES = {"data", "path", "task", "help", "_name"}


def parse(argv: Sequence[str], interactive: bool = False) -> Tuple[ArgumentParser, Namespace]:
    from fairseq import options

    parser = options.get_generation_parser(interactive=interactive, default_task="language_modeling",
                                           input_args=list(argv))
    args = options.parse_args_and_arch(parser, list(argv))
    if not args.path:
        parser.error("the checkpoint is required: --path CHECKPOINT (a.pt:b.pt for an ensemble)")
    return parser, args


def explicit_overrides(parser: ArgumentParser, args: Namespace, argv: Sequence[str]) -> Dict[str, Any]:
    """The flags given on the command line, by destination: they win over the checkpoint."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    out: Dict[str, Any] = {}
    for action in parser._actions:
        if action.dest not in NOT_OVERRIDES and action.option_strings and given & set(action.option_strings):
            out[action.dest] = getattr(args, action.dest)
    return out


def load_ensemble(args: Namespace, overrides: Dict[str, Any]):
    """``(models, cfg, task)`` of ``--path`` (``a.pt:b.pt``), eval-time flags winning."""
    import os

    from fairseq import checkpoint_utils
    from fairseq_cli.eval_lm import model_overrides

    overrides = dict(overrides)
    overrides.update(model_overrides(getattr(args, "model_overrides", "{}") or "{}"))
    if getattr(args, "data", None):
        overrides["data"] = args.data
    paths = str(args.path).split(os.pathsep)
    logger.info("loading model(s) from %s", args.path)
    return checkpoint_utils.load_model_ensemble_and_task(paths, arg_overrides=overrides)


def generation_settings(args: Namespace) -> Dict[str, Any]:
    from fairseq.dataclass.configs import GenerationConfig

    return {name: getattr(args, name) for name in GenerationConfig.__dataclass_fields__
            if hasattr(args, name)}


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

    def __init__(self, cfg_view: Namespace, tgt_dict: Any, bpe: Any, tokenizer: Any, out: TextIO):
        self.nbest = int(getattr(cfg_view, "nbest", 1) or 1)
        self.post_process = getattr(cfg_view, "post_process", None)
        self.quiet = bool(getattr(cfg_view, "quiet", False))
        self.print_step = bool(getattr(cfg_view, "print_step", False))
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


def build_encoders(cfg: DictConfig, args: Namespace):
    """The BPE and tokenizer: those named on the command line, else the checkpoint's."""
    from fairseq.hub_utils import _bpe_node
    from fairseq.data.encoders import build_bpe, build_tokenizer

    given = {k: v for k, v in vars(args).items() if v is not None}
    return (build_bpe(_bpe_node(cfg, given, "bpe")),
            build_tokenizer(_bpe_node(cfg, given, "tokenizer")))


def generate(parser: ArgumentParser, args: Namespace, argv: Sequence[str]) -> Dict[str, float]:
    """Load, generate for every sentence of ``--gen-subset``, print; return the throughput."""
    import os

    from fairseq.errors import ConfigError
    from fairseq.logging.progress_bar import progress_bar
    from fairseq.sequence_generator import GenerationSettingError, build_generator

    models, cfg, task = load_ensemble(args, explicit_overrides(parser, args, argv))
    use_cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if use_cuda else "cpu")
    for model in models:
        model.to(device)
    if args.seed is not None and not getattr(args, "no_seed_provided", False):
        torch.manual_seed(int(args.seed))
    tgt_dict = task.target_dictionary
    try:
        generator = build_generator(models, generation_settings(args), tgt_dict)
    except GenerationSettingError as e:
        raise ConfigError(str(e)) from None
    bpe, tokenizer = build_encoders(cfg, args)

    split = args.gen_subset
    task.load_dataset(split)
    dataset = task.dataset(split)
    if len(dataset) == 0:
        raise ConfigError(f"split {split!r} of {cfg.task.data} has no sentences: choose another "
                          "--gen-subset")
    positions = min(m.max_positions() for m in models)
    itr = task.get_batch_iterator(
        dataset, max_tokens=args.max_tokens, max_sentences=args.batch_size,
        max_positions=positions, ignore_invalid_inputs=bool(args.skip_invalid_size_inputs_valid_test),
        required_batch_size_multiple=int(args.required_batch_size_multiple),
        num_shards=int(getattr(args, "num_shards", 1) or 1), shard_id=int(getattr(args, "shard_id", 0) or 0),
        num_workers=int(args.num_workers),
    ).next_epoch_itr(shuffle=False)
    progress = progress_bar(itr, log_format=args.log_format, log_interval=args.log_interval,
                            no_progress_bar=bool(args.no_progress_bar))

    out: TextIO = sys.stdout
    if getattr(args, "results_path", None):
        os.makedirs(args.results_path, exist_ok=True)
        out = open(os.path.join(args.results_path, f"generate-{split}.txt"), "w", encoding="utf-8")
    printer = Printer(args, tgt_dict, bpe, tokenizer, out)
    bos = task.source_dictionary.bos() if cfg.task.get("add_bos_token", False) else task.source_dictionary.eos()
    prefix_size = int(getattr(args, "prefix_size", 0) or 0)
    sentences = tokens = 0
    start = time.perf_counter()
    try:
        for sample in progress:
            sample = move_to_device(sample, device)
            if not sample:
                continue
            prefix = None if args.score_reference else prompts_of(sample, bos, prefix_size)
            with torch.no_grad():
                if args.score_reference:
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
        args: a legacy namespace from ``options.parse_args_and_arch(options.get_generation_parser(),
            [...])``, or the command-line arguments (``None``: ``sys.argv[1:]``). With arguments,
            errors a user can cause end the process with one line.
    """
    from fairseq.logging.progress_bar import setup_logging
    from fairseq_cli.train import run_with_clear_errors

    setup_logging()
    if args is None or isinstance(args, (list, tuple)):
        argv = list(sys.argv[1:] if args is None else args)
        parser, parsed = parse(argv)
        return run_with_clear_errors(generate, parser, parsed, argv)
    parser, args, argv = from_config_or_namespace(args)
    return generate(parser, args, argv)


def from_config_or_namespace(args: Union[Namespace, DictConfig], interactive: bool = False
                             ) -> Tuple[ArgumentParser, Namespace, List[str]]:
    """``(parser, namespace, argv)`` for a legacy namespace or a composed config.

    A config (``fairseq-hydra-generate``, ``fairseq-hydra-interactive``) is flattened to the
    namespace the command works from; in both cases the values that differ from the parser's
    defaults are treated as given on the command line, so they win over the checkpoint's.
    """
    from fairseq.errors import ConfigError

    if isinstance(args, DictConfig):
        args = config_as_namespace(args)
    if not getattr(args, "path", None):
        raise ConfigError("the checkpoint is required: common_eval.path=CHECKPOINT (--path in the "
                          "legacy door; a.pt:b.pt for an ensemble)")
    if interactive:
        for name, default in (("buffer_size", 0), ("input", "-")):
            if not hasattr(args, name):
                setattr(args, name, default)
    parser, _ = parse(_identity_argv(args), interactive=interactive)
    return parser, args, _namespace_argv(parser, args)


def _identity_argv(args: Namespace) -> List[str]:
    """The arguments that pick the parser's flags for ``args``: data, task, BPE, tokenizer, path."""
    argv = [str(args.data)] if getattr(args, "data", None) else []
    for name in ("task", "bpe", "tokenizer"):
        if getattr(args, name, None):
            argv += [f"--{name}", str(getattr(args, name))]
    return argv + ["--path", str(args.path)]


def config_as_namespace(cfg: DictConfig) -> Namespace:
    """A composed config flattened to the legacy namespace the command works from.

    Each field becomes an attribute (the first group holding a name wins, in the config's
    order); values left at ``???`` are left out; ``bpe`` and ``tokenizer`` also give the chosen
    name, as ``--bpe``/``--tokenizer`` would.
    """
    from omegaconf import OmegaConf

    flat: Dict[str, Any] = {}
    for group, node in cfg.items():
        if not OmegaConf.is_dict(node):
            continue
        values = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
        for key, value in values.items():
            if key != "_name" and value != "???":
                flat.setdefault(key, value)
    for group in ("bpe", "tokenizer"):
        node = cfg.get(group)
        flat[group] = node.get("_name") if node is not None else None
    flat["path"] = cfg.common_eval.path
    return Namespace(**flat)


def _namespace_argv(parser: ArgumentParser, args: Namespace) -> List[str]:
    """The flags of ``args`` whose values differ from the parser's defaults, as if typed."""
    argv = []
    for action in parser._actions:
        if not action.option_strings or action.dest in NOT_OVERRIDES:
            continue
        if hasattr(args, action.dest) and getattr(args, action.dest) != action.default:
            argv.append(action.option_strings[-1])
    return argv


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-generate``."""
    # everything it runs, plugin import included, ends a user error with one line
    from fairseq_cli.train import run_with_clear_errors

    run_with_clear_errors(main, argv)


if __name__ == "__main__":
    cli_main()
