"""Recorders of the ATen operators a piece of code runs (``TorchDispatchMode``), for tests that
check what a computation allocates or which operators it takes."""
from typing import Dict, Iterable, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LargestOutput(TorchDispatchMode):
    """``largest``: the most elements of any tensor an operator returns while active, except
    the operators in ``ignore`` (e.g. views, which allocate nothing)."""

    def __init__(self, ignore: Iterable = ()):
        super().__init__()
        self.ignore = set(ignore)
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func not in self.ignore:
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel())
        return out


class OpCalls(TorchDispatchMode):
    """``names``: the operators run while active (``"mm"``, ``"log_softmax"``, ...);
    ``first_shapes[name]``: the shape of each call's first argument."""

    def __init__(self):
        super().__init__()
        self.names = set()
        self.first_shapes: Dict[str, List[Tuple[int, ...]]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        self.names.add(name)
        if args and isinstance(args[0], torch.Tensor):
            self.first_shapes.setdefault(name, []).append(tuple(args[0].shape))
        return func(*args, **(kwargs or {}))
