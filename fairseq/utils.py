"""Small tensor, sample and configuration helpers, under fairseq's names (``fairseq.utils``).

Scripts written against fairseq import these directly (``from fairseq import utils``); the
project's own code uses them too where it needs the same operation.
"""
import contextlib
import copy
import logging
import os
import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

MaxPositions = Union[None, int, float, tuple, dict]


# -- paths -------------------------------------------------------------------------------------
def split_paths(paths: str, separator: str = os.pathsep) -> List[str]:
    """Split ``"a:b:c"`` (``task.data`` with shards) into its parts; URLs are never split."""
    if "://" in paths:
        return paths.split("|")
    return paths.split(separator)


def checkpoint_paths(path: str, pattern: str = r"checkpoint(\d+)\.pt",
                     keep_match: bool = False) -> List[Any]:
    """Checkpoints in ``path`` whose name matches ``pattern``, newest (largest number) first.

    The pattern's first group is read as the sort key (a float); a pattern without a group
    sorts by order of appearance. With ``keep_match``, ``(path, key)`` pairs are returned.
    """
    import re

    regex = re.compile(pattern)
    found = []
    for index, name in enumerate(os.listdir(path)):
        match = regex.fullmatch(name)
        if match is None:
            continue
        key = float(match.group(1)) if match.groups() else index
        found.append((key, match.group(0)))
    ordered = sorted(found, reverse=True)
    if keep_match:
        return [(os.path.join(path, name), key) for key, name in ordered]
    return [os.path.join(path, name) for _key, name in ordered]


# -- samples -----------------------------------------------------------------------------------
def apply_to_sample(f: Callable[[Tensor], Any], sample: Any) -> Any:
    """Apply ``f`` to every tensor inside ``sample`` (nested dicts, lists, tuples, sets).

    Containers are rebuilt with the same type; anything that is not a tensor is kept as is.
    An empty sample (``{}``, ``[]``) is returned as ``{}``, as fairseq does.
    """
    if hasattr(sample, "__len__") and len(sample) == 0:
        return {}

    def apply(x: Any) -> Any:
        if torch.is_tensor(x):
            return f(x)
        if isinstance(x, dict):
            return type(x)((key, apply(value)) for key, value in x.items())
        if isinstance(x, list):
            return [apply(v) for v in x]
        if isinstance(x, tuple):
            return tuple(apply(v) for v in x)
        if isinstance(x, set):
            return {apply(v) for v in x}
        return x

    return apply(sample)


def move_to_device(sample: Any, device: Union[str, torch.device]) -> Any:
    """Every tensor of ``sample`` on ``device`` (non-blocking from pinned memory); the one way
    a batch reaches the model, in training, validation, evaluation and generation."""
    return apply_to_sample(lambda t: t.to(device=device, non_blocking=True), sample)


def move_to_cuda(sample: Any, device: Optional[Union[int, torch.device]] = None) -> Any:
    """Every tensor of ``sample`` on the GPU (``device`` or the current one), non-blocking."""
    device = device if device is not None else torch.cuda.current_device()
    return apply_to_sample(lambda t: t.to(device=device, non_blocking=True), sample)


def move_to_cpu(sample: Any) -> Any:
    """Every tensor of ``sample`` on the CPU; half-precision tensors become float32."""

    def to_cpu(t: Tensor) -> Tensor:
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.to(dtype=torch.float32)
        return t.cpu()

    return apply_to_sample(to_cpu, sample)


# -- tokens and positions ----------------------------------------------------------------------
def make_positions(tensor: Tensor, padding_idx: int, onnx_trace: bool = False) -> Tensor:
    """Position numbers for the tokens of ``tensor`` (B, T), counted from ``padding_idx + 1``.

    Padding tokens get ``padding_idx``; the others are numbered left to right skipping the
    padding, so left- and right-padded rows both start at ``padding_idx + 1``.
    """
    del onnx_trace  # the same arithmetic works for export
    mask = tensor.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


def strip_pad(tensor: Tensor, pad: int) -> Tensor:
    """The elements of ``tensor`` that are not ``pad`` (flattened)."""
    return tensor[tensor.ne(pad)]


def buffered_arange(max: int) -> Tensor:  # noqa: A002 -- fairseq's parameter name
    """``torch.arange(max)`` as a LongTensor, served from a growing cached buffer."""
    buf: Tensor = getattr(buffered_arange, "buf", torch.empty(0, dtype=torch.long))
    if max > buf.numel():
        buf = torch.arange(max, dtype=torch.long)
        buffered_arange.buf = buf  # type: ignore[attr-defined]
    return buf[:max]


def convert_padding_direction(src_tokens: Tensor, padding_idx: int, right_to_left: bool = False,
                              left_to_right: bool = False) -> Tensor:
    """Move the padding of each row of ``src_tokens`` (B, T) to the other side.

    Exactly one of ``right_to_left`` (right-padded in, left-padded out) and ``left_to_right``
    must be true. Rows keep their token order.
    """
    if right_to_left == left_to_right:
        raise ValueError("give exactly one of right_to_left and left_to_right")
    pad_mask = src_tokens.eq(padding_idx)
    if not pad_mask.any():
        return src_tokens
    if left_to_right and not pad_mask[:, 0].any():
        return src_tokens  # already right-padded
    if right_to_left and not pad_mask[:, -1].any():
        return src_tokens  # already left-padded
    max_len = src_tokens.size(1)
    positions = torch.arange(max_len, device=src_tokens.device).expand_as(src_tokens)
    num_pads = pad_mask.long().sum(dim=1, keepdim=True)
    shift = -num_pads if right_to_left else num_pads
    index = torch.remainder(positions + shift, max_len)
    return src_tokens.gather(1, index)


def item(tensor: Any) -> Any:
    """A Python number from a one-element tensor (or the first element of a sequence)."""
    if hasattr(tensor, "item"):
        return tensor.item()
    if hasattr(tensor, "__getitem__"):
        return tensor[0]
    return tensor


# -- gradients ---------------------------------------------------------------------------------
@torch.no_grad()
def clip_grad_norm_(params: Union[Tensor, Iterable[Tensor]], max_norm: float,
                    aggregate_norm_fn: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """Scale the gradients of ``params`` in place so that their total L2 norm is at most ``max_norm``.

    Args:
        params: a tensor or an iterable of tensors; those without ``.grad`` are ignored.
        max_norm: the norm limit; ``0`` (or less) only measures.
        aggregate_norm_fn: maps the local norm to the norm used for clipping (e.g. combining
            norms across processes).

    Returns:
        The total norm before clipping (a float32 tensor; ``0.`` when no parameter has a gradient).
    """
    if torch.is_tensor(params):
        params = [params]
    params = list(params)
    grads = [p.grad.detach() for p in params if getattr(p, "grad", None) is not None]
    if not grads:
        return params[0].new_tensor(0.0) if params else torch.tensor(0.0)
    if len(grads) == 1:
        total_norm = torch.linalg.vector_norm(grads[0], 2, dtype=torch.float32)
    else:
        device = grads[0].device
        norms = [torch.linalg.vector_norm(g, 2, dtype=torch.float32).to(device) for g in grads]
        total_norm = torch.linalg.vector_norm(torch.stack(norms), 2)
    if aggregate_norm_fn is not None:
        total_norm = aggregate_norm_fn(total_norm)
    if max_norm > 0:
        coef = (float(max_norm) / (total_norm + 1e-6)).clamp_(max=1)
        for g in grads:
            g.mul_(coef.to(g.device, g.dtype))
    return total_norm


def fill_with_neg_inf(t: Tensor) -> Tensor:
    """Fill ``t`` with ``-inf`` in place (through float32, so half precision works)."""
    return t.float().fill_(float("-inf")).type_as(t)


# -- max positions ----------------------------------------------------------------------------
def _broadcast_number(number: Union[int, float], like: Any) -> Any:
    """``number`` shaped like ``like``: a tuple or dict of ``number`` (recursively)."""
    if isinstance(like, tuple):
        return tuple(number for _ in like)
    if isinstance(like, dict):
        return {key: _broadcast_number(number, value) for key, value in like.items()}
    return number


def _min_or_none(values: Iterable[Any]) -> Any:
    """The smallest value, ignoring ``None`` (``None`` when all are)."""
    present = [v for v in values if v is not None]
    return min(present) if present else None


def resolve_max_positions(*args: MaxPositions) -> MaxPositions:
    """Combine position limits from several sources (task, model, ...), keeping the strictest.

    Each argument is ``None`` (no limit), a number, a tuple (one limit per input/output) or a
    dict of those. A number combined with a tuple or dict applies to each of its entries.
    """
    result: MaxPositions = None
    for arg in args:
        if arg is None:
            continue
        if result is None:
            result = copy.deepcopy(arg)
            continue
        if isinstance(result, (int, float)) and not isinstance(arg, (int, float)):
            result = _broadcast_number(result, arg)
        elif isinstance(arg, (int, float)) and not isinstance(result, (int, float)):
            arg = _broadcast_number(arg, result)
        if isinstance(arg, (int, float)):
            result = min(result, arg)  # type: ignore[type-var]
        elif isinstance(arg, dict):
            merged = dict(result)  # type: ignore[arg-type]
            for key, value in arg.items():
                merged[key] = value if key not in merged else min(merged[key], value)
            result = merged
        else:
            result = tuple(_min_or_none(pair) for pair in zip(result, arg))  # type: ignore[arg-type]
    return result


# -- plugins -----------------------------------------------------------------------------------
def import_user_module(args: Any) -> None:
    """Import the plugin directory named by ``args.user_dir`` (a namespace or config node).

    The same importer as ``--user-dir`` / ``common.user_dir``: the directory is imported once,
    as a package named after it, so its ``@register_*`` components become available.
    """
    from fairseq.dataclass.compose import import_user_module as import_dir

    # optional: fairseq's API passes any Namespace here, with or without --user-dir
    import_dir(getattr(args, "user_dir", None))


# -- numerics ----------------------------------------------------------------------------------
def softmax(x: Tensor, dim: int, onnx_trace: bool = False) -> Tensor:
    """Softmax computed in float32 whatever the input's precision."""
    if onnx_trace:
        return F.softmax(x.float(), dim=dim)
    return F.softmax(x, dim=dim, dtype=torch.float32)


def log_softmax(x: Tensor, dim: int, onnx_trace: bool = False) -> Tensor:
    """Log-softmax computed in float32 whatever the input's precision."""
    if onnx_trace:
        return F.log_softmax(x.float(), dim=dim)
    return F.log_softmax(x, dim=dim, dtype=torch.float32)


def get_perplexity(loss: Optional[float], round: int = 2, base: int = 2) -> float:  # noqa: A002
    """``base ** loss`` rounded to ``round`` digits; ``inf`` on overflow, ``0.`` for ``None``."""
    from fairseq.logging.metrics import safe_round

    if loss is None:
        return 0.0
    try:
        return safe_round(base ** float(loss), round)
    except OverflowError:
        return float("inf")


def deprecation_warning(message: str, stacklevel: int = 3) -> None:
    """Warn with a :class:`UserWarning` (shown by default, unlike ``DeprecationWarning``)."""
    warnings.warn(message, stacklevel=stacklevel)


def relu_squared(x: Tensor) -> Tensor:
    """``relu(x) ** 2``."""
    return F.relu(x).pow(2)


def get_activation_fn(activation: str) -> Callable[[Tensor], Tensor]:
    """The activation function called ``activation`` (``relu``, ``gelu``, ``gelu_accurate``,
    ``tanh``, ``linear``, ``swish``, ``relu_squared``, ...).

    Raises:
        RuntimeError: for an unknown name (as fairseq does).
    """
    from fairseq.modules.activations import get_activation_fn as by_name

    name = str(activation)
    if name == "relu_squared":
        return relu_squared
    if name == "swish":
        return F.silu
    if name == "gelu_fast":
        deprecation_warning("--activation-fn=gelu_fast has been renamed to gelu_accurate")
    try:
        return by_name(name)
    except ValueError as e:
        raise RuntimeError(f"--activation-fn {name} not supported") from e


def get_available_activation_fns() -> List[str]:
    """The names :func:`get_activation_fn` accepts (as fairseq lists them)."""
    return ["relu", "gelu", "gelu_fast", "gelu_accurate", "tanh", "linear"]


# -- modules and randomness --------------------------------------------------------------------
@contextlib.contextmanager
def model_eval(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def has_parameters(module: torch.nn.Module) -> bool:
    """Whether ``module`` has at least one parameter."""
    return next(iter(module.parameters()), None) is not None


def get_rng_state() -> Dict[str, Tensor]:
    """The torch (and, when present, CUDA) random generator states."""
    state = {"torch_rng_state": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng_state"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Tensor]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch_rng_state"])
    if torch.cuda.is_available() and "cuda_rng_state" in state:
        torch.cuda.set_rng_state(state["cuda_rng_state"])


class set_torch_seed:  # noqa: N801 -- fairseq's name
    """Seed torch on construction; restore the previous generator states on leaving the block.

    ``with utils.set_torch_seed(seed): ...`` draws the same numbers every time without
    disturbing the random stream outside the block.
    """

    def __init__(self, seed: int):
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.rng_state = get_rng_state()
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed(seed)

    def __enter__(self) -> "set_torch_seed":
        return self

    def __exit__(self, *exc: Any) -> None:
        set_rng_state(self.rng_state)


def new_arange(x: Tensor, *size: int) -> Tensor:
    """``arange`` over the last dimension of ``size`` (default ``x.size()``), expanded to it."""
    if not size:
        size = tuple(x.size())
    return torch.arange(size[-1], device=x.device).expand(*size).contiguous()


# -- incremental state (decoding caches) --------------------------------------------------------
def get_incremental_state(module: Any, incremental_state: Optional[Dict[str, Any]], key: str) -> Any:
    """The part of a decoding cache that ``module`` stored under ``key``."""
    return module.get_incremental_state(incremental_state, key)


def set_incremental_state(module: Any, incremental_state: Optional[Dict[str, Any]], key: str,
                          value: Any) -> Optional[Dict[str, Any]]:
    """Store ``value`` under ``module``'s ``key`` in a decoding cache."""
    if incremental_state is not None:
        result = module.set_incremental_state(incremental_state, key, value)
        if result is not None:
            incremental_state = result
    return incremental_state


# -- legacy string values ---------------------------------------------------------------------
def csv_str_list(x: str) -> List[str]:
    """``"a,b"`` -> ``["a", "b"]``."""
    return x.split(",")


def eval_str_list(x: Any, type: Callable = float) -> Optional[List[Any]]:  # noqa: A002
    """A list of ``type`` from ``"[1, 2]"``, ``"(1, 2)"``, ``"1,2"``, ``"1"``, a number or a list.

    Strings are read as literals (never evaluated as code).
    """
    import ast

    if x is None:
        return None
    if isinstance(x, str):
        x = ast.literal_eval(x)
    try:
        return [type(v) for v in x]
    except TypeError:
        return [type(x)]


def eval_str_dict(x: Any, type: Callable = dict) -> Any:  # noqa: A002
    """A dict from its literal string form (``"{'a': 1}"``); ``None`` stays ``None``."""
    import ast

    del type
    if x is None:
        return None
    if isinstance(x, str):
        x = ast.literal_eval(x)
    return x


def eval_bool(x: Any, default: bool = False) -> bool:
    """A bool from a literal string (``"True"``, ``"0"``); ``default`` for ``None``."""
    import ast

    if x is None:
        return default
    try:
        return bool(ast.literal_eval(x) if isinstance(x, str) else x)
    except (TypeError, ValueError, SyntaxError):
        return default


def safe_getattr(obj: Any, k: str, default: Any = None) -> Any:
    """``obj.k`` for a namespace or object, ``obj[k]`` for a config node; ``default`` when the
    key is absent (for a config node, also when it is ``None``)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(obj):
        return obj[k] if k in obj and obj[k] is not None else default
    return getattr(obj, k, default)


def safe_hasattr(obj: Any, k: str) -> bool:
    """Whether ``obj.k`` exists and is not ``None``."""
    return getattr(obj, k, None) is not None


__all__ = [
    "apply_to_sample", "move_to_device", "buffered_arange", "checkpoint_paths", "clip_grad_norm_", "convert_padding_direction",
    "csv_str_list", "deprecation_warning", "eval_bool", "eval_str_dict", "eval_str_list", "fill_with_neg_inf",
    "get_activation_fn", "get_available_activation_fns", "get_incremental_state", "get_perplexity",
    "get_rng_state", "has_parameters", "import_user_module", "item", "log_softmax", "make_positions",
    "model_eval", "move_to_cpu", "move_to_cuda", "new_arange", "relu_squared", "resolve_max_positions",
    "safe_getattr", "safe_hasattr", "set_incremental_state", "set_rng_state", "set_torch_seed", "softmax",
    "split_paths", "strip_pad",
]
