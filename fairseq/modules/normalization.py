"""The normalization layers a decoder may use, chosen by name (``--decoder-norm``)."""
import torch.nn as nn

NORM_NAMES = ("layernorm", "rmsnorm")


def build_norm(kind: str, dim: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """A normalization over the last dimension of size ``dim``.

    Args:
        kind: ``"layernorm"`` (``nn.LayerNorm``: centred, scaled, shifted) or ``"rmsnorm"``
            (``nn.RMSNorm``: divided by the root mean square, scaled; it has no shift).
        dim: the normalized dimension.
        eps: added to the variance (or mean square) before the square root.
        bias: whether a LayerNorm has its learned shift (ignored by RMSNorm).

    Raises:
        ValueError: for an unknown ``kind``.
    """
    name = str(kind)
    if name == "layernorm":
        # the default (eps 1e-5, with bias) is exactly nn.LayerNorm(dim), as fairseq 0.12 builds
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if name == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown decoder_norm {name!r}; choices: {', '.join(NORM_NAMES)}")


__all__ = ["NORM_NAMES", "build_norm"]
