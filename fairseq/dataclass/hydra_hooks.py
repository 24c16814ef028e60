"""The only place this package reaches into Hydra's private internals (Hydra 1.3).

Three small wrappers, installed by :func:`install_hydra_hooks` when a config is first composed
(never when a module is imported):

* ``ConfigLoaderImpl._load_single_config``: numbers for list fields in YAML files become lists;
* ``ConfigLoaderImpl._apply_overrides_to_config``: the same for overrides, those a sweeper makes
  for each job included (Optuna's ``interval()`` hands each trial a number);
* ``ConfigSource._get_header_dict``: fairseq 0.12's ``# @package _group_`` header read as
  Hydra 1.3's default package.

and :func:`user_tree`, the search path ``--config-dir`` gives (the built-in tree first, then
the user's directory), built with Hydra's private ``create_config_search_path`` because the
public ``initialize_*`` functions take one directory; :func:`parse_command_line`, Hydra's own
command-line parser (``get_args_parser``, which ``@hydra.main`` uses), so the doors read
``--multirun``, ``--cfg``, ``--config-dir`` ... exactly as Hydra will.

Hydra offers no public hook for any of these. ``tests/test_hydra_hooks.py`` fails when a
Hydra version renames or re-signs one of them, so an upgrade cannot silently drop a rule.
"""
import argparse
import contextlib
from typing import List, Sequence, Tuple

from omegaconf import DictConfig

from fairseq.dataclass.list_fields import wrap_override_scalar, wrap_scalars_for_lists

__all__ = ["HOOKED", "forget_hydra_run", "hydra_flags", "install_hydra_hooks", "parse_command_line", "user_tree"]

# (class path, attribute, the parameters the wrapper relies on)
HOOKED = (
    ("hydra._internal.config_loader_impl.ConfigLoaderImpl", "_load_single_config", ("self", "default", "repo")),
    ("hydra._internal.config_loader_impl.ConfigLoaderImpl", "_apply_overrides_to_config", ("overrides", "cfg")),
    ("hydra.plugins.config_source.ConfigSource", "_get_header_dict", ("config_text",)),
)


def _hook_yaml_loading() -> None:
    """Apply :func:`wrap_scalars_for_lists` to every config Hydra loads, at its package."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    load = ConfigLoaderImpl._load_single_config
    if getattr(load, "_fairseq_wraps", False):
        return

    def _load_single_config(self, default, repo):
        result = load(self, default, repo)
        if isinstance(result.config, DictConfig) and not result.is_schema_source:
            wrap_scalars_for_lists(result.config, (default.package or "").replace("_global_", "").strip("."))
        return result

    _load_single_config._fairseq_wraps = True
    ConfigLoaderImpl._load_single_config = _load_single_config


def _hook_override_values() -> None:
    """Apply the number-to-list rule to every override Hydra applies to a job's config, also
    those a sweeper makes for each job (Optuna's ``optimization.lr=interval(...)`` hands each
    trial ``optimization.lr=0.0031``, which becomes ``[0.0031]``)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    apply = ConfigLoaderImpl._apply_overrides_to_config
    if getattr(apply, "_fairseq_wraps", False):
        return

    def _apply_overrides_to_config(overrides, cfg):
        return apply([wrap_override_scalar(o) for o in overrides], cfg)

    _apply_overrides_to_config._fairseq_wraps = True
    ConfigLoaderImpl._apply_overrides_to_config = staticmethod(_apply_overrides_to_config)


def _accept_group_header() -> None:
    """Read fairseq 0.12's ``# @package _group_`` header (Hydra 1.0) as Hydra 1.3's default
    package, the config's group, which is what it meant; Hydra 1.3 would take ``_group_`` as a key."""
    from hydra.plugins.config_source import ConfigSource

    header = ConfigSource._get_header_dict
    if getattr(header, "_fairseq_wraps", False):
        return

    def _get_header_dict(config_text):
        res = header(config_text)
        if res.get("package") == "_group_":
            res["package"] = None
        return res

    _get_header_dict._fairseq_wraps = True
    ConfigSource._get_header_dict = staticmethod(_get_header_dict)


def install_hydra_hooks() -> None:
    """Hook fairseq's config rules into Hydra's loader (idempotent): numbers for list fields in
    YAML files and in overrides, and fairseq 0.12's ``# @package _group_`` header. Run by
    :func:`fairseq.dataclass.compose.hydra_init` before any composition, and when the Hydra
    door's module is imported, so a launcher's worker process (joblib) that imports the task
    function composes its job's config by the same rules."""
    _hook_yaml_loading()
    _hook_override_values()
    _accept_group_header()


@contextlib.contextmanager
def user_tree(main_dir: str, user_dir: str):
    """Hydra initialized with the search path ``--config-dir`` gives a run: the built-in tree
    (where the primary config is looked up first), then the user's directory, then the schemas."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    version.setbase("1.3")
    search_path = create_config_search_path(main_dir)
    search_path.prepend(provider="command-line", path=f"file://{user_dir}",
                        anchor=SearchPathQuery(provider="schema"))
    Hydra.create_main_hydra2(task_name="app", config_search_path=search_path)
    try:
        yield
    finally:
        GlobalHydra.instance().clear()


def parse_command_line(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str], List[str]]:
    """``(flags, overrides, unknown)`` of a Hydra command line, read by Hydra's own parser.

    ``flags`` is the namespace of Hydra's options (``multirun``, ``cfg``, ``config_name``,
    ``config_dir``, ``info``, ...); ``unknown`` holds what Hydra would refuse, such as a legacy
    ``--max-tokens``, for the caller to explain.

    Raises:
        argparse.ArgumentError: a Hydra option with a bad value (``--cfg jobs``).
    """
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    known, unknown = parser.parse_known_intermixed_args(list(argv))
    overrides = list(known.overrides or [])
    known.overrides = []
    return known, overrides, unknown


def hydra_flags(known: argparse.Namespace) -> List[str]:
    """The command-line flags that give Hydra's parser ``known`` again (overrides aside)."""
    from hydra._internal.utils import get_args_parser

    flags: List[str] = []
    for action in get_args_parser()._actions:
        if not action.option_strings:
            continue
        value = getattr(known, action.dest, action.default)
        if value == action.default:
            continue
        flags.append(action.option_strings[0])
        if action.nargs != 0:
            flags.append(str(value))
    return flags


def forget_hydra_run() -> None:
    """Forget the run that Hydra's app leaves behind in this process (its ``HydraConfig``, which
    Hydra never clears), so that a later run in the same process (a notebook, a test) does not
    take the earlier run's launch directory for its own."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
