"""Enumerated choices shared by config dataclasses.

A choice field is typed with a :class:`StrEnum` built by :func:`ChoiceEnum`. Its members are
real ``str`` instances, so ``cfg.activation_fn == "relu"`` works, JSON and YAML print the plain
string, and OmegaConf validates assignments against the allowed names.
"""
from enum import Enum
from typing import Iterable, List


class StrEnum(str, Enum):
    """An enum whose members compare, hash and print as their string value."""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self.value, str(other)) if isinstance(other, str) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    @classmethod
    def choices(cls) -> List[str]:
        return [m.value for m in cls]


def ChoiceEnum(choices: Iterable[str], name: str = "Choices") -> type:
    """Build a :class:`StrEnum` whose member names and values are ``choices``."""
    choices = list(choices)
    return StrEnum(name, {c: c for c in choices})


LOG_FORMAT_CHOICES = ChoiceEnum(["none", "simple", "json", "tqdm"], "LogFormat")
DATASET_IMPL_CHOICES = ChoiceEnum(["mmap", "raw"], "DatasetImpl")
