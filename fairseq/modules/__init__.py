"""Building blocks of the models: attention, decoder layers, embeddings, output layers."""
from fairseq.modules.activations import get_activation_fn
from fairseq.modules.adaptive_input import AdaptiveInput
from fairseq.modules.adaptive_softmax import AdaptiveSoftmax
from fairseq.modules.fairseq_dropout import FairseqDropout
from fairseq.modules.multihead_attention import MultiheadAttention
from fairseq.modules.positional_embedding import (
    LearnedPositionalEmbedding,
    PositionalEmbedding,
    SinusoidalPositionalEmbedding,
)
from fairseq.modules.transformer_decoder import TransformerDecoder
from fairseq.modules.transformer_layer import TransformerDecoderLayer

__all__ = [
    "AdaptiveInput", "AdaptiveSoftmax", "FairseqDropout", "LearnedPositionalEmbedding", "MultiheadAttention",
    "PositionalEmbedding", "SinusoidalPositionalEmbedding", "TransformerDecoder",
    "TransformerDecoderLayer", "get_activation_fn",
]
