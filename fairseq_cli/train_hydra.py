#!/usr/bin/env python3
"""Train a model from the Hydra config tree: ``fairseq-hydra-train task.data=DATA key=value ...``.

Overrides are checked first (unknown keys name the closest real key, wrong types name the
expected type, ``task.data`` must be given), then Hydra composes ``config/`` and runs the job,
or a sweep with ``--multirun``.
"""
import os
import sys
from typing import List, Optional

if __package__ in (None, ""):  # run as a script from a checkout: python fairseq_cli/train_hydra.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fairseq.dataclass.compose import import_plugins_of_overrides, import_plugins_of_yaml  # noqa: E402
from fairseq.dataclass.initialize import config_dir, install_hydra_hooks, primary_config_name  # noqa: E402

# a launcher's worker process (joblib) imports this module to run the task function: it composes
# its job's config by the same rules as this process
install_hydra_hooks()


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    from fairseq_cli.train import main, run_with_clear_errors

    from hydra.core.hydra_config import HydraConfig

    # relative paths are anchored where the command was started, even if hydra.job.chdir=true
    launch_dir = hydra.utils.get_original_cwd() if HydraConfig.initialized() else os.getcwd()
    result = run_with_clear_errors(main, cfg, launch_dir=launch_dir, door="hydra")
    # the best validation loss, for sweepers that minimise what the task function returns
    return result.get("best") if result else None


def parse_command_line(argv: List[str], command: str):
    """``(flags, overrides)`` of a Hydra door's command line, read by Hydra's own parser.
    ``--info`` followed by an override means ``--info all``.

    Raises:
        ConfigError: a bad value for one of Hydra's flags, or an argument Hydra does not know
            (a legacy ``--max-tokens 1024`` is answered with ``dataset.max_tokens=1024``).
    """
    import argparse

    from fairseq.dataclass.hydra_hooks import parse_command_line as hydra_parse
    from fairseq.dataclass.overrides import ConfigError, explain_unknown_flag

    argv = list(argv)
    info_choices = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
    for i, arg in enumerate(argv):
        if arg in ("--info", "-i") and (i + 1 == len(argv) or argv[i + 1] not in info_choices):
            argv.insert(i + 1, "all")
            break
    try:
        flags, overrides, unknown = hydra_parse(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(f"{command}: {e}") from None
    if unknown:
        raise explain_unknown_flag(unknown, argv, command)
    return flags, overrides


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-hydra-train``."""
    # everything it runs, plugin import included, ends a user error with one line
    from fairseq_cli.train import run_with_clear_errors

    run_with_clear_errors(_cli_main, argv)


def _cli_main(argv: Optional[List[str]] = None) -> None:
    from fairseq.dataclass.overrides import DEFAULT_MAX_TOKENS, check_overrides
    from fairseq.dataclass.sweep_plugins import check_plugins

    from fairseq.dataclass.hydra_hooks import hydra_flags

    argv = list(sys.argv[1:] if argv is None else argv)
    flags, overrides = parse_command_line(argv, "fairseq-hydra-train")
    import_plugins_of_overrides(overrides)
    if flags.help:
        from fairseq.dataclass.help import hydra_help

        print(hydra_help(flags.config_dir))
        return
    multirun = bool(flags.multirun)
    config_name = flags.config_name or "config"
    user_config_dir = flags.config_dir
    # a common.user_dir set in the user's YAML: its plugins are registered before anything is checked
    import_plugins_of_yaml(overrides, config_name, user_config_dir)
    primary = primary_config_name(config_name, user_config_dir)
    if primary != config_name:  # an experiment file without defaults: on top of config.yaml
        flags.config_name = primary
    # --config-path replaces the tree Hydra resolves relative to this file: Hydra checks that run.
    # --cfg/--info print what a run would train, so they get the same checks and rewrites
    # (required values may stay ???)
    unchecked = flags.hydra_help or flags.config_path is not None
    printing = flags.cfg is not None or flags.info is not None
    if not unchecked:
        # a ConfigError ends the process in run_with_clear_errors (cli_main)
        check_plugins(overrides)
        overrides = check_overrides(overrides, multirun=multirun, config_name=config_name,
                                    user_config_dir=user_config_dir, check_required=not printing,
                                    default_max_tokens=DEFAULT_MAX_TOKENS)
    sys.argv = [sys.argv[0]] + hydra_flags(flags) + overrides
    hydra_main()


if __name__ == "__main__":
    cli_main()
