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


def _split_argv(argv: List[str]):
    """Separate Hydra's own flags (``--multirun``, ``--cfg job``, ...) from overrides."""
    flags_with_value = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp",
                        "--config-name", "-cn", "--config-dir", "-cd", "--info", "-i",
                        "--experimental-rerun"}
    overrides, flags, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--info", "-i") and not (i + 1 < len(argv) and "=" not in argv[i + 1]
                                            and not argv[i + 1].startswith("-")):
            flags += [arg, "all"]  # its value is optional: Hydra's default, so no override or flag is taken as it
            i += 1
            continue
        if arg in flags_with_value and i + 1 < len(argv) and "=" not in argv[i + 1]:
            flags += [arg, argv[i + 1]]
            i += 2
            continue
        # "--task.data=x" is a mistyped override, not a flag: check_overrides explains it
        is_flag = arg.startswith("-") and not ("=" in arg and "." in arg.split("=", 1)[0])
        (flags if is_flag else overrides).append(arg)
        i += 1
    return overrides, flags


def _flag_value(flags: List[str], *names: str) -> Optional[str]:
    for i, flag in enumerate(flags):
        for name in names:
            if flag == name and i + 1 < len(flags):
                return flags[i + 1]
            if flag.startswith(name + "="):
                return flag.split("=", 1)[1]
    return None


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-hydra-train``."""
    # everything it runs, plugin import included, ends a user error with one line
    from fairseq_cli.train import run_with_clear_errors

    run_with_clear_errors(_cli_main, argv)


def _cli_main(argv: Optional[List[str]] = None) -> None:
    from fairseq.dataclass.overrides import DEFAULT_MAX_TOKENS, check_overrides
    from fairseq.dataclass.sweep_plugins import check_plugins

    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, flags = _split_argv(argv)
    import_plugins_of_overrides(overrides)
    if "--help" in flags or "-h" in flags:
        from fairseq.dataclass.help import hydra_help

        print(hydra_help(_flag_value(flags, "--config-dir", "-cd")))
        return
    multirun = "-m" in flags or "--multirun" in flags
    config_name = _flag_value(flags, "--config-name", "-cn") or "config"
    user_config_dir = _flag_value(flags, "--config-dir", "-cd")
    # a common.user_dir set in the user's YAML: its plugins are registered before anything is checked
    import_plugins_of_yaml(overrides, config_name, user_config_dir)
    primary = primary_config_name(config_name, user_config_dir)
    if primary != config_name:  # an experiment file without defaults: on top of config.yaml
        flags = [f for i, f in enumerate(flags) if f.split("=", 1)[0] not in ("--config-name", "-cn")
                 and not (i > 0 and flags[i - 1] in ("--config-name", "-cn"))] + ["--config-name", primary]
    # --config-path replaces the tree Hydra resolves relative to this file: Hydra checks that run.
    # --cfg/--info print what a run would train, so they get the same checks and rewrites
    # (required values may stay ???)
    unchecked = any(f in flags for f in ("--help", "-h", "--hydra-help", "--config-path", "-cp"))
    printing = any(f.split("=", 1)[0] in ("--cfg", "-c", "--info", "-i") for f in flags)
    if not unchecked:
        # a ConfigError ends the process in run_with_clear_errors (cli_main)
        check_plugins(overrides)
        overrides = check_overrides(overrides, multirun=multirun, config_name=config_name,
                                    user_config_dir=user_config_dir, check_required=not printing,
                                    default_max_tokens=DEFAULT_MAX_TOKENS)
    sys.argv = [sys.argv[0]] + flags + overrides
    hydra_main()


if __name__ == "__main__":
    cli_main()
