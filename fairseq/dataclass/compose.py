"""Registering every config with Hydra, and composing the run's config (the Hydra door's way,
also outside a Hydra app).

Layout of what Hydra sees:

* ``config/config.yaml`` (the primary config) extends ``fairseq_config`` (the
  :class:`FairseqConfig` schema) and picks one entry per component group.
* Every registered component ``NAME`` of group ``G`` is stored as ``schema/G/NAME`` in the
  ConfigStore: its dataclass, preset applied, ``_name`` set.
* ``config/G/NAME.yaml`` extends ``schema/G/NAME`` and may change values. A registered name
  with no YAML file is also stored directly as ``G/NAME``, so presets and user plugins are
  selectable without writing YAML.
"""
import copy
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from fairseq.dataclass.configs import COMPONENT_GROUPS, FairseqConfig
from fairseq.dataclass.hydra_hooks import install_hydra_hooks, user_tree
from fairseq.dataclass.list_fields import wrap_scalars_for_lists
from fairseq.errors import ConfigError
from fairseq.registry import ALL_REGISTRIES, import_builtin_components


def config_dir() -> str:
    """The directory of the Hydra config tree (installed copy first, then the source checkout)."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "config", package_dir.parent / "config"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"cannot find the Hydra config tree (config/config.yaml) next to {package_dir}; "
        "reinstall the package (pip install .)"
    )


def import_user_module(user_dir: Optional[str]) -> None:
    """Import a directory of user components (``common.user_dir`` / ``--user-dir``).

    It is imported as a package named after the directory, before any config is composed, so
    its registrations are visible to both doors. The same directory imported again is a no-op.
    Only directories the user names are imported (``--user-dir``, ``common.user_dir=``,
    ``from_pretrained(..., user_dir=...)``), never the ``common.user_dir`` a checkpoint records.

    Raises:
        FileNotFoundError: no such directory, or no ``__init__.py`` in it.
        fairseq.dataclass.overrides.ConfigError: its name is already another module's (a
            directory named ``json`` or ``fairseq``): importing it would do nothing, or shadow
            that module.
    """
    if not user_dir:
        return
    path = Path(user_dir).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"common.user_dir={user_dir!r}: no such directory")
    name = path.name
    init = path / "__init__.py"
    if name in sys.modules:
        if _module_is_dir(sys.modules[name], path):
            return
        _name_taken(user_dir, name, getattr(sys.modules[name], "__file__", None) or "built in")
    if not init.is_file():
        raise FileNotFoundError(f"common.user_dir={user_dir!r} has no __init__.py to import")
    try:  # a top-level name: finds, imports nothing
        spec = importlib.util.find_spec(name) if "." not in name else None
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin is not None and (
            not spec.has_location or Path(spec.origin).resolve() != init.resolve()):
        _name_taken(user_dir, name, spec.origin)
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)  # a failed import is retried, not taken as done
        # the plugin is the user's input: one line naming its line that failed, not a traceback
        # through the registry or dataclasses (a Python caller still gets it, chained)
        raise ConfigError(f"common.user_dir={user_dir!r}: importing the plugin failed at "
                          f"{_plugin_line(e, path)}: {type(e).__name__}: {e}; fix the plugin's code "
                          "(importing it in Python shows the traceback)") from e
    except BaseException:
        sys.modules.pop(name, None)
        raise
    # a launcher's worker processes (joblib, submitit) unpickle the plugin's configs by module
    # name: they get this process's sys.path, so the plugin's parent goes at its end (after
    # everything installed, so it shadows nothing)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))


def _plugin_line(error: BaseException, path: Path) -> str:
    """``FILE:LINE`` of the innermost frame of ``error``'s traceback inside the plugin
    directory ``path`` (the directory itself when no frame is)."""
    where = str(path)
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if Path(filename).resolve().is_relative_to(path):
            # relative to where the command runs when below it: the name the user typed
            shown = os.path.relpath(filename)
            where = f"{filename if shown.startswith('..') else shown}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def _module_is_dir(module, path: Path) -> bool:
    """Whether the imported ``module`` is the package of directory ``path``."""
    locations = list(getattr(module, "__path__", None) or [])
    try:
        return any(Path(p).resolve() == path for p in locations)
    except (OSError, TypeError):
        return False


def _name_taken(user_dir: str, name: str, where: str) -> None:
    raise ConfigError(f"common.user_dir={user_dir!r}: its directory name {name!r} is already the name of "
                      f"the module {where}; a plugin is imported under its directory's name, so "
                      "rename the directory to something unique")


def yaml_choices(group: str, user_config_dir: Optional[str] = None) -> list:
    """The names selectable as ``group=NAME`` through a YAML file: ``G/NAME.yaml`` (also
    nested, ``model/transformer_lm/transformer_lm_gpt.yaml`` is ``transformer_lm/transformer_lm_gpt``)
    in the user's config directory and in the built-in tree, sorted."""
    names = set()
    for root in ([user_config_dir] if user_config_dir else []) + [config_dir()]:
        base = Path(root) / group
        if base.is_dir():
            names.update(p.relative_to(base).with_suffix("").as_posix() for p in base.rglob("*.yaml"))
            names.update(p.relative_to(base).with_suffix("").as_posix() for p in base.rglob("*.yml"))
    return sorted(names)


_stored: set = set()
# composed configs by (overrides, config name, ConfigStore generation): see compose_config
_composed: dict = {}
_COMPOSED_MAX = 32


def _store_generation() -> Tuple[int, ...]:
    """What changes whenever Hydra's ConfigStore gains or replaces a node (a plugin registered,
    a test storing its own): the identities of the stored nodes, in order."""
    ids: List[int] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        else:
            ids.append(id(node))

    walk(ConfigStore.instance().repo)
    return tuple(ids)


def _read_yaml(path: Path) -> Any:
    """The YAML document at ``path``, or ``None`` when it is missing or malformed (Hydra's own
    composition then reports it)."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except Exception:  # noqa: BLE001 -- malformed YAML, undecodable bytes: reported by composition
        return None


def default_choice(group: str) -> Optional[str]:
    """The component ``config/config.yaml`` chooses for ``group`` (``transformer_lm`` for model)."""
    node = _read_yaml(Path(config_dir()) / "config.yaml") or {}
    for entry in node.get("defaults", []):
        if isinstance(entry, dict) and group in entry and isinstance(entry[group], str):
            return entry[group]
    return None


def primary_config_name(config_name: str, user_config_dir: Optional[str]) -> str:
    """The primary config to compose for ``--config-name NAME``: ``NAME`` itself, or, when the
    user's ``NAME.yaml`` has no defaults list (an experiment file in fairseq 0.12's style, only
    values), a stored config composing the built-in ``config`` with ``NAME``'s values on top.

    As in fairseq 0.12, such a file may choose a component by name, ``criterion: cross_entropy``
    or ``model: {_name: transformer_lm_gpt, ...}``: that becomes the group's choice."""
    if not user_config_dir:
        return config_name
    path = Path(user_config_dir) / f"{config_name}.yaml"
    if not path.is_file() or (Path(config_dir()) / f"{config_name}.yaml").is_file():
        return config_name
    node = _read_yaml(path)
    if not isinstance(node, dict) or "defaults" in node:
        return config_name
    defaults: List[Any] = ["config"]
    values = dict(node)
    for group in COMPONENT_GROUPS:
        value = values.get(group)
        if isinstance(value, str):  # `criterion: cross_entropy`: a choice, not a value
            defaults.append({f"override /{group}": value})
            del values[group]
        elif isinstance(value, dict) and isinstance(value.get("_name"), str) and value["_name"] != default_choice(group):
            defaults.append({f"override /{group}": value["_name"]})
    name = f"_fairseq_experiment_{config_name.replace('/', '_')}"
    if len(defaults) == 1:
        ConfigStore.instance().store(name=name, node={"defaults": ["config", f"/{config_name}", "_self_"]})
        return name
    cfg = OmegaConf.create(values)
    wrap_scalars_for_lists(cfg, "")  # numbers for list fields, as the YAML loader's hook does
    ConfigStore.instance().store(name=name, node={"defaults": defaults + ["_self_"],
                                                  **OmegaConf.to_container(cfg, resolve=False)})
    return name


def component_choices(overrides: Sequence[str], user_config_dir: Optional[str]) -> List[str]:
    """``overrides`` with each choice of a user's component file that names no component (no
    ``_name``, no defaults list: fairseq 0.12's ``# @package _group_`` files of field values)
    replaced by a stored config that puts those values on a component's schema: the one its
    directory names (``model=transformer_lm/small`` is a ``transformer_lm``), else the one
    ``config/config.yaml`` chooses for the group."""
    from fairseq.registry import ALL_REGISTRIES

    if not user_config_dir:
        return list(overrides)
    out = []
    for text in overrides:
        key, sep, name = text.partition("=")
        group = key.lstrip("+")
        path = Path(user_config_dir) / group / f"{name}.yaml"
        node = _read_yaml(path) if sep and group in COMPONENT_GROUPS and "," not in name else None
        if not isinstance(node, dict) or "_name" in node or "defaults" in node:
            out.append(text)
            continue
        parent = Path(name).parent.name
        registry = ALL_REGISTRIES.get(group)
        base = parent if registry is not None and parent in registry else default_choice(group)
        stored = f"_fairseq_{name.replace('/', '_')}"
        ConfigStore.instance().store(group=group, name=stored, node={
            "defaults": [f"/schema/{group}/{base}@_here_", f"/{group}/{name}@_here_", "_self_"]})
        out.append(f"{key}={stored}")
    return out


def user_dir_in_config(overrides: Sequence[str], config_name: str, user_config_dir: Optional[str]) -> Optional[str]:
    """The ``common.user_dir`` a user's config tree sets in YAML, so its plugins can be imported
    before the run's config is composed and checked. It is read from the composed config, or, when
    that cannot compose yet (it chooses one of the plugin's components), from the primary YAML.
    Nothing is imported here."""
    return _user_dir_and_file(overrides, config_name, user_config_dir)[0]


def _user_dir_and_file(overrides: Sequence[str], config_name: str,
                       user_config_dir: Optional[str]) -> Tuple[Optional[str], str]:
    """``(common.user_dir, the file that sets it)`` of the user's config tree (the file as well
    as it can be told: the primary YAML when it has the key, else the directory)."""
    if not user_config_dir:
        return None, ""
    path = Path(user_config_dir) / f"{config_name}.yaml"
    node = _read_yaml(path)
    in_primary = isinstance(node, dict) and isinstance(node.get("common"), dict) and "user_dir" in node["common"]
    where = str(path) if in_primary else f"a YAML file in {user_config_dir}"
    try:
        cfg = compose_config([o for o in overrides if not o.lstrip("+~").startswith("hydra")],
                             config_name=config_name, user_config_dir=user_config_dir)
        value = cfg.common.user_dir
    except Exception:  # noqa: BLE001 -- not composable before the plugin is imported
        value = node["common"]["user_dir"] if in_primary else None
    return (str(value) if isinstance(value, (str, os.PathLike)) and str(value) else None), where


def hydra_init(cfg_name: str = "fairseq_config") -> None:
    """Store the top-level schema and every registered component in Hydra's ConfigStore."""
    import_builtin_components()
    install_hydra_hooks()
    cs = ConfigStore.instance()
    if ("", cfg_name) not in _stored:  # stored once: a new node would change _store_generation
        cs.store(name=cfg_name, node=FairseqConfig)
        _stored.add(("", cfg_name))
    tree = Path(config_dir())
    for group in COMPONENT_GROUPS:
        registry = ALL_REGISTRIES.get(group)
        if registry is None:
            continue
        for name, entry in registry.entries.items():
            if (group, name) in _stored:
                continue
            node = entry.default_config()
            if node is None:
                continue
            cs.store(group=f"schema/{group}", name=name, node=node)
            if not (tree / group / f"{name}.yaml").is_file():
                cs.store(group=group, name=name, node=node)
            _stored.add((group, name))


def compose_config(overrides: Sequence[str] = (), config_name: str = "config",
                   config_path: Optional[str] = None, user_config_dir: Optional[str] = None,
                   with_hydra: bool = False) -> DictConfig:
    """Compose the run config as the Hydra door does, outside any Hydra app (the overrides are
    taken as they are: :func:`fairseq.dataclass.initialize.compose_config` with ``check=True``
    checks them first).

    Args:
        overrides: Hydra overrides (``key=value``, ``group=name``).
        config_name: the primary config (``--config-name``).
        config_path: a directory replacing ``config/`` as the primary tree.
        user_config_dir: a user's config directory (``--config-dir``); its configs are found
            first and the built-in tree stays on the search path, as in the Hydra door.
        with_hydra: also compose the ``hydra`` node (launcher, sweeper, callbacks, logging).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    hydra_init()
    overrides = component_choices(overrides, user_config_dir)
    directory = os.path.abspath(config_path or config_dir())
    _refuse_components_without_config(overrides, directory, user_config_dir)
    config_name = primary_config_name(config_name, user_config_dir)
    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
    if user_config_dir is None:
        # Only the built-in tree (or a --config-path tree) and the ConfigStore are read, so the
        # same overrides compose the same config for as long as nothing new is registered; a
        # copy of the first result spares every later legacy command of the process Hydra's
        # parse and merge (a tenth of a tiny run's time)
        key = None if (with_hydra or config_path) else (tuple(overrides), config_name, _store_generation())
        cached = _composed.get(key) if key is not None else None
        if cached is not None:
            return copy.deepcopy(cached)
        with initialize_config_dir(config_dir=directory, version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
        if key is not None:
            if len(_composed) >= _COMPOSED_MAX:
                _composed.pop(next(iter(_composed)))
            _composed[key] = copy.deepcopy(cfg)
        return cfg
    with user_tree(directory, os.path.abspath(user_config_dir)):
        return compose(config_name, overrides=overrides, return_hydra_config=with_hydra)


def _refuse_components_without_config(overrides: Sequence[str], directory: str,
                                      user_config_dir: Optional[str]) -> None:
    """One line, instead of Hydra's "Could not find 'model/NAME'" traceback, for a chosen component
    registered without a config dataclass (fairseq's older ``add_args`` API) and with no YAML file
    to stand in for it: nothing declares its fields, so neither door can configure it."""
    from fairseq.registry import ALL_REGISTRIES

    trees = [Path(directory)] + ([Path(user_config_dir)] if user_config_dir else [])
    for text in overrides:
        key, sep, name = text.partition("=")
        group = key.lstrip("+")
        registry = ALL_REGISTRIES.get(group)
        if not sep or group not in COMPONENT_GROUPS or registry is None or name not in registry:
            continue
        entry = registry.get(name)
        if entry.dataclass is not None or any((tree / group / f"{name}.yaml").is_file() for tree in trees):
            continue
        owner = getattr(entry.cls, "__name__", entry.cls)
        register = "register_model" if group == "model" else f"register_{group}"
        raise ConfigError(
            f"{group}={name}: {owner} is registered without a config dataclass (fairseq's older "
            f"add_args API), so nothing declares its fields; register it as {register}("
            f"{(entry.base or name)!r}, dataclass=...) with one typed field per flag "
            "(docs/extending.md, \"A model\")")


def import_plugins_of_overrides(overrides: Sequence[str]) -> None:
    """Import the plugin directory a ``common.user_dir=DIR`` override names, then store every
    registered component in the ConfigStore: the first step of each Hydra door."""
    for text in overrides:
        if text.split("=", 1)[0].lstrip("+") == "common.user_dir":
            import_user_module(text.split("=", 1)[1])
    hydra_init()


def import_plugins_of_yaml(overrides: Sequence[str], config_name: str, user_config_dir: Optional[str],
                           allowed: bool = False) -> None:
    """Import the ``common.user_dir`` that only the user's YAML sets (found by a first
    composition, see :func:`user_dir_in_config`), before the overrides are checked: only when
    ``allowed`` (``--allow-config-code``); a directory the command line names is imported by
    :func:`import_plugins_of_overrides`.

    Raises:
        ConfigError: a ``common.user_dir`` that only a config file names, without the flag
            (nothing of it is imported).
    """
    from fairseq.dataclass.config_code import check_user_dir

    yaml_user_dir, where = _user_dir_and_file(overrides, config_name, user_config_dir)
    check_user_dir(yaml_user_dir, overrides, allowed, where)
    if yaml_user_dir:
        import_user_module(yaml_user_dir)
        hydra_init()
