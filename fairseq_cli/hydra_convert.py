"""``fairseq-hydra-convert``: a ``fairseq-train`` command line as ``fairseq-hydra-train``
overrides or an experiment YAML, and overrides back as ``fairseq-train`` flags.

Usage::

    fairseq-hydra-convert -- fairseq-train DATA --arch transformer_lm --lr 0.0005 ...
    fairseq-hydra-convert --to line -- fairseq-train DATA ...      # one command line
    fairseq-hydra-convert --to yaml [--output exp.yaml [--overwrite]] -- fairseq-train DATA ...
    fairseq-hydra-convert --to flags -- fairseq-hydra-train task.data=DATA optimization.lr=[0.001]

Nothing is copied value by value: the legacy command is parsed by the legacy door's own parser
into the run config, the Hydra door's default config (``config/config.yaml`` with the same
component choices) is composed, and only the values that differ become overrides, so the Hydra
door trains exactly the config the legacy command trains (the doors' defaults differ in
``model``, ``optimizer`` and ``lr_scheduler``: a choice is always written out). ``--to flags``
goes the other way, diffing against the legacy door's defaults.
"""
import argparse
import os
import re
import shlex
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

# The Hydra config groups, in config/config.yaml's order, and the legacy flag choosing each.
GROUPS = {
    "task": "--task", "model": "--arch", "criterion": "--criterion", "optimizer": "--optimizer",
    "lr_scheduler": "--lr-scheduler", "bpe": "--bpe", "tokenizer": "--tokenizer",
}
_PLAIN = re.compile(r"^[A-Za-z0-9_./\-]+$")
_SPECIAL = {"true", "false", "null", "none", "nan", "inf", "-inf", "+inf"}


def _flat(d: Any, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + str(k)] = v
    return out


def _resolved(cfg: DictConfig) -> Dict[str, Any]:
    return _flat(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def _raw(cfg: DictConfig) -> Dict[str, Any]:
    return _flat(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True))


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${")


def format_value(value: Any) -> str:
    """``value`` in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _SPECIAL:
        try:
            float(text)
        except ValueError:
            return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _strip_program(argv: Sequence[str], names: Tuple[str, ...]) -> List[str]:
    argv = list(argv)
    if argv and argv[0].rsplit("/", 1)[-1] in names:
        argv = argv[1:]
    return argv


def legacy_config(argv: Sequence[str]) -> DictConfig:
    """The run config ``fairseq-train ARGV`` trains."""
    from fairseq import options
    from fairseq.errors import ConfigError
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = _strip_program(argv, ("fairseq-train",))
    program, sys.argv[0] = sys.argv[0], "fairseq-train"  # its errors name the legacy command
    try:
        parser = options.get_training_parser(input_args=argv)
        args = options.parse_args_and_arch(parser, argv)
    finally:
        sys.argv[0] = program
    for flag, dest in (("DATA", "data"), ("--arch", "arch"), ("--optimizer", "optimizer")):
        # optional: this is the check that the legacy parser got the flag
        if getattr(args, dest, None) is None:
            raise ConfigError(f"the legacy command has no {flag}: fairseq-train needs it to train")
    return convert_namespace_to_omegaconf(args)


def choices_of(cfg: DictConfig) -> Dict[str, Optional[str]]:
    """The component chosen in each config group (None: the group is empty)."""
    out = {}
    for group in GROUPS:
        node = cfg.get(group)  # optional: an unchosen group has no node
        out[group] = None if node is None else node.get("_name")
    return out


def legacy_to_overrides(argv: Sequence[str]) -> List[str]:
    """The ``fairseq-hydra-train`` overrides that train what ``fairseq-train ARGV`` trains."""
    from fairseq.dataclass.initialize import compose_config

    target_cfg = legacy_config(argv)
    target = _resolved(target_cfg)
    default_choices = choices_of(compose_config([]))
    # every component is written out (the doors' defaults differ); an empty group only when
    # config/config.yaml fills it
    overrides = [f"{group}={'null' if name is None else name}"
                 for group, name in choices_of(target_cfg).items()
                 if name is not None or default_choices[group] is not None]
    base = compose_config(overrides)
    base_raw, base_res = _raw(base), _resolved(base)
    # first the values set directly; then what an interpolation still leaves different
    values = [f"{k}={format_value(v)}" for k, v in target.items()
              if k in base_res and not _is_interpolation(base_raw[k]) and base_res[k] != v]
    second = _resolved(compose_config(overrides + values))
    values += [f"{k}={format_value(v)}" for k, v in target.items()
               if k in second and second[k] != v]
    return overrides + values


def legacy_to_yaml(argv: Sequence[str]) -> str:
    """An experiment config for ``--config-dir DIR --config-name NAME`` equal to the legacy run."""
    from fairseq.errors import ConfigError

    defaults: List[Any] = ["config"]
    values: Dict[str, Any] = {}
    for text in legacy_to_overrides(argv):
        key, value = text.split("=", 1)
        if key in GROUPS:
            defaults.append({f"override /{key}": None if value == "null" else value})
            continue
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = OmegaConf.to_container(OmegaConf.create({"v": _yaml_value(value)}))["v"]
    defaults.append("_self_")
    if "config" in values:
        raise ConfigError("a key named 'config' cannot sit at the top of an experiment YAML")
    header = ("# Written by fairseq-hydra-convert. Run it with:\n"
              "#   fairseq-hydra-train --config-dir DIR --config-name NAME\n"
              "# (DIR holding this file as NAME.yaml; it builds on the built-in config/config.yaml)\n")
    return header + OmegaConf.to_yaml(OmegaConf.create({"defaults": defaults, **values}))


def _yaml_value(text: str) -> Any:
    """An override's value back as a Python value (Hydra's own grammar parses it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(f"k={text}").value()


def overrides_to_flags(overrides: Sequence[str]) -> List[str]:
    """The ``fairseq-train`` arguments that train what ``fairseq-hydra-train OVERRIDES`` trains."""
    from fairseq import options
    from fairseq.dataclass.initialize import compose_config
    from fairseq.dataclass.overrides import ConfigError, check_overrides

    overrides = _strip_program(overrides, ("fairseq-hydra-train",))
    target_cfg = compose_config(check_overrides(list(overrides)))
    # optional: data belongs to language_modeling; a plugin task may lack it (checked below)
    data = target_cfg.task.get("data")
    if data in (None, "???") or OmegaConf.is_missing(target_cfg.task, "data"):
        raise ConfigError("task.data is not set: fairseq-train needs the data directory "
                          "(add task.data=DIR)")
    argv = [str(data)]
    for group, name in choices_of(target_cfg).items():
        if name is not None:
            argv += [GROUPS[group], name]
    base = legacy_config(argv)
    target, base_raw, base_res = _resolved(target_cfg), _raw(base), _resolved(base)
    parser = options.get_training_parser(input_args=argv)
    options.parse_args_and_arch(parser, list(argv))  # adds the chosen components' flags
    known = {s for a in parser._actions for s in a.option_strings}

    def flags_for(key: str, value: Any) -> List[str]:
        name = key.rsplit(".", 1)[-1]
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value and flag in known:
                return [flag]
            if not value and "--no-" + flag[2:] in known:
                return ["--no-" + flag[2:]]
        elif flag in known:
            if isinstance(value, (list, tuple)):
                return [flag, ",".join(str(v) for v in value)]
            return [flag, str(value)]
        raise ConfigError(f"{key}={format_value(value)} has no fairseq-train flag")

    changed = [k for k, v in target.items() if k in base_res and k != "task.data"
               and not _is_interpolation(base_raw[k]) and base_res[k] != v]
    for key in changed:
        argv += flags_for(key, target[key])
    second = _resolved(legacy_config(argv))
    for key, value in target.items():
        if key in second and second[key] != value:
            argv += flags_for(key, value)
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairseq-hydra-convert",
        description="Convert a fairseq-train command line into fairseq-hydra-train overrides or an "
                    "experiment YAML, or overrides into fairseq-train flags. Put the command to "
                    "convert after --.",
        epilog="examples:\n"
               "  fairseq-hydra-convert -- fairseq-train demo/data-bin --arch transformer_lm "
               "--optimizer adam --lr 0.0005\n"
               "  fairseq-hydra-convert --to yaml -o exp.yaml -- fairseq-train demo/data-bin ...\n"
               "  fairseq-hydra-convert --to flags -- task.data=demo/data-bin optimization.lr=[0.001]",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", choices=["overrides", "line", "yaml", "flags"], default="overrides",
                        help="overrides: one Hydra override a line (default); line: one "
                             "fairseq-hydra-train command line; yaml: an experiment config for "
                             "--config-dir/--config-name; flags: the input is Hydra overrides, "
                             "the output one fairseq-train command line")
    parser.add_argument("-o", "--output", help="write here instead of standard output (an existing "
                                                   "file only with --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="let -o/--output replace an existing file")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="after --: the fairseq-train (or, with --to flags, fairseq-hydra-train) "
                             "command line, program name optional")
    return parser


def convert(to: str, command: Sequence[str]) -> str:
    if to == "flags":
        return shlex.join(["fairseq-train"] + overrides_to_flags(command)) + "\n"
    if to == "yaml":
        return legacy_to_yaml(command)
    overrides = legacy_to_overrides(command)
    if to == "line":
        return shlex.join(["fairseq-hydra-train"] + overrides) + "\n"
    return "".join(o + "\n" for o in overrides)


def _cli_main(argv: Optional[List[str]] = None) -> None:
    from fairseq.errors import ConfigError

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("nothing to convert: put the command after --, e.g. "
                          "fairseq-hydra-convert -- fairseq-train DATA --arch transformer_lm "
                          "--optimizer adam")
    if args.output:
        check_output(args.output, args.overwrite)
    text = convert(args.to, command)
    if args.output:
        write_output(args.output, text, args.overwrite)
    else:
        sys.stdout.write(text)


def check_output(path: str, overwrite: bool) -> None:
    """Refuse an ``-o/--output`` that cannot be written, or that exists without ``--overwrite``
    (checked before converting)."""
    from fairseq.errors import ConfigError, ResourceError

    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"-o/--output {path} is a directory; give the path of a file")
    if os.path.lexists(path) and not overwrite:
        raise ConfigError(f"-o/--output {path} already exists; pass --overwrite to replace it, or "
                          "give another file")
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise ResourceError(f"-o/--output {path}: {directory} {what}; give a path in an existing "
                            "directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ResourceError(f"-o/--output {path}: {directory} is not writable; give a path in a "
                            "directory you can write")


def write_output(path: str, text: str, overwrite: bool) -> None:
    """Write ``text`` to ``path``: a new file is created exclusively (never replacing one that
    appeared meanwhile); with ``overwrite`` a temporary file beside ``path`` is renamed over it,
    so the old file is whole until the new one is."""
    from fairseq.errors import ConfigError, ResourceError
    from fairseq.file_io import umask

    tmp = None
    try:
        if not overwrite:
            with open(path, "x") as f:
                f.write(text)
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                                   dir=os.path.dirname(os.path.abspath(path)))
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        tmp = None
    except FileExistsError:
        raise ConfigError(f"-o/--output {path} already exists; pass --overwrite to replace it, or "
                          "give another file") from None
    except OSError as err:
        raise ResourceError(f"-o/--output {path} cannot be written: {err.strerror}; give another "
                            "path") from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.remove(tmp)


def cli_main(argv: Optional[List[str]] = None) -> None:
    """``fairseq-hydra-convert``."""
    from fairseq_cli.common import run_with_clear_errors

    run_with_clear_errors(_cli_main, argv)


if __name__ == "__main__":
    cli_main()
