"""Legacy command-line parsers, generated from the config dataclasses.

``parse_args_and_arch`` reads fairseq-style flags (``--arch transformer_lm --lr 0.0005 ...``)
in two passes: the first finds the chosen components, the second adds their fields (with the
architecture's preset as defaults, so an explicit flag always wins) and parses everything.
"""
import argparse
import difflib
import sys
from argparse import ArgumentParser, Namespace
from typing import Any, Dict, List, Optional, Sequence

from fairseq.dataclass.configs import GENERIC_GROUPS, OPTIONAL_COMPONENT_GROUPS
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.registry import LEGACY_CHOICE_ATTRS, legacy_flag

# registry group -> (legacy flag, namespace attribute), from the registry's one map
COMPONENT_FLAGS = {group: (legacy_flag(group), attr) for group, attr in LEGACY_CHOICE_ATTRS.items()}


# fairseq 0.12's argparse defaults for the component choices of ``fairseq-train``. The Hydra
# door picks its components in config/config.yaml instead; docs/training.md ("Defaults of the
# two doors") lists where the two differ and why. None means the flag has no default: training
# without it stops with an error naming the flag, as fairseq does.
LEGACY_DEFAULT_CHOICES: Dict[str, Optional[str]] = {
    "task": "language_modeling",  # fairseq: translation; language modeling is this package's task
    "model": None,  # --arch is required
    "criterion": "cross_entropy",
    "optimizer": None,  # --optimizer is required
    "lr_scheduler": "fixed",
    "bpe": None,  # optional: no subword model
    "tokenizer": None,  # optional: no word tokenizer
}


def default_choices() -> Dict[str, Optional[str]]:
    """The legacy door's component defaults: fairseq 0.12's (``--lr-scheduler fixed``, ...)."""
    return dict(LEGACY_DEFAULT_CHOICES)


class FairseqArgumentParser(ArgumentParser):
    """An ArgumentParser whose errors are one line that suggests the closest real flag."""

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
                message += "; " + "; ".join(hints)
        # one line, as every user error (docs/design.md, Errors): the usage is --help's to show
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _registries():
    from fairseq.registry import import_builtin_components as import_components
    from fairseq.registry import ALL_REGISTRIES

    import_components()
    return ALL_REGISTRIES


def _preload_user_dir(input_args: Optional[Sequence[str]]) -> None:
    """Import ``--user-dir`` before the parser is built, so plugins appear in choices and --help."""
    from fairseq.dataclass.compose import import_user_module

    pre = ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--user-dir", default=None)
    known, _ = pre.parse_known_args(input_args)
    import_user_module(known.user_dir)


def _resolve_default_task(default_task: Optional[str]) -> str:
    """``default_task`` when it is a registered task, else the task registry's default.

    fairseq's parsers default to ``translation``; in this project's scope a parser defaulting
    to a task that is not registered would only fail later, so it falls back to
    ``language_modeling``.
    """
    registry = _registries()["task"]
    if default_task is not None and default_task in registry.choices():
        return default_task
    return registry.default


def get_parser(desc: str, default_task: Optional[str] = "language_modeling",
               input_args: Optional[Sequence[str]] = None, train: bool = True) -> ArgumentParser:
    """The common flags plus ``--task`` (defaulting to ``default_task`` if it is registered,
    else to ``language_modeling``). ``train=False`` leaves out the training-only flags (loss
    scaling, TensorBoard, ...), for the evaluation commands."""
    _preload_user_dir(input_args if input_args is not None else sys.argv[1:])
    registries = _registries()
    default_task = _resolve_default_task(default_task)
    parser = FairseqArgumentParser(description=desc, allow_abbrev=False, add_help=False)
    gen_parser_from_dataclass(parser.add_argument_group("common"), GENERIC_GROUPS["common"],
                              skip_scopes=() if train else ("train",))
    choices = registries["task"].choices()
    parser.add_argument("--task", metavar="TASK", default=default_task, choices=choices,
                        help=f"task (default: {default_task}; one of: {', '.join(choices)})")
    # as in fairseq, every command names its subword model and tokenizer (default: none)
    add_component_choices(parser, OPTIONAL_COMPONENT_GROUPS)
    return parser


def add_component_choices(parser: ArgumentParser, groups: Sequence[str]) -> None:
    """Add ``--arch``, ``--criterion``, ... with fairseq 0.12's defaults (:func:`default_choices`)."""
    registries = _registries()
    defaults = default_choices()
    for group in groups:
        flag, dest = COMPONENT_FLAGS[group]
        choices = registries[group].choices()
        default = defaults.get(group)
        if default is not None:
            shown = f"default: {default}"
        else:
            shown = "default: none" if group in OPTIONAL_COMPONENT_GROUPS else "required for training"
        kwargs = dict(dest=dest, choices=choices, metavar=group.upper(), default=default,
                      help=f"{group} ({shown}; one of: {', '.join(choices)})")
        aliases = ["-a"] if group == "model" else []
        parser.add_argument(flag, *aliases, **kwargs)


def get_training_parser(default_task: str = "language_modeling",
                        input_args: Optional[Sequence[str]] = None) -> ArgumentParser:
    """The parser of ``fairseq-train``: every generic group and the component choices."""
    parser = get_parser("Trainer", default_task, input_args)
    add_dataset_args(parser, train=True)
    add_distributed_training_args(parser)
    add_optimization_args(parser)
    add_checkpoint_args(parser)
    add_component_choices(parser, ("model", "criterion", "optimizer", "lr_scheduler"))
    return parser


def get_eval_lm_parser(default_task: str = "language_modeling",
                       input_args: Optional[Sequence[str]] = None) -> ArgumentParser:
    """The parser of ``fairseq-eval-lm``."""
    parser = get_parser("Evaluate a language model", default_task, input_args, train=False)
    add_dataset_args(parser, gen=True)
    add_eval_lm_args(parser)
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
        title = "model" if group == "model" else group
        if entry.dataclass is None:
            # a component written for fairseq's older API declares its flags in add_args
            add_args = getattr(entry.cls, "add_args", None)
            if add_args is not None:
                add_args(parser.add_argument_group(f"{title} ({name})"))
            continue
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


# -- fairseq's parser builders ------------------------------------------------------------------
def get_preprocessing_parser(default_task: str = "translation",
                             input_args: Optional[Sequence[str]] = None) -> ArgumentParser:
    """The common flags, ``--task`` and every flag of ``fairseq-preprocess``.

    It parses any ``fairseq-preprocess`` command line to the same values as that command's own
    parser (``fairseq_cli.preprocess.get_preprocessing_parser``), whose flags it adds.
    """
    parser = get_parser("Preprocessing", default_task, input_args)
    add_preprocess_args(parser)
    return parser


def get_validation_parser(default_task: Optional[str] = None,
                          input_args: Optional[Sequence[str]] = None) -> ArgumentParser:
    """The flags of ``fairseq-validate``: dataset, distributed and evaluation (``--path``, ...)."""
    parser = get_parser("Validation", default_task, input_args, train=False)
    add_dataset_args(parser)  # splits and validation flags, not training cadence
    add_distributed_training_args(parser, default_world_size=1)
    add_common_eval_args(parser.add_argument_group("Evaluation"))
    return parser


def get_generation_parser(interactive: bool = False, default_task: str = "translation",
                          input_args: Optional[Sequence[str]] = None) -> ArgumentParser:
    """The flags of ``fairseq-generate`` (with ``interactive``, of ``fairseq-interactive``)."""
    parser = get_parser("Generation", default_task, input_args, train=False)
    add_dataset_args(parser, gen=True)
    add_distributed_training_args(parser, default_world_size=1)
    add_generation_args(parser)
    add_checkpoint_args(parser)
    if interactive:
        add_interactive_args(parser)
    return parser


def get_interactive_generation_parser(default_task: str = "translation",
                                      input_args: Optional[Sequence[str]] = None) -> ArgumentParser:
    """The flags of ``fairseq-interactive``."""
    return get_generation_parser(interactive=True, default_task=default_task, input_args=input_args)


get_interactive_parser = get_interactive_generation_parser


def preprocess_flags(parser: Any) -> None:
    """Add every flag of ``fairseq-preprocess`` to ``parser`` (a parser or a group of one)."""
    from fairseq.data.indexed_dataset import SUPPORTED_IMPLS

    parser.add_argument("-s", "--source-lang", metavar="SRC", default=None, help="source language (file suffix)")
    parser.add_argument("-t", "--target-lang", metavar="TARGET", default=None, help="target language (file suffix)")
    parser.add_argument(
        "--trainpref", metavar="FP", default=None,
        help="comma-separated train file prefixes (they also build the dictionary); outputs train, train1, ...",
    )
    parser.add_argument(
        "--validpref", metavar="FP", default=None,
        help="comma-separated valid file prefixes; outputs valid, valid1, valid2, ...",
    )
    parser.add_argument(
        "--testpref", metavar="FP", default=None,
        help="comma-separated test file prefixes; outputs test, test1, test2, ...",
    )
    parser.add_argument("--destdir", metavar="DIR", default="data-bin", help="destination directory")
    parser.add_argument(
        "--thresholdsrc", metavar="N", type=int, default=0,
        help="map words appearing fewer than N times to <unk>",
    )
    parser.add_argument(
        "--nwordssrc", metavar="N", type=int, default=-1,
        help="keep at most N symbols in the dictionary, special symbols included (-1: all)",
    )
    parser.add_argument("--srcdict", metavar="FP", default=None, help="reuse this dict.txt instead of building one")
    parser.add_argument("--only-source", action="store_true", help="only process the source side (LM data)")
    parser.add_argument("--dict-only", action="store_true", help="only build the dictionary, binarize nothing")
    parser.add_argument(
        "--padding-factor", metavar="N", type=int, default=8,
        help="pad the dictionary size to a multiple of N (for efficient GPU kernels)",
    )
    parser.add_argument(
        "--workers", metavar="N", type=int, default=1,
        help="number of parallel processes; each binarizes a byte range of every file",
    )
    parser.add_argument(
        "--dataset-impl", metavar="FORMAT", choices=list(SUPPORTED_IMPLS), default="mmap",
        help="output dataset implementation",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the data-bin already in --destdir: every split is rebuilt with the new dictionary "
             "and the old splits this run does not write are deleted (without it, such a destdir is refused)",
    )
    parser.add_argument("--log-format", default=None, help="accepted for compatibility; ignored")
    parser.add_argument("--log-interval", type=int, default=100, help="accepted for compatibility; ignored")


def add_preprocess_args(parser: ArgumentParser) -> argparse._ArgumentGroup:
    """Add the flags of ``fairseq-preprocess`` (those the parser does not have yet) in a group."""
    group = parser.add_argument_group("Preprocessing")
    taken = set(parser._option_string_actions)
    own = ArgumentParser(add_help=False, allow_abbrev=False)
    preprocess_flags(own)
    for action in own._actions:
        if isinstance(action, argparse._HelpAction) or taken.intersection(action.option_strings):
            continue
        group._add_action(action)
    return group


def add_dataset_args(parser: ArgumentParser, train: bool = False,
                     gen: bool = False) -> argparse._ArgumentGroup:
    """Add the ``dataset`` group: batching and splits; with ``train``, the training and
    validation flags too (as fairseq, fields of scope ``train`` and ``valid``); with ``gen``
    only, neither (``fairseq-eval-lm``, ``fairseq-generate``).
    """
    group = parser.add_argument_group("dataset")
    skip = () if train else ("train", "valid") if gen else ("train",)
    gen_parser_from_dataclass(group, GENERIC_GROUPS["dataset"], skip_scopes=skip)
    return group


def add_distributed_training_args(parser: ArgumentParser,
                                  default_world_size: Optional[int] = None) -> argparse._ArgumentGroup:
    """Add the ``distributed_training`` group.

    Args:
        default_world_size: the default of ``--distributed-world-size``; ``None`` keeps the
            config's (1: ``torchrun`` sets the real size).
    """
    group = parser.add_argument_group("distributed_training")
    config = GENERIC_GROUPS["distributed_training"]
    gen_parser_from_dataclass(group, config() if default_world_size is None
                              else config(distributed_world_size=default_world_size))
    return group


def add_optimization_args(parser: ArgumentParser) -> argparse._ArgumentGroup:
    """Add the ``optimization`` group (``--lr``, ``--max-update``, ``--clip-norm``, ...)."""
    group = parser.add_argument_group("optimization")
    gen_parser_from_dataclass(group, GENERIC_GROUPS["optimization"])
    return group


def add_checkpoint_args(parser: ArgumentParser) -> argparse._ArgumentGroup:
    """Add the ``checkpoint`` group (``--save-dir``, ``--restore-file``, ...)."""
    group = parser.add_argument_group("checkpoint")
    gen_parser_from_dataclass(group, GENERIC_GROUPS["checkpoint"])
    return group


def add_common_eval_args(group) -> None:
    """Add the evaluation flags (``--path``, ``--quiet``, ``--model-overrides``, ...) to ``group``."""
    from fairseq.dataclass.configs import CommonEvalConfig

    gen_parser_from_dataclass(group, CommonEvalConfig)


def add_eval_lm_args(parser: ArgumentParser) -> argparse._ArgumentGroup:
    """Add the evaluation flags and those of ``fairseq-eval-lm``."""
    from fairseq.dataclass.configs import EvalLMConfig

    group = parser.add_argument_group("LM Evaluation")
    add_common_eval_args(group)
    gen_parser_from_dataclass(group, EvalLMConfig)
    return group


def add_generation_args(parser: ArgumentParser) -> argparse._ArgumentGroup:
    """Add the evaluation flags and those of generation (``--beam``, ``--sampling``, ...)."""
    from fairseq.dataclass.configs import GenerationConfig

    group = parser.add_argument_group("Generation")
    add_common_eval_args(group)
    gen_parser_from_dataclass(group, GenerationConfig)
    return group


def add_interactive_args(parser: ArgumentParser) -> argparse._ArgumentGroup:
    """Add the flags of interactive generation (``--buffer-size``, ``--input``)."""
    from fairseq.dataclass.configs import InteractiveConfig

    group = parser.add_argument_group("Interactive")
    gen_parser_from_dataclass(group, InteractiveConfig)
    return group


def add_model_args(parser: ArgumentParser) -> argparse._ArgumentGroup:
    """Add ``--arch``/``-a``: a model or one of its architecture presets."""
    group = parser.add_argument_group("Model configuration")
    add_component_choices(group, ("model",))
    return group


def get_args(data: str, task: str = "language_modeling", arch: str = "transformer_lm",
             **overrides) -> Namespace:
    """A training namespace for ``data`` with ``--task``/``--arch`` and attribute overrides."""
    parser = get_training_parser(task, input_args=[str(data)])
    args = parse_args_and_arch(parser, [str(data), "--task", task, "--arch", arch])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def __getattr__(name: str):
    """fairseq's options module re-exports the legacy string parsers of :mod:`fairseq.utils`
    (imported on first use: they need torch)."""
    if name in ("csv_str_list", "eval_bool", "eval_str_dict", "eval_str_list"):
        from fairseq import utils

        return getattr(utils, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
