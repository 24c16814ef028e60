#!/usr/bin/env python3
"""Train a model from legacy fairseq flags: ``fairseq-train DATA --arch transformer_lm ...``.

The flags are converted to the same DictConfig the Hydra door composes (see
``fairseq_cli/train_hydra.py``), then :func:`main` runs the shared training loop.
"""
import contextlib
import gc
import logging
import os
import sys
from typing import Any, Dict, List, Optional

if __package__ in (None, ""):  # run as a script from a checkout: python fairseq_cli/train.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omegaconf import DictConfig  # noqa: E402

from fairseq_cli.common import run_with_clear_errors, setup_logging  # noqa: E402

logger = logging.getLogger("fairseq_cli.train")


def _absolute(path: Optional[str], base: str) -> Optional[str]:
    if not path:
        return path
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def prepare_config(cfg: DictConfig, launch_dir: Optional[str] = None, door: str = "hydra") -> DictConfig:
    """Check required values and anchor relative paths at the launch directory.

    Anchoring ``checkpoint.save_dir`` (and data, log paths) at the directory the command was
    started from means Hydra's run directory never moves them: rerunning the same command
    finds ``checkpoint_last.pt`` and resumes.
    """
    from fairseq.dataclass.overrides import check_missing, check_values

    check_values(cfg)
    check_missing(cfg, door=door)
    base = launch_dir or os.getcwd()
    cfg.checkpoint.save_dir = _absolute(cfg.checkpoint.save_dir, base)
    cfg.task.data = ":".join(_absolute(p, base) for p in str(cfg.task.data).split(":") if p)
    for key in ("log_file", "tensorboard_logdir"):
        if cfg.common[key]:
            cfg.common[key] = _absolute(cfg.common[key], base)
    restore = cfg.checkpoint.restore_file
    if os.path.dirname(restore):
        cfg.checkpoint.restore_file = _absolute(restore, base)
    anchor_encoder_files(cfg, base)
    return cfg


def anchor_encoder_files(cfg: DictConfig, base: str) -> None:
    """Make the relative file paths of ``cfg.bpe`` / ``cfg.tokenizer`` absolute.

    The checkpoint records these nodes, and the evaluation commands and the hub rebuild the
    BPE from them wherever they are started. Only values naming an existing file under ``base``
    change (URLs and unset values stay as they are).
    """
    for group in ("bpe", "tokenizer"):
        node = cfg.get(group)  # optional: no BPE / tokenizer may be chosen
        if node is None:
            continue
        for key, value in node.items():
            if (isinstance(value, str) and value and "://" not in value
                    and not os.path.isabs(os.path.expanduser(value))
                    and os.path.isfile(os.path.join(base, os.path.expanduser(value)))):
                node[key] = _absolute(value, base)


def main(cfg: DictConfig, launch_dir: Optional[str] = None, door: str = "hydra") -> Dict[str, Any]:
    """Run training for a composed config (both doors end here)."""
    from fairseq import distributed_utils

    cfg = prepare_config(cfg, launch_dir, door)
    distributed_utils.init_from_env(cfg)
    master = distributed_utils.is_master()
    if master:  # an unusable save_dir stops here, before any training time is spent
        from fairseq.checkpoint_utils import verify_checkpoint_directory

        verify_checkpoint_directory(cfg.checkpoint.save_dir)
    # only the first process writes logs; the others report warnings and errors
    setup_logging(cfg.common.log_file if master else None,
                  level=logging.INFO if master else logging.WARNING)
    # only the first process writes checkpoints, so only it locks save_dir, for the whole run:
    # a second run into the same save_dir stops here (start-up cleanup runs under the lock)
    with contextlib.ExitStack() as held:
        if master:
            from fairseq.save_dir_lock import save_dir_lock

            held.enter_context(save_dir_lock(cfg.checkpoint.save_dir))
        return _run(cfg)


def _run(cfg: DictConfig) -> Dict[str, Any]:
    from fairseq import distributed_utils
    from fairseq.training import run_training

    if distributed_utils.get_world_size() == 1:
        return run_training(cfg)
    import torch.distributed as dist

    try:
        result = run_training(cfg)
        # free the trainer now (reference cycles keep it, and its DDP reducer keeps the process
        # group, alive until interpreter exit, where gloo's threads can abort the process)
        gc.collect()
        # leave together: a process that exits while another still writes its last checkpoint
        # tears down the connections under it (gloo then aborts). Not after an error: a peer
        # that died would never arrive.
        dist.barrier()
        return result
    finally:
        dist.destroy_process_group()


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-train``: legacy flags in, the shared training loop out."""
    # everything it runs, plugin import included, ends a user error with one line
    run_with_clear_errors(_cli_main, argv)


def _cli_main(argv: Optional[List[str]] = None) -> None:
    from omegaconf.errors import OmegaConfBaseException

    from fairseq import options
    from fairseq.dataclass.overrides import ConfigError, missing_message
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser(input_args=argv)
    args = options.parse_args_and_arch(parser, argv)
    # optional: this is the check that DATA was given
    if getattr(args, "data", None) is None:
        parser.error(missing_message("task.data", "legacy"))
    try:
        cfg = convert_namespace_to_omegaconf(args)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "")
        parser.error(f"{'--' + key.rsplit('.', 1)[-1].replace('_', '-') + ': ' if key else ''}"
                     f"{str(e).splitlines()[0]}")
    except ConfigError as e:
        parser.error(str(e))
    run_with_clear_errors(main, cfg, door="legacy")


if __name__ == "__main__":
    cli_main()
