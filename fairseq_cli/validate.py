#!/usr/bin/env python3
"""Validate a checkpoint: ``fairseq-validate DATA --path CHECKPOINT --valid-subset valid,test``.

Rebuilds the model, task and criterion the checkpoint was trained with (the flags given here
win over its config), runs the criterion over each subset and prints one summary line per
subset, as training's validation does: ``valid on 'test' subset | test | loss=..., ppl=...``
(``{"test_loss": ..., ...}`` with ``--log-format json``).
"""
import logging
import os
import sys
from argparse import ArgumentParser, Namespace
from typing import Any, Dict, List, Optional, Tuple, Union

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omegaconf import DictConfig, OmegaConf  # noqa: E402


logger = logging.getLogger("fairseq_cli.validate")


def get_validation_parser(default_task: str = "language_modeling",
                          input_args: Optional[List[str]] = None) -> ArgumentParser:
    """The parser of ``fairseq-validate``: ``options.get_validation_parser`` when the package has
    one, else the common flags, ``--task``, the dataset and distributed groups and
    ``common_eval`` (``--path``, ``--model-overrides``, ...)."""
    from fairseq import options

    if hasattr(options, "get_validation_parser"):
        try:
            return options.get_validation_parser(default_task=default_task, input_args=input_args)
        except TypeError:  # a fairseq-style signature without input_args
            return options.get_validation_parser(default_task)
    from fairseq.dataclass.configs import GENERIC_GROUPS
    from fairseq.dataclass.utils import gen_parser_from_dataclass

    parser = options.get_parser("Validation", default_task, input_args)
    for name in ("dataset", "distributed_training", "common_eval"):
        gen_parser_from_dataclass(parser.add_argument_group(name), GENERIC_GROUPS[name])
    return parser


def _batch_limits(cfg: DictConfig) -> Tuple[Optional[int], Optional[int]]:
    """``(max_tokens, batch_size)`` of the validation batches.

    Raises:
        ConfigError: if neither is set.
    """
    from fairseq.errors import ConfigError

    max_tokens, batch_size = cfg.dataset.max_tokens, cfg.dataset.batch_size
    if max_tokens is None and batch_size is None:
        raise ConfigError("neither dataset.max_tokens nor dataset.batch_size is set here or in the "
                          "checkpoint: give --max-tokens N or --batch-size N")
    return max_tokens, batch_size


def validate(path: Optional[str], data: Optional[str], overrides: Dict[str, Any],
             subsets: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """Validate the checkpoint at ``path`` on each subset; log and return the stats per subset.

    ``dataset.max_valid_steps`` (``--nval``) caps the batches of each subset.

    Args:
        path: the checkpoint.
        data: a data directory replacing the checkpoint's ``task.data`` (None: keep it).
        overrides: config values that win over the checkpoint's (by key name, as
            ``--model-overrides`` and the flags given on the command line).
        subsets: comma-separated splits (None: ``dataset.valid_subset`` after the overrides).

    Returns:
        ``{subset: {"loss": ..., "nll_loss": ..., "ppl": ..., ...}}`` (losses in base 2).

    Raises:
        ConfigError: for a missing path, no batch size, or an empty subset list.
        CheckpointError: for an unreadable checkpoint.
        FileNotFoundError: for a subset the data directory lacks (the message lists those it has).
    """
    from fairseq import checkpoint_utils
    from fairseq.data.data_utils import name_batch_limits, positions_within_batch
    from fairseq.errors import ConfigError
    from fairseq.logging.progress_bar import progress_bar
    from fairseq.trainer import Trainer
    from fairseq.training import reduce_stats, valid_steps
    from fairseq_cli.common import model_overrides, progress_settings, setting

    if not path:
        raise ConfigError("the checkpoint to validate is required: --path CHECKPOINT (common_eval.path)")
    overrides = dict(overrides)
    overrides.update(model_overrides(setting(overrides, "model_overrides", "{}", pop=True)))
    from fairseq.cpu_threads import given_cpu_threads, local_processes, set_cpu_threads

    logger.info("%s", set_cpu_threads(given_cpu_threads(overrides), local_processes()))
    logger.info("loading model(s) from %s", path)
    model, task, cfg = checkpoint_utils.load_model_for_inference(path, overrides=overrides, data=data)
    names = [s.strip() for s in str(subsets if subsets is not None else cfg.dataset.valid_subset).split(",")]
    names = [s for s in names if s]
    if not names:
        raise ConfigError(f"dataset.valid_subset={subsets!r} names no split: give e.g. "
                          "--valid-subset valid,test")
    max_tokens, batch_size = _batch_limits(cfg)
    # the trainer computes as training validates: the run's device and precision (fp16 on a GPU,
    # bf16 also on the CPU); it builds no optimizer
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    limits = [p for p in (task.max_positions(), model.max_positions()) if p is not None]

    skip = bool(cfg.dataset.skip_invalid_size_inputs_valid_test)
    positions = min(limits) if limits else None
    if skip:  # a sample no batch can hold is skipped like one longer than the model's positions
        positions = positions_within_batch(positions, max_tokens)

    results: Dict[str, Dict[str, float]] = {}
    for subset in names:
        task.load_dataset(subset, combine=False, epoch=1)
        # optional: a task other than language_modeling (a plugin's) may have no tokens_per_sample
        with name_batch_limits(subset, cfg.task.data, "dataset.max_tokens", cfg.task.get("tokens_per_sample"), skip):
            itr = task.get_batch_iterator(
                dataset=task.dataset(subset), max_tokens=max_tokens, max_sentences=batch_size,
                max_positions=positions, ignore_invalid_inputs=skip,
                required_batch_size_multiple=int(cfg.dataset.required_batch_size_multiple),
                seed=int(cfg.common.seed), num_workers=int(cfg.dataset.num_workers),
                data_buffer_size=0,  # the dataset node declares no data_buffer_size: this was always the value
            ).next_epoch_itr(shuffle=False)
        max_steps = cfg.dataset.max_valid_steps
        total = len(itr) if max_steps is None else min(int(max_steps), len(itr))  # the steps it will take
        progress = progress_bar(itr, prefix=f"valid on '{subset}' subset", total=total,
                                **progress_settings(overrides))
        logs = valid_steps(trainer, progress, max_steps)
        progress.close()
        stats = reduce_stats(task, trainer.criterion, logs)
        if not stats:
            raise ConfigError(f"subset {subset!r} of {cfg.task.data} gave no batch to validate: every "
                              "sample was empty or longer than the model's positions")
        progress.print(stats, tag=subset)
        results[subset] = stats
    return results


def main(cfg: Union[DictConfig, Namespace], override_args: Optional[Namespace] = None
         ) -> Dict[str, Dict[str, float]]:
    """Validate ``common_eval.path`` on ``dataset.valid_subset``.

    Args:
        cfg: the validation config (DictConfig) or legacy namespace
            (``options.parse_args_and_arch(options.get_validation_parser(), [...])``).
        override_args: the values that win over the checkpoint's config, as a namespace
            holding only the flags given (fairseq's ``suppress_defaults`` parse). Without it,
            the values of ``cfg`` that differ from their defaults win.

    Returns:
        The stats of each subset (see :func:`validate`).
    """
    from fairseq_cli.common import NOT_OVERRIDES, overrides_from_config, setup_logging

    if isinstance(cfg, Namespace):
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        cfg = convert_namespace_to_omegaconf(cfg)
    setup_logging()
    if override_args is not None:
        # a None can only be a default that slipped through: a flag given always has a value
        overrides = {k: v for k, v in vars(override_args).items()
                     if k not in NOT_OVERRIDES and v is not None}
    else:
        overrides = overrides_from_config(cfg)
    data = None if OmegaConf.is_missing(cfg.task, "data") else cfg.task.data
    return validate(cfg.common_eval.path, data, overrides, subsets=str(cfg.dataset.valid_subset))


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-validate``: errors a user can cause end with one line, no traceback."""
    # everything it runs, plugin import included, ends a user error with one line
    from fairseq_cli.common import run_with_clear_errors

    run_with_clear_errors(_cli_main, argv)


def _cli_main(argv: Optional[List[str]] = None) -> None:
    from fairseq import options
    from fairseq_cli.common import overrides_from_argv, run_with_clear_errors, setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = get_validation_parser(input_args=argv)
    args = options.parse_args_and_arch(parser, argv)
    # optional: this is the check that --path was given
    if not getattr(args, "path", None):
        parser.error("the checkpoint to validate is required: --path CHECKPOINT")
    setup_logging()
    overrides = overrides_from_argv(parser, args, argv)
    # optional: DATA is an optional positional of validate
    run_with_clear_errors(validate, args.path, getattr(args, "data", None), overrides,
                          subsets=args.valid_subset)


if __name__ == "__main__":
    cli_main()
