"""``FairseqEncoderDecoderModel``: a model made of an encoder and a decoder.

(fairseq defines it in ``fairseq.models.fairseq_model``; here it is importable as
``fairseq.models.FairseqEncoderDecoderModel``.)
"""
from typing import Any, Dict, Optional, Tuple

from torch import Tensor

from fairseq.models.fairseq_decoder import FairseqDecoder
from fairseq.models.fairseq_encoder import FairseqEncoder
from fairseq.models.fairseq_model import BaseFairseqModel


class FairseqEncoderDecoderModel(BaseFairseqModel):
    """Encode the source, then decode the target attending to the encoding.

    Args:
        encoder: a :class:`FairseqEncoder`.
        decoder: a :class:`FairseqDecoder`.
    """

    def __init__(self, encoder: FairseqEncoder, decoder: FairseqDecoder):
        super().__init__()
        if not isinstance(encoder, FairseqEncoder):
            raise TypeError(f"encoder must be a FairseqEncoder, got {type(encoder).__name__}")
        if not isinstance(decoder, FairseqDecoder):
            raise TypeError(f"decoder must be a FairseqDecoder, got {type(decoder).__name__}")
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor,
                **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        """Teacher-forced pass: scores (B, T_tgt, V) for every target position, and extras.

        Args:
            src_tokens: (B, T_src) source tokens.
            src_lengths: (B,) source lengths.
            prev_output_tokens: (B, T_tgt) the targets shifted right (starting with EOS).
        """
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, **kwargs)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out, **kwargs)

    def forward_decoder(self, prev_output_tokens: Tensor, **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        return self.decoder(prev_output_tokens, **kwargs)

    def extract_features(self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor,
                         **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        """The decoder's hidden states (B, T_tgt, C) instead of scores."""
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, **kwargs)
        return self.decoder.extract_features(prev_output_tokens, encoder_out=encoder_out, **kwargs)

    def output_layer(self, features: Tensor, **kwargs: Any) -> Tensor:
        return self.decoder.output_layer(features, **kwargs)

    def get_normalized_probs(self, net_output: Tuple[Tensor, Any], log_probs: bool,
                             sample: Optional[Dict[str, Any]] = None) -> Tensor:
        return self.decoder.get_normalized_probs(net_output, log_probs, sample)

    def max_positions(self) -> Tuple[Any, Any]:
        """``(source limit, target limit)``."""
        return self.encoder.max_positions(), self.decoder.max_positions()

    def max_decoder_positions(self) -> Any:
        return self.decoder.max_positions()


__all__ = ["FairseqEncoderDecoderModel"]
