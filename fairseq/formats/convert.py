"""The one converter: a state dict from a foreign layout to ours (``to_ours``) and back
(``from_ours``), driven by a :class:`~fairseq.formats.layout.Layout` table.

Every key of the input must be claimed by a row; a key no row claims is a
:class:`LayoutError` (a missing table row shows up at once instead of a weight being dropped).
``unmapped="keep"`` passes such keys through instead, for callers that hand the result to a
strict ``load_state_dict``, which then reports them in its own words.
"""
import re
from functools import lru_cache
from typing import Dict, Iterable, List, Mapping, Optional, Pattern, Tuple

from torch import Tensor

from fairseq.formats.layout import Context, Layout, Row

PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "kind": r"weight|bias"}


class LayoutError(ValueError):
    """A state dict that does not fit a layout: a key no row maps, a row's keys only partly
    there, or a tensor of the wrong shape. The message names the key."""


@lru_cache(maxsize=None)
def _regex(pattern: str) -> Pattern[str]:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        name = m.group(1)
        if name not in PLACEHOLDERS:
            raise ValueError(f"key pattern {pattern!r} uses an unknown placeholder {{{name}}} "
                             f"(known: {', '.join(sorted(PLACEHOLDERS))})")
        out.append(f"(?P<{name}>{PLACEHOLDERS[name]})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


def _bindings(pattern: str, keys: Iterable[str]) -> List[Dict[str, str]]:
    regex = _regex(pattern)
    found = []
    for key in keys:
        m = regex.fullmatch(key)
        if m is not None:
            found.append(m.groupdict())
    return found


def _check_shapes(row: Row, keys: List[str], tensors: List[Tensor], ctx: Context, layout: Layout) -> None:
    if row.shape is None:
        return
    wanted = row.shape(ctx)
    shapes = wanted if isinstance(wanted, list) else [wanted] * len(keys)
    for key, tensor, shape in zip(keys, tensors, shapes):
        if tuple(tensor.shape) != tuple(shape):
            raise LayoutError(f"{key} is {tuple(tensor.shape)}, but the {layout.name} config implies "
                              f"{tuple(shape)}")


def _check_required(state: Mapping[str, Tensor], layout: Layout, ctx: Context) -> None:
    layers = int(ctx.get("layers", 0))
    for row in layout.rows:
        if not (row.required and row.theirs and row.when(ctx)):
            continue
        for name in row.theirs:
            if "{i}" not in name:
                expected = [name]
            else:
                expected = [name.replace("{i}", str(i)) for i in range(layers)]
            for pattern in expected:
                kinds = ("weight", "bias") if "{kind}" in pattern else (None,)
                for kind in kinds:
                    key = pattern.format(kind=kind) if kind else pattern
                    if key not in state:
                        raise LayoutError(f"the {layout.name} weights have no {key!r}: the directory is "
                                          "incomplete or not a causal LM checkpoint of that type")


def _apply(state: Mapping[str, Tensor], layout: Layout, ctx: Context, reading: bool,
           unmapped: str) -> Dict[str, Tensor]:
    if unmapped not in ("error", "keep"):
        raise ValueError(f"unmapped={unmapped!r}: 'error' or 'keep'")
    out: Dict[str, Tensor] = {}
    used = set()
    for row in layout.rows:
        if not row.when(ctx):
            continue
        source, target = (row.theirs, row.ours) if reading else (row.ours, row.theirs)
        if not source:  # a constant: nothing to read; written once
            if not reading:
                for key, value in zip(target, row.transform.from_ours([], ctx)):
                    out[key] = value
            continue
        spellings: Tuple[Tuple[str, ...], ...] = (source,) + (row.older if reading else ())
        for names in spellings:
            for b in _bindings(names[0], state):
                keys = [n.format(**b) for n in names]
                if any(k in used for k in keys):
                    continue
                missing = [k for k in keys if k not in state]
                if missing:
                    raise LayoutError(f"{keys[0]} comes with {', '.join(missing)} in the {layout.name} "
                                      "layout, which the weights lack")
                tensors = [state[k] for k in keys]
                if reading:
                    _check_shapes(row, keys, tensors, ctx, layout)
                    results = row.transform.to_ours(tensors, ctx)
                    if not target:  # a foreign key without a counterpart (a version) is dropped
                        target_pattern: Tuple[str, ...] = ()
                    else:
                        target_pattern = target
                else:
                    results = row.transform.from_ours(tensors, ctx)
                    target_pattern = target
                used.update(keys)
                for pattern, value in zip(target_pattern, results):
                    out[pattern.format(**b)] = value
    if reading:
        _check_required(state, layout, ctx)
    left = [k for k in state if k not in used]
    if left and unmapped == "error":
        side = f"{layout.name}" if reading else "this package's"
        shown = ", ".join(left[:4]) + (f" (and {len(left) - 4} more)" if len(left) > 4 else "")
        raise LayoutError(f"no row of the {layout.name} layout maps {side} key(s) {shown}")
    for key in left:
        out.setdefault(key, state[key])
    return out


def to_ours(state: Mapping[str, Tensor], layout: Layout, ctx: Optional[Context] = None,
            unmapped: str = "error") -> Dict[str, Tensor]:
    """``state``, written in ``layout``, in this package's layout.

    Args:
        state: the foreign state dict (not modified).
        layout: the table it follows.
        ctx: what the rows' conditions, sizes and shapes read (see each layout module).
        unmapped: ``"error"`` (a key no row maps raises) or ``"keep"`` (passed through).

    Raises:
        LayoutError: a key no row maps, a row whose keys are only partly there, or a shape
            other than the row's.
    """
    return _apply(state, layout, ctx or {}, reading=True, unmapped=unmapped)


def from_ours(state: Mapping[str, Tensor], layout: Layout, ctx: Optional[Context] = None,
              unmapped: str = "error") -> Dict[str, Tensor]:
    """``state``, in this package's layout, written in ``layout``; the inverse of
    :func:`to_ours` (the round trip gives the same tensors, bit for bit). Same arguments."""
    return _apply(state, layout, ctx or {}, reading=False, unmapped=unmapped)


__all__ = ["LayoutError", "PLACEHOLDERS", "from_ours", "to_ours"]
