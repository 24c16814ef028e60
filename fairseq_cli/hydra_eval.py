#!/usr/bin/env python3
"""The evaluation commands through the Hydra config tree, like ``fairseq-hydra-train``:

    fairseq-hydra-eval-lm common_eval.path=ck.pt task.data=DATA eval_lm.context_window=16
    fairseq-hydra-validate common_eval.path=ck.pt task.data=DATA dataset.valid_subset=valid
    fairseq-hydra-generate common_eval.path=ck.pt task.data=DATA generation.beam=3
    fairseq-hydra-interactive common_eval.path=ck.pt task.data=DATA interactive.input=prompts.txt

Each composes ``config/`` (or ``--config-dir DIR --config-name NAME``) with the overrides,
checked as ``fairseq-hydra-train`` checks them, and calls the same ``main`` as the legacy
command with the composed config. As there, the values that differ from their defaults win
over the checkpoint's config, and the checkpoint's BPE and tokenizer are used unless
``bpe=NAME``/``tokenizer=NAME`` is given. ``task.data`` may be left out (the checkpoint's is
used). No Hydra run directory is created: nothing is written unless
``common_eval.results_path`` says where. ``--cfg job`` prints the composed config.
"""
import os
import sys
from typing import Any, Callable, List, Optional

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omegaconf import DictConfig, OmegaConf  # noqa: E402

# the options of fairseq-hydra-train that make no sense for a single evaluation (Hydra's names)
UNSUPPORTED_FLAGS = {"multirun": "--multirun", "config_path": "--config-path", "info": "--info",
                     "hydra_help": "--hydra-help", "experimental_rerun": "--experimental-rerun",
                     "package": "--package", "run": "--run", "resolve": "--resolve",
                     "shell_completion": "--shell-completion"}


def _usage(command: str) -> str:
    return (f"usage: {command} [--config-dir DIR] [--config-name NAME] [--cfg job] key=value ...\n\n"
            "Compose config/config.yaml with the overrides and run the evaluation on the checkpoint\n"
            "common_eval.path (required); task.data defaults to the checkpoint's data. Every key of\n"
            "`fairseq-hydra-train --help` is accepted, plus the generation.* and interactive.* groups.")


def compose_eval_config(argv: List[str], command: str) -> Optional[DictConfig]:
    """The composed config of an evaluation command line, or ``None`` when it only asked for
    help or for the config to be printed (done here).

    Raises:
        ConfigError: unknown keys or components, wrong types, an unsupported Hydra flag, or a
            missing ``common_eval.path``.
    """
    from fairseq.dataclass.compose import import_plugins_of_overrides, import_plugins_of_yaml
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.overrides import ConfigError, check_overrides
    from fairseq.dataclass.config_code import check_searchpath, check_yaml_size
    from fairseq_cli.train_hydra import check_config_files, parse_command_line

    flags, overrides = parse_command_line(argv, command)
    check_yaml_size(flags.config_dir)
    check_searchpath(flags.config_dir, flags.config_name or "config", flags.allow_config_code)
    import_plugins_of_overrides(overrides)
    if flags.help:
        print(_usage(command))
        return None
    unsupported = [flag for dest, flag in UNSUPPORTED_FLAGS.items() if getattr(flags, dest, None)]
    if unsupported:
        raise ConfigError(f"{command} does not take {unsupported[0]}: it runs one evaluation of "
                          "config/ with key=value overrides (--config-dir/--config-name pick "
                          "another config)")
    config_name = flags.config_name or "config"
    user_config_dir = flags.config_dir
    # a common.user_dir set only in the user's YAML: imported before anything is checked, as in
    # fairseq-hydra-train (found by a first composition, then the registries are stored again)
    import_plugins_of_yaml(overrides, config_name, user_config_dir, allowed=flags.allow_config_code)
    overrides = check_overrides(overrides, config_name=config_name, user_config_dir=user_config_dir,
                                check_required=False)
    # no Hydra app runs here, nothing of the hydra node is called or written; its code keys are
    # refused all the same, so a config file gets the same answer from every command
    check_config_files(flags, overrides, config_name, check_paths=False)
    cfg = compose_config(overrides, config_name=config_name, user_config_dir=user_config_dir)
    if flags.cfg is not None:
        print(OmegaConf.to_yaml(cfg))
        return None
    if not cfg.common_eval.path:
        raise ConfigError(f"the checkpoint is required: {command} common_eval.path=CHECKPOINT "
                          "(a.pt:b.pt for an ensemble)")
    return cfg


def run(main: Callable[[DictConfig], Any], command: str, argv: Optional[List[str]] = None) -> Any:
    """Compose the config of ``argv`` and run ``main(cfg)``; errors a user can cause end the
    process with one line (exit code 2, or 1 for a failed run)."""
    from fairseq_cli.common import run_with_clear_errors

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = run_with_clear_errors(compose_eval_config, argv, command)
    if cfg is None:
        return None
    return run_with_clear_errors(main, cfg)


def eval_lm_main(argv: Optional[List[str]] = None) -> Any:
    """``fairseq-hydra-eval-lm``: :func:`fairseq_cli.eval_lm.main` on a composed config."""
    from fairseq_cli import eval_lm

    return run(eval_lm.main, "fairseq-hydra-eval-lm", argv)


def validate_main(argv: Optional[List[str]] = None) -> Any:
    """``fairseq-hydra-validate``: :func:`fairseq_cli.validate.main` on a composed config."""
    from fairseq_cli import validate

    return run(validate.main, "fairseq-hydra-validate", argv)


def generate_main(argv: Optional[List[str]] = None) -> Any:
    """``fairseq-hydra-generate``: :func:`fairseq_cli.generate.main` on a composed config."""
    from fairseq_cli import generate

    return run(generate.main, "fairseq-hydra-generate", argv)


def interactive_main(argv: Optional[List[str]] = None) -> Any:
    """``fairseq-hydra-interactive``: :func:`fairseq_cli.interactive.main` on a composed config."""
    from fairseq_cli import interactive

    return run(interactive.main, "fairseq-hydra-interactive", argv)


COMMANDS = {"eval-lm": eval_lm_main, "validate": validate_main, "generate": generate_main,
            "interactive": interactive_main}


# The console scripts. Their return value becomes the exit status (a dict would print to stderr
# and exit 1), so they return nothing: 0 on success, the errors' own codes otherwise.
def eval_lm_cli() -> None:
    """``fairseq-hydra-eval-lm``."""
    eval_lm_main()


def validate_cli() -> None:
    """``fairseq-hydra-validate``."""
    validate_main()


def generate_cli() -> None:
    """``fairseq-hydra-generate``."""
    generate_main()


def interactive_cli() -> None:
    """``fairseq-hydra-interactive``."""
    interactive_main()

if __name__ == "__main__":  # python fairseq_cli/hydra_eval.py generate key=value ...
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: {sys.argv[0]} {{{','.join(COMMANDS)}}} key=value ...", file=sys.stderr)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])
    sys.exit(0)
