"""Legacy command-line parsers, generated from the config dataclasses.

``parse_args_and_arch`` reads fairseq-style flags (``--arch transformer_lm --lr 0.0005 ...``)
in two passes: the first finds the chosen components, the second adds their fields (with the
architecture's preset as defaults, so an explicit flag always wins) and parses everything.
"""
import argparse
import difflib
import sys
from argparse import ArgumentParser, Namespace
from typing import List, Optional, Sequence

from fairseq.dataclass.configs import GENERIC_GROUPS
from fairseq.dataclass.utils import gen_parser_from_dataclass

# legacy flag -> (registry group, namespace attribute)
COMPONENT_FLAGS = {
    "task": ("--task", "task"),
    "model": ("--arch", "arch"),
    "criterion": ("--criterion", "criterion"),
    "optimizer": ("--optimizer", "optimizer"),
    "lr_scheduler": ("--lr-scheduler", "lr_scheduler"),
}


def default_choices() -> dict:
    """The component choices of ``config/config.yaml``: both doors default to the same job."""
    from omegaconf import OmegaConf

    from fairseq.dataclass.initialize import config_dir

    choices = {}
    for entry in OmegaConf.load(f"{config_dir()}/config.yaml").get("defaults", []):
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            choices.update({str(k): str(v) for k, v in entry.items()})
    return choices


class FairseqArgumentParser(ArgumentParser):
    """An ArgumentParser whose errors suggest the closest real flag and never show a traceback."""

    def error(self, message: str):  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            flags = [s for s in self._option_string_actions if s.startswith("--")]
            hints = []
            for arg in unknown:
                if not arg.startswith("-"):
                    if "=" in arg and "." in arg.split("=", 1)[0]:
                        hints.append(f"{arg!r} looks like a Hydra override; use fairseq-hydra-train "
                                     "for overrides, or the matching --flag here")
                    continue
                name = arg.split("=", 1)[0]
                match = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
                if match:
                    hints.append(f"{name}: did you mean {match[0]}?")
            if hints:
                message += "\n  " + "\n  ".join(hints)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _registries():
    from fairseq.dataclass.initialize import import_components
    from fairseq.registry import ALL_REGISTRIES

    import_components()
    return ALL_REGISTRIES


def _preload_user_dir(input_args: Optional[Sequence[str]]) -> None:
    """Import ``--user-dir`` before the parser is built, so plugins appear in choices and --help."""
    from fairseq.dataclass.initialize import import_user_module

    pre = ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--user-dir", default=None)
    known, _ = pre.parse_known_args(input_args)
    import_user_module(known.user_dir)


def get_parser(desc: str, default_task: str = "language_modeling",
               input_args: Optional[Sequence[str]] = None) -> ArgumentParser:
    """The common flags plus ``--task``."""
    _preload_user_dir(input_args if input_args is not None else sys.argv[1:])
    registries = _registries()
    parser = FairseqArgumentParser(description=desc, allow_abbrev=False, add_help=False)
    gen_parser_from_dataclass(parser.add_argument_group("common"), GENERIC_GROUPS["common"])
    choices = registries["task"].choices()
    parser.add_argument("--task", metavar="TASK", default=default_task, choices=choices,
                        help=f"task (default: {default_task}; one of: {', '.join(choices)})")
    return parser


def add_component_choices(parser: ArgumentParser, groups: Sequence[str]) -> None:
    registries = _registries()
    for group in groups:
        flag, dest = COMPONENT_FLAGS[group]
        choices = registries[group].choices()
        default = default_choices().get(group)
        kwargs = dict(dest=dest, choices=choices, metavar=group.upper(), default=default,
                      help=f"{group} (default: {default}; one of: {', '.join(choices)})")
        aliases = ["-a"] if group == "model" else []
        parser.add_argument(flag, *aliases, **kwargs)


def get_training_parser(default_task: str = "language_modeling",
                        input_args: Optional[Sequence[str]] = None) -> ArgumentParser:
    """The parser of ``fairseq-train``: every generic group and the component choices."""
    parser = get_parser("Trainer", default_task, input_args)
    for name in ("dataset", "distributed_training", "optimization", "checkpoint"):
        gen_parser_from_dataclass(parser.add_argument_group(name), GENERIC_GROUPS[name])
    add_component_choices(parser, ("model", "criterion", "optimizer", "lr_scheduler"))
    return parser


def get_eval_lm_parser(default_task: str = "language_modeling",
                       input_args: Optional[Sequence[str]] = None) -> ArgumentParser:
    """The parser of ``fairseq-eval-lm``."""
    parser = get_parser("Evaluate a language model", default_task, input_args)
    for name in ("dataset", "common_eval", "eval_lm"):
        gen_parser_from_dataclass(parser.add_argument_group(name), GENERIC_GROUPS[name])
    return parser


def parse_args_and_arch(parser: ArgumentParser, input_args: Optional[List[str]] = None,
                        parse_known: bool = False, suppress_defaults: bool = False,
                        modify_parser=None) -> Namespace:
    """Parse legacy flags, adding the flags of the chosen components in a second pass.

    Args:
        parser: from :func:`get_training_parser` (or another ``get_*_parser``).
        input_args: the arguments (default ``sys.argv[1:]``).
        parse_known: return ``(args, extra)`` instead of failing on unknown flags.
        suppress_defaults: keep only flags given explicitly.
        modify_parser: a callable that adds flags to the parser before the final parse.
    """
    registries = _registries()
    if modify_parser is not None:
        modify_parser(parser)
    first, _ = parser.parse_known_args(input_args)
    for group, (_flag, dest) in COMPONENT_FLAGS.items():
        name = getattr(first, dest, None)
        if name is None or group not in registries:
            continue
        entry = registries[group].get(name)
        if entry.dataclass is None:
            continue
        title = "model" if group == "model" else group
        gen_parser_from_dataclass(parser.add_argument_group(f"{title} ({name})"),
                                  entry.default_config(), delete_default=suppress_defaults)
    parser.add_argument("-h", "--help", action="help", help="show this help message and exit")
    if parser.epilog is None and any(a.dest == "arch" for a in parser._actions):
        from fairseq.dataclass.help import text_help

        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = ("Every registered component and its fields (the flags of a component "
                         "are accepted once it is chosen):\n\n" + text_help(style="legacy"))
    if parse_known:
        return parser.parse_known_args(input_args)
    args = parser.parse_args(input_args)
    return args
