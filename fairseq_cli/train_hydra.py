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

from fairseq.dataclass.compose import (  # noqa: E402
    component_choices, import_plugins_of_overrides, import_plugins_of_yaml)
from fairseq.dataclass.initialize import config_dir, install_hydra_hooks, primary_config_name  # noqa: E402

# a launcher's worker process (joblib) imports this module to run the task function: it composes
# its job's config by the same rules as this process
install_hydra_hooks()


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    from fairseq_cli.common import run_with_clear_errors
    from fairseq_cli.train import main

    from hydra.core.hydra_config import HydraConfig

    # relative paths are anchored where the command was started, even if hydra.job.chdir=true
    launch_dir = hydra.utils.get_original_cwd() if HydraConfig.initialized() else os.getcwd()
    result = run_with_clear_errors(main, cfg, launch_dir=launch_dir, door="hydra")
    best = result.get("best") if result else None
    if HydraConfig.initialized() and os.environ.get(SWEEP_REPORT):
        _report_job(os.environ[SWEEP_REPORT], cfg, best)
    # the best validation loss, for sweepers that minimise what the task function returns
    return best


# -- the end of a sweep: one line per job, and the best ----------------------------------------
#: the file each job of a sweep appends its result to (set by the command for its jobs)
SWEEP_REPORT = "FAIRSEQ_SWEEP_REPORT"


def _report_job(path: str, cfg: DictConfig, best: Optional[float]) -> None:
    import json

    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    line = json.dumps({"job": hc.job.num, "overrides": list(hc.overrides.task), "best": best,
                       "metric": cfg.checkpoint.best_checkpoint_metric,
                       "maximize": bool(cfg.checkpoint.maximize_best_checkpoint_metric),
                       "save_dir": os.path.abspath(cfg.checkpoint.save_dir)})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))  # one write: jobs in parallel never interleave
    finally:
        os.close(fd)


def swept_overrides(jobs: List[dict]) -> List[List[str]]:
    """Per job, the overrides that tell it apart: the keys whose value differs between jobs (the
    keys every job shares, and the per-job ``save_dir`` the command adds, are the same story for
    all). A single job keeps all of its own."""
    def parse(overrides: List[str]) -> dict:
        return dict(text.split("=", 1) if "=" in text else (text, "") for text in overrides)

    parsed = [parse(job["overrides"]) for job in jobs]
    keys = {key for overrides in parsed for key in overrides}
    swept = sorted(key for key in keys if len({overrides.get(key) for overrides in parsed}) > 1)
    if len(jobs) == 1:
        swept = sorted(key for key in keys if not parsed[0][key].startswith("${hydra:runtime.output_dir}"))
    return [[f"{key}={overrides[key]}" for key in swept if key in overrides] for overrides in parsed]


def sweep_summary(lines: List[str]) -> List[str]:
    """The closing lines of a sweep: one per job (the values it was swept over, its best
    validation value, its checkpoints), then the best job."""
    import json

    jobs = sorted((json.loads(line) for line in lines if line.strip()), key=lambda j: j["job"])
    shown = swept_overrides(jobs)
    out = []
    for job, own in zip(jobs, shown):
        value = "no validation" if job["best"] is None else f"best valid {job['metric']} {job['best']:.4g}"
        out.append(f"job {job['job']}: {' '.join(own) or '(no overrides)'} | {value} | "
                   f"checkpoints in {job['save_dir']}")
    scored = [(j, own) for j, own in zip(jobs, shown) if j["best"] is not None]
    if scored:
        pick = max if scored[0][0]["maximize"] else min
        won, own = pick(scored, key=lambda pair: pair[0]["best"])
        out.append(f"best: job {won['job']} ({' '.join(own)}) with valid {won['metric']} "
                   f"{won['best']:.4g}; checkpoints in {won['save_dir']}")
    return out


def _run_sweep() -> None:
    """Run Hydra's multirun with every job reporting to one file; then print the summary."""
    import tempfile

    fd, report = tempfile.mkstemp(prefix="fairseq-sweep-", suffix=".jsonl")
    os.close(fd)
    os.environ[SWEEP_REPORT] = report
    try:
        hydra_main()
        with open(report, encoding="utf-8") as f:
            lines = f.read().splitlines()
    finally:
        os.environ.pop(SWEEP_REPORT, None)
        os.unlink(report)
    for line in sweep_summary(lines):
        print(line, flush=True)


def parse_command_line(argv: List[str], command: str):
    """``(flags, overrides)`` of a Hydra door's command line, read by Hydra's own parser.
    ``--info`` followed by an override means ``--info all``; ``flags.allow_config_code`` says
    whether ``--allow-config-code`` (this package's own flag) was given.

    Raises:
        ConfigError: a bad value for one of Hydra's flags, or an argument Hydra does not know
            (a legacy ``--max-tokens 1024`` is answered with ``dataset.max_tokens=1024``).
    """
    import argparse

    from fairseq.dataclass.hydra_hooks import parse_command_line as hydra_parse
    from fairseq.dataclass.overrides import ConfigError, explain_unknown_flag

    from fairseq.dataclass.config_code import ALLOW_FLAG

    argv = list(argv)
    allow_config_code = ALLOW_FLAG in argv
    argv = [a for a in argv if a != ALLOW_FLAG]
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
    flags.allow_config_code = allow_config_code
    return flags, overrides


def replaced_tree(flags) -> Optional[str]:
    """The directory ``--config-path`` puts in place of ``config/`` (None without it), resolved
    as Hydra resolves it: an absolute path as it is, a relative one against this file's directory."""
    if flags.config_path is None:
        return None
    return os.path.join(os.path.dirname(os.path.realpath(__file__)), os.path.expanduser(flags.config_path))


def check_config_files(flags, overrides: List[str], config_name: str, with_hydra: bool = True,
                       multirun: bool = False, check_paths: bool = True) -> None:
    """Refuse a run whose config files would run code or write outside the run's directory (see
    :mod:`fairseq.dataclass.config_code`): checked before Hydra builds or writes anything of it.

    Raises:
        ConfigError: the first such key, or an override Hydra cannot apply, in one line.
    """
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from fairseq.dataclass.compose import compose_config
    from fairseq.dataclass.config_code import check_config_code, check_override_code
    from fairseq.dataclass.overrides import ConfigError

    check_override_code(overrides, flags.allow_config_code)
    # one job of a sweep is enough: the sweep's values are data, its files are what is checked
    parsed = OverridesParser.create().parse_overrides(overrides)
    single = [text for text, ov in zip(overrides, parsed) if not ov.is_sweep_override()]
    try:
        cfg = compose_config(single, config_name=config_name, user_config_dir=flags.config_dir,
                             config_path=replaced_tree(flags), with_hydra=with_hydra)
    except yaml.YAMLError as e:  # a malformed file of the user's tree
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ConfigError(f"malformed YAML: {text}") from None
    except (HydraException, OmegaConfBaseException) as e:
        # a hydra.* override the schema checks never see (`hydra.callbacks.x._target_=...`
        # without its `+`): Hydra's own explanation, on one line
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ConfigError(text or type(e).__name__) from None
    tree = flags.config_dir or replaced_tree(flags)
    where = f"the config in {tree}" if tree else "the config"
    check_config_code(cfg, flags.allow_config_code, where, overrides=overrides, multirun=multirun,
                      check_paths=check_paths)


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-hydra-train``."""
    # everything it runs, plugin import included, ends a user error with one line
    from fairseq_cli.common import run_with_clear_errors

    run_with_clear_errors(_cli_main, argv)


def _cli_main(argv: Optional[List[str]] = None) -> None:
    from fairseq.dataclass.overrides import DEFAULT_MAX_TOKENS, check_overrides
    from fairseq.dataclass.sweep_plugins import check_plugins

    from fairseq.dataclass.hydra_hooks import hydra_flags

    from fairseq.dataclass.config_code import check_searchpath, check_yaml_size

    argv = list(sys.argv[1:] if argv is None else argv)
    flags, overrides = parse_command_line(argv, "fairseq-hydra-train")
    # the user's files: a --config-dir beside the built-in tree, or a --config-path in its place
    for tree in (flags.config_dir, replaced_tree(flags)):
        check_yaml_size(tree)
        check_searchpath(tree, flags.config_name or "config", flags.allow_config_code)
    import_plugins_of_overrides(overrides)
    if flags.help:
        from fairseq.dataclass.help import hydra_help

        print(hydra_help(flags.config_dir))
        return
    multirun = bool(flags.multirun)
    config_name = flags.config_name or "config"
    user_config_dir = flags.config_dir
    # a common.user_dir set in the user's YAML: its plugins are registered before anything is checked
    import_plugins_of_yaml(overrides, config_name, user_config_dir, allowed=flags.allow_config_code)
    primary = primary_config_name(config_name, user_config_dir)
    if primary != config_name:  # an experiment file without defaults: on top of config.yaml
        flags.config_name = primary
    # --config-path replaces the tree Hydra resolves relative to this file: Hydra checks that run.
    # --cfg/--info print what a run would train, so they get the same checks and rewrites
    # (required values may stay ???)
    unchecked = flags.hydra_help or flags.config_path is not None
    printing = flags.cfg is not None or flags.info is not None
    if multirun and printing:  # Hydra itself would answer with a traceback
        from fairseq.dataclass.overrides import ConfigError

        raise ConfigError(f"--multirun cannot be combined with {'--cfg' if flags.cfg is not None else '--info'}: "
                          "print one job's config without --multirun (the sweep's values as single values)")
    if flags.config_path is not None and not flags.hydra_help:
        # a replaced tree is composed by Hydra alone, so only what its files may run or write is
        # checked here: the same rule as for a --config-dir
        check_config_files(flags, overrides, config_name, multirun=multirun)
    if not unchecked:
        # a ConfigError ends the process in run_with_clear_errors (cli_main)
        check_plugins(overrides)
        overrides = check_overrides(overrides, multirun=multirun, config_name=config_name,
                                    user_config_dir=user_config_dir, check_required=not printing,
                                    default_max_tokens=DEFAULT_MAX_TOKENS)
        check_config_files(flags, overrides, config_name, multirun=multirun)
    # fairseq 0.12's component files of field values only: on a stored config with their schema
    overrides = component_choices(overrides, user_config_dir)
    sys.argv = [sys.argv[0]] + hydra_flags(flags) + overrides
    from fairseq.dataclass.hydra_hooks import forget_hydra_run

    try:
        if multirun and not printing:
            _run_sweep()
        else:
            hydra_main()
    finally:
        forget_hydra_run()


if __name__ == "__main__":
    cli_main()
