"""Base class of decoders (``fairseq.models.FairseqDecoder``)."""
from typing import Any, Dict, Optional, Tuple

import torch.nn as nn
from torch import Tensor


class FairseqDecoder(nn.Module):
    """Base of decoders: ``forward`` is ``output_layer(extract_features(...))``.

    Subclasses implement :meth:`extract_features` (tokens to hidden states) and
    :meth:`output_layer` (hidden states to vocabulary scores). A decoder that ends in an
    adaptive softmax sets ``self.adaptive_softmax``; :meth:`get_normalized_probs` then uses it.

    Args:
        dictionary: the target vocabulary (kept as ``self.dictionary``).
    """

    def __init__(self, dictionary: Any):
        super().__init__()
        self.dictionary = dictionary
        self.onnx_trace = False
        self.adaptive_softmax: Optional[nn.Module] = None

    def forward(self, prev_output_tokens: Tensor, encoder_out: Any = None,
                **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        """Scores (B, T, V) for the next token after each position, and extras.

        Args:
            prev_output_tokens: (B, T) input tokens (the targets shifted right).
            encoder_out: what the encoder returned, for models that have one.
        """
        features, extra = self.extract_features(prev_output_tokens, encoder_out=encoder_out, **kwargs)
        return self.output_layer(features), extra

    def extract_features(self, prev_output_tokens: Tensor, encoder_out: Any = None,
                         **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        """Hidden states (B, T, C) and extras."""
        raise NotImplementedError(f"{type(self).__name__} must implement extract_features")

    def output_layer(self, features: Tensor, **kwargs: Any) -> Tensor:
        """Project hidden states to the output vocabulary."""
        raise NotImplementedError(f"{type(self).__name__} must implement output_layer")

    def get_normalized_probs(self, net_output: Tuple[Tensor, Any], log_probs: bool,
                             sample: Optional[Dict[str, Any]] = None) -> Tensor:
        """(Log-)probabilities from ``forward``'s output, in float32."""
        return self.get_normalized_probs_scriptable(net_output, log_probs, sample)

    def get_normalized_probs_scriptable(self, net_output: Tuple[Tensor, Any], log_probs: bool,
                                        sample: Optional[Dict[str, Any]] = None) -> Tensor:
        """The body of :meth:`get_normalized_probs` (subclasses may call it directly)."""
        from fairseq import utils

        if self.adaptive_softmax is not None:
            target = sample["target"] if sample is not None else None
            out = self.adaptive_softmax.get_log_prob(net_output[0], target=target)
            return out if log_probs else out.exp()
        logits = net_output[0]
        if log_probs:
            return utils.log_softmax(logits, dim=-1, onnx_trace=self.onnx_trace)
        return utils.softmax(logits, dim=-1, onnx_trace=self.onnx_trace)

    def max_positions(self) -> float:
        """The longest input the decoder accepts (default: no practical limit)."""
        return 1e6

    def upgrade_state_dict_named(self, state_dict: Dict[str, Any], name: str) -> Dict[str, Any]:
        """Adapt an old checkpoint's weights in place; nothing to do by default."""
        return state_dict

    def prepare_for_onnx_export_(self) -> None:
        self.onnx_trace = True


__all__ = ["FairseqDecoder"]
