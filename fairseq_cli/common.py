"""What every command shares: the error wrapper, logging set-up and the evaluation overrides.

* :func:`run_with_clear_errors` (and :func:`run_as_command`, which names the command in its
  messages): an error in what the user gave ends the process with one line on stderr and the
  error's exit code (2 for bad input, 1 for a failed run, 128 + the signal for a stop signal).
* :func:`setup_logging`: the logging set-up of every command.
* :func:`overrides_from_argv`, :func:`overrides_from_config`, :func:`setting`,
  :func:`progress_settings`, :func:`model_overrides`: which values given to an evaluation
  command (eval-lm, validate, generate, interactive) win over the checkpoint's config.
"""
import ast
import sys
from argparse import ArgumentParser, Namespace
from typing import Any, Callable, Dict, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from fairseq.logging.progress_bar import setup_logging

__all__ = ["NOT_OVERRIDES", "model_overrides", "overrides_from_argv", "overrides_from_config",
           "progress_settings", "run_as_command", "run_with_clear_errors", "setting", "setup_logging"]


# -- the error wrapper ---------------------------------------------------------------------------
def _run(prog: Optional[str], fn: Callable[..., Any], args: Sequence[Any], kwargs: Dict[str, Any]) -> Any:
    from fairseq.errors import UserError
    from fairseq.stop_signals import exit_code, raise_on_stop_signals

    prefix = f"{prog}: " if prog else ""
    raise_on_stop_signals()
    try:
        return fn(*args, **kwargs)
    except UserError as e:  # the one place a door turns the error family into a message
        print(f"{prefix}error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (FileNotFoundError, FloatingPointError) as e:
        print(f"{prefix}error: {e}", file=sys.stderr)
        sys.exit(1 if isinstance(e, FloatingPointError) else 2)
    except KeyboardInterrupt as e:
        message = getattr(e, "message", None) or (str(e) if e.args else "interrupted (Ctrl-C)")
        print(f"{prefix}{message}", file=sys.stderr)
        sys.exit(exit_code(e))


def run_with_clear_errors(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)``; an error in what the user gave ends the process with one
    line (``error: ...``), no traceback.

    Exit codes: 2 for an error in the input, 1 for a run that failed, 128 + the signal for a
    stop signal, as a shell reports them: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP (all
    three are handled alike; training then says where its last checkpoint is).

    Returns:
        What ``fn`` returns.
    """
    return _run(None, fn, args, kwargs)


def run_as_command(prog: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`run_with_clear_errors` for a command whose messages start with its name
    (``fairseq-preprocess: error: ...``, ``fairseq-preprocess: interrupted ...``)."""
    return _run(prog, fn, args, kwargs)


# -- which values win over the checkpoint's config ---------------------------------------------
NOT_OVERRIDES = {"data", "path", "task", "help", "_name"}


def overrides_from_argv(parser: ArgumentParser, args: Namespace, argv: Sequence[str]) -> Dict[str, Any]:
    """The values of the flags given on the command line (not defaults): these win over the
    checkpoint's config, even when they equal a default."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    explicit = {}
    for action in parser._actions:
        if action.dest in NOT_OVERRIDES or not action.option_strings:
            continue
        if given & set(action.option_strings):
            explicit[action.dest] = getattr(args, action.dest)
    return explicit


def overrides_from_config(cfg: DictConfig) -> Dict[str, Any]:
    """The values of ``cfg`` that differ from the defaults of the same config: given a config
    rather than a command line, those are the values that win over the checkpoint's."""
    from fairseq.dataclass.configs import GENERIC_GROUPS
    from fairseq.dataclass.initialize import compose_config

    # optional: an evaluation command may be given no task (the checkpoint's is used)
    task_name = cfg.task.get("_name") if cfg.get("task") is not None else None
    defaults = compose_config([f"task={task_name}"] if task_name else [])
    overrides: Dict[str, Any] = {}  # by full key: a value reaches its own group only
    for group in list(GENERIC_GROUPS) + ["task"]:
        node, default = cfg.get(group), defaults.get(group)  # optional: the task node may be None
        if node is None:
            continue
        mine = OmegaConf.to_container(node, resolve=False)
        theirs = OmegaConf.to_container(default, resolve=False) if default is not None else {}
        for key, value in mine.items():
            if key not in NOT_OVERRIDES and (key not in theirs or theirs[key] != value):
                overrides[f"{group}.{key}"] = value
    return overrides


def setting(overrides: Dict[str, Any], name: str, default: Any = None, pop: bool = False) -> Any:
    """The value an evaluation was given for ``name``: under its bare name (the legacy flags) or
    its full key (``common.log_format``, from a composed config); ``pop`` removes it."""
    key = next((k for k in overrides if k == name or k.endswith("." + name)), None)
    if key is None:
        return default
    return overrides.pop(key) if pop else overrides[key]


def progress_settings(overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The progress-bar settings of an evaluation: those given now, else the defaults (never the
    training run's ``log_format``, which would print an evaluation the way that run logged)."""
    return {"log_format": setting(overrides, "log_format"),
            "log_interval": int(setting(overrides, "log_interval", 100)),
            "no_progress_bar": bool(setting(overrides, "no_progress_bar", False)),
            "log_seconds": float(setting(overrides, "log_seconds", 60.0))}


def model_overrides(text: str) -> Dict[str, Any]:
    """``--model-overrides`` parsed as a Python dict literal.

    Raises:
        ConfigError: if it is not one.
    """
    from fairseq.errors import ConfigError

    try:
        value = ast.literal_eval(text or "{}")
    except (ValueError, SyntaxError) as e:
        raise ConfigError(f"common_eval.model_overrides={text!r} is not a Python dict literal "
                          f"({type(e).__name__}); write e.g. --model-overrides \"{{'dropout': 0.0}}\"") from e
    if not isinstance(value, dict):
        raise ConfigError(f"common_eval.model_overrides={text!r} is a {type(value).__name__}, not a "
                          "dict; write e.g. --model-overrides \"{'dropout': 0.0}\"")
    return value
