"""The one registry mechanism behind every component family.

A family (task, model, criterion, optimizer, lr_scheduler, ...) is a :class:`Registry`. Registering
a class with its config dataclass makes it buildable by name, selectable as ``group=name`` in
Hydra (``fairseq.dataclass.initialize.hydra_init`` stores every entry in the ConfigStore), listed
in the ``choices`` of the legacy flag and in ``--help``.

Models also have *architectures*: named presets of the model's config defaults. A preset is plain
data merged under whatever the user sets, so an explicit value always wins.
"""
import difflib
import importlib
from argparse import Namespace
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Dict, List, Optional, Union

from omegaconf import DictConfig, OmegaConf

from fairseq.errors import ConfigError


@dataclass
class RegistryEntry:
    name: str
    cls: type
    dataclass: Optional[type]
    preset: Dict[str, Any] = field(default_factory=dict)
    base: Optional[str] = None  # for an architecture: the model it presets

    def default_config(self):
        """An instance of the dataclass with the preset applied and ``_name`` set."""
        if self.dataclass is None:
            return None
        return self.dataclass(**{**self.preset, "_name": self.name})


# The one map between a component group and the legacy flag (and namespace attribute) that picks
# its component: fairseq's --arch picks the model, every other group its own name.
LEGACY_CHOICE_ATTRS: Dict[str, str] = {"task": "task", "model": "arch", "criterion": "criterion",
                                       "optimizer": "optimizer", "lr_scheduler": "lr_scheduler",
                                       "bpe": "bpe", "tokenizer": "tokenizer"}


def legacy_flag(group: str) -> str:
    """The legacy flag that picks the component of ``group`` (``--arch`` for ``model``)."""
    return "--" + LEGACY_CHOICE_ATTRS[group].replace("_", "-")


class UnknownChoiceError(ConfigError):
    """Raised for a component name that is not registered; names the closest one."""


def closest(name: str, candidates) -> Optional[str]:
    match = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.5)
    return match[0] if match else None


class Registry:
    """Name -> (class, config dataclass) for one family of components."""

    def __init__(self, group: str, base_class: Optional[type] = None, default: Optional[str] = None):
        self.group = group
        self.base_class = base_class
        self.default = default
        self.entries: Dict[str, RegistryEntry] = {}

    # -- registration -----------------------------------------------------------------------
    def register(self, name: str, dataclass: Optional[type] = None) -> Callable[[type], type]:
        """Class decorator: ``@registry.register("adam", dataclass=FairseqAdamConfig)``."""

        def wrap(cls: type) -> type:
            if name in self.entries:
                raise ValueError(f"cannot register duplicate {self.group} {name!r}: "
                                 f"{self.entries[name].cls.__name__} has that name; choose another")
            if self.base_class is not None and not issubclass(cls, self.base_class):
                raise ValueError(f"{self.group} {name!r} ({cls.__name__}) must extend "
                                 f"{self.base_class.__name__}")
            if dataclass is not None and not is_dataclass(dataclass):
                raise ValueError(f"{self.group} {name!r}: dataclass= must be a dataclass")
            self.entries[name] = RegistryEntry(name, cls, dataclass)
            cls.dataclass_config = dataclass  # type: ignore[attr-defined]
            cls.registered_name = name  # type: ignore[attr-defined]
            return cls

        return wrap

    def register_preset(self, base: str, name: str, preset: Optional[Dict[str, Any]] = None) -> None:
        """Register ``name`` as ``base`` with other defaults (an architecture)."""
        if base not in self.entries:
            raise ValueError(f"cannot register {self.group} preset {name!r}: unknown base {base!r}")
        if name in self.entries:
            raise ValueError(f"cannot register duplicate {self.group} {name!r}")
        entry = self.entries[base]
        preset = dict(preset or {})
        if entry.dataclass is not None:
            known = {f.name for f in fields(entry.dataclass)}
            unknown = sorted(set(preset) - known)
            if unknown:
                raise ValueError(f"preset {name!r} sets unknown fields {unknown} of {entry.dataclass.__name__}")
        self.entries[name] = RegistryEntry(name, entry.cls, entry.dataclass, preset, base=entry.base or base)

    # -- lookup -----------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def choices(self) -> List[str]:
        return sorted(self.entries)

    def get(self, name: str) -> RegistryEntry:
        if name not in self.entries:
            hint = closest(name, self.entries)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise UnknownChoiceError(
                f"unknown {self.group} {name!r}.{did_you_mean} Choices: {', '.join(self.choices())}"
            )
        return self.entries[name]

    def name_of(self, cfg: Union[DictConfig, Namespace, Any], legacy_attr: Optional[str] = None) -> str:
        """The registered name a config node (or legacy namespace) selects."""
        # optional: a dataclass instance built by hand has no _name; its type names it (below)
        name = getattr(cfg, "_name", None)
        if name is None and legacy_attr is not None and isinstance(cfg, Namespace):
            # optional: a Namespace has the choice flag only when its parser added it
            name = getattr(cfg, legacy_attr, None)
        if name is None:
            # a config built by hand (``LanguageModelingConfig(data=...)``) names its component
            # through its type, when exactly one base entry uses that dataclass
            schema = OmegaConf.get_type(cfg) if isinstance(cfg, DictConfig) else type(cfg)
            owners = [e.name for e in self.entries.values() if e.base is None and e.dataclass is schema]
            if len(owners) == 1:
                name = owners[0]
        if name is None:
            raise ValueError(f"the {self.group} config names no {self.group} (its _name is empty)")
        return str(name)

    def to_config(self, cfg: Union[DictConfig, Namespace, Any], name: Optional[str] = None):
        """Normalize a DictConfig, dataclass instance or legacy Namespace to this entry's node.

        A Namespace is converted through the entry's dataclass (preset applied first, then every
        attribute the namespace carries), so both doors hand components the same typed config.
        """
        if isinstance(cfg, Namespace):
            entry = self.get(name or self.name_of(cfg, legacy_attr=self._legacy_attr()))
            if entry.dataclass is None:
                return cfg
            # the preset gives the defaults; whatever the namespace carries wins over it
            values = {**entry.preset, **entry.dataclass.namespace_values(cfg), "_name": entry.name}
            return OmegaConf.structured(entry.dataclass(**values))
        if is_dataclass(cfg) and not isinstance(cfg, type):
            return OmegaConf.structured(cfg)
        return cfg

    def _legacy_attr(self) -> str:
        return LEGACY_CHOICE_ATTRS.get(self.group, self.group)

    def build(self, cfg: Union[DictConfig, Namespace, Any], *args: Any, **kwargs: Any) -> Any:
        """Instantiate the component a config selects: ``cls.build_<group>(cfg, ...)`` or ``cls(cfg, ...)``."""
        entry = self.get(self.name_of(cfg, legacy_attr=self._legacy_attr()))
        cfg = self.to_config(cfg, entry.name)
        builder = getattr(entry.cls, f"build_{self.group}", None)
        if builder is not None:
            return builder(cfg, *args, **kwargs)
        return entry.cls(cfg, *args, **kwargs)


ALL_REGISTRIES: Dict[str, Registry] = {}


def import_submodules(package: str, path: List[str]) -> None:
    """Import every public module of a component package, so each one registers itself."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(path):
        if not module.name.startswith("_") and not module.ispkg:
            importlib.import_module(f"{package}.{module.name}")


def setup_registry(group: str, base_class: Optional[type] = None, default: Optional[str] = None) -> Registry:
    """Create (once) and return the registry of one family."""
    if group in ALL_REGISTRIES:
        raise ValueError(f"registry {group!r} already exists")
    registry = Registry(group, base_class, default)
    ALL_REGISTRIES[group] = registry
    return registry


# The packages whose modules register the built-in components. They are loaded by name, the
# way a plugin directory is: the config layer (below the models and tasks) composes configs
# from what the registries hold without importing any model or task module itself.
BUILTIN_COMPONENT_PACKAGES = ("fairseq.criterions", "fairseq.data.encoders", "fairseq.models",
                              "fairseq.optim", "fairseq.optim.lr_scheduler", "fairseq.tasks")


def import_builtin_components() -> None:
    """Fill every registry with the built-in components (a no-op once they are imported)."""
    for name in BUILTIN_COMPONENT_PACKAGES:
        importlib.import_module(name)
