"""What a weight layout is: a table of rows, each tying some of our keys to some of theirs
through one invertible transform.

A key pattern may hold placeholders: ``{i}``/``{j}`` match a layer or band number,
``{kind}`` matches ``weight`` or ``bias``. A row's transform turns the tensors of its
foreign keys into the tensors of its own keys (``to_ours``) and back (``from_ours``); applying
one after the other gives the same tensors, bit for bit. This module knows tensors and names,
never models: everything a transform needs from a model (a tied head, a split size) comes in a
plain ``ctx`` mapping.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

Context = Mapping[str, Any]
Shape = Tuple[int, ...]
#: the shape each foreign key must have, given the context: one shape for all, or one per key
ShapeRule = Callable[[Context], Union[Shape, List[Shape]]]


class Transform:
    """An invertible map between the tensors of a row's foreign keys and of its own keys."""

    name = "transform"

    def to_ours(self, theirs: List[Tensor], ctx: Context) -> List[Tensor]:
        raise NotImplementedError

    def from_ours(self, ours: List[Tensor], ctx: Context) -> List[Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class Identity(Transform):
    """The same tensors under other names."""

    name = "identity"

    def to_ours(self, theirs: List[Tensor], ctx: Context) -> List[Tensor]:
        return list(theirs)

    def from_ours(self, ours: List[Tensor], ctx: Context) -> List[Tensor]:
        return list(ours)


class Transpose(Transform):
    """A 2-D matrix stored the other way round (GPT-2's Conv1D keeps (in, out), nn.Linear
    (out, in)); the result is contiguous, as files and ``load_state_dict`` want it."""

    name = "transpose"

    def to_ours(self, theirs: List[Tensor], ctx: Context) -> List[Tensor]:
        return [t.t().contiguous() for t in theirs]

    def from_ours(self, ours: List[Tensor], ctx: Context) -> List[Tensor]:
        return [t.t().contiguous() for t in ours]


class Concat(Transform):
    """Several tensors on one side are blocks of one tensor on the other, along ``dim``.

    ``fused_ours`` says which side holds the fused tensor (fairseq 0.12's separate
    ``q_proj``/``k_proj``/``v_proj`` are our fused ``in_proj``: ``True``; the adaptive softmax's
    fused ``head.weight`` is our words and clusters: ``False``). ``sizes(ctx)`` gives the
    blocks' sizes, ``-1`` for "the rest"; without it the blocks are equal (grouped-query
    attention, whose key and value blocks are smaller than the query's, passes sizes).
    ``transpose`` also transposes the fused tensor (GPT-2's ``c_attn`` is (C, 3C)).
    """

    def __init__(self, fused_ours: bool, parts: int, dim: int = 0,
                 sizes: Optional[Callable[[Context], Sequence[int]]] = None, transpose: bool = False):
        self.fused_ours, self.parts, self.dim, self.sizes = fused_ours, parts, dim, sizes
        self.transpose = transpose
        self.name = f"concat({parts} blocks, dim={dim}{', transposed' if transpose else ''})"

    def _merge(self, parts: List[Tensor]) -> List[Tensor]:
        fused = torch.cat(parts, dim=self.dim)
        return [fused.t().contiguous() if self.transpose else fused]

    def _split(self, fused: List[Tensor], ctx: Context) -> List[Tensor]:
        (whole,) = fused
        if self.transpose:
            whole = whole.t()
        if self.sizes is None:
            blocks = whole.chunk(self.parts, dim=self.dim)
        else:
            sizes = list(self.sizes(ctx))
            if -1 in sizes:
                sizes[sizes.index(-1)] = whole.size(self.dim) - sum(s for s in sizes if s != -1)
            blocks = whole.split(sizes, dim=self.dim)
        # each block owns its memory: a view would keep the whole fused tensor alive, and
        # safetensors refuses tensors that share storage
        return [b.contiguous().clone() for b in blocks]

    def to_ours(self, theirs: List[Tensor], ctx: Context) -> List[Tensor]:
        return self._merge(theirs) if self.fused_ours else self._split(theirs, ctx)

    def from_ours(self, ours: List[Tensor], ctx: Context) -> List[Tensor]:
        return self._split(ours, ctx) if self.fused_ours else self._merge(ours)


class Constant(Transform):
    """A foreign key with nothing of ours behind it (a version number, a placeholder buffer):
    dropped when read, written as ``make(ctx)`` (or not at all without ``make``)."""

    def __init__(self, make: Optional[Callable[[Context], Tensor]] = None):
        self.make = make
        self.name = "constant" if make is not None else "drop"

    def to_ours(self, theirs: List[Tensor], ctx: Context) -> List[Tensor]:
        return []

    def from_ours(self, ours: List[Tensor], ctx: Context) -> List[Tensor]:
        return [] if self.make is None else [self.make(ctx)]


IDENTITY = Identity()
TRANSPOSE = Transpose()
DROP = Constant()


def _always(ctx: Context) -> bool:
    return True


@dataclass(frozen=True)
class Row:
    """Our keys <-> their keys through ``transform``.

    Args:
        ours: our key patterns (empty for a :class:`Constant`).
        theirs: their key patterns, in the order the transform takes them.
        transform: how the tensors change.
        older: further spellings of ``theirs`` that older versions wrote; read, never written.
        when: whether the row applies to a model (``ctx``); rows that share a foreign key tell
            apart that way which transform it needs.
        shape: the shape their tensors must have, checked when read.
        required: reading fails when its keys are absent (for every layer ``{i}`` below
            ``ctx["layers"]``); a row that is not required maps its keys only where present.
    """

    ours: Tuple[str, ...]
    theirs: Tuple[str, ...]
    transform: Transform = IDENTITY
    older: Tuple[Tuple[str, ...], ...] = ()
    when: Callable[[Context], bool] = _always
    shape: Optional[ShapeRule] = None
    required: bool = False


def same(*patterns: str, older: Sequence[str] = (), shape: Optional[ShapeRule] = None,
         when: Callable[[Context], bool] = _always, required: bool = False) -> List[Row]:
    """Rows of keys that both sides spell alike (``older`` gives one earlier spelling each)."""
    rows = []
    for n, pattern in enumerate(patterns):
        old = ((older[n],),) if n < len(older) and older[n] else ()
        rows.append(Row((pattern,), (pattern,), IDENTITY, older=old, shape=shape, when=when,
                        required=required))
    return rows


@dataclass(frozen=True)
class Layout:
    """One foreign layout: its name (for messages) and its rows."""

    name: str
    rows: Tuple[Row, ...] = field(default_factory=tuple)


__all__ = ["Concat", "Constant", "Context", "DROP", "IDENTITY", "Identity", "Layout", "Row",
           "TRANSPOSE", "Transform", "Transpose", "same"]
