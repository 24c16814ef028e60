"""Base class of encoders (``fairseq.models.FairseqEncoder``) and the ``EncoderOut`` tuple."""
from typing import Any, Dict, List, NamedTuple, Optional

import torch.nn as nn
from torch import Tensor


class EncoderOut(NamedTuple):
    """What fairseq's older encoders return; newer ones return a dict of lists instead.

    Shapes: ``encoder_out`` (T, B, C); ``encoder_padding_mask`` (B, T);
    ``encoder_embedding`` (B, T, C); ``encoder_states`` a list of (T, B, C);
    ``src_tokens`` (B, T); ``src_lengths`` (B, 1).
    """

    encoder_out: Tensor
    encoder_padding_mask: Optional[Tensor]
    encoder_embedding: Optional[Tensor]
    encoder_states: Optional[List[Tensor]]
    src_tokens: Optional[Tensor]
    src_lengths: Optional[Tensor]


class FairseqEncoder(nn.Module):
    """Base of encoders: maps source tokens to a representation a decoder attends to.

    Args:
        dictionary: the source vocabulary (kept as ``self.dictionary``).
    """

    def __init__(self, dictionary: Any):
        super().__init__()
        self.dictionary = dictionary

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, **kwargs: Any) -> Any:
        """Encode ``src_tokens`` (B, T) with lengths ``src_lengths`` (B,)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def forward_torchscript(self, net_input: Dict[str, Tensor]) -> Any:
        """``forward`` on a batch's ``net_input`` (``prev_output_tokens`` is left out)."""
        return self.forward_non_torchscript(net_input)

    def forward_non_torchscript(self, net_input: Dict[str, Tensor]) -> Any:
        return self.forward(**{k: v for k, v in net_input.items() if k != "prev_output_tokens"})

    def reorder_encoder_out(self, encoder_out: Any, new_order: Tensor) -> Any:
        """``encoder_out`` with its batch rows selected/reordered by ``new_order`` (beam search)."""
        raise NotImplementedError(f"{type(self).__name__} must implement reorder_encoder_out")

    def max_positions(self) -> float:
        """The longest input the encoder accepts (default: no practical limit)."""
        return 1e6

    def upgrade_state_dict_named(self, state_dict: Dict[str, Any], name: str) -> Dict[str, Any]:
        """Adapt an old checkpoint's weights in place; nothing to do by default."""
        return state_dict

    def set_num_updates(self, num_updates: int) -> None:
        """Pass the number of updates made so far to every submodule that tracks it."""
        for module in self.modules():
            if module is not self and hasattr(module, "set_num_updates"):
                module.set_num_updates(num_updates)


__all__ = ["EncoderOut", "FairseqEncoder"]
