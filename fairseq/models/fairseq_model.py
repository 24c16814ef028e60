"""Base classes of every model: what trainers, criterions and generators may rely on.

It depends on torch, :mod:`fairseq.hub_loader` (which imports nothing) and two functions of
:mod:`fairseq.modules`: ``fairseq.models`` imports it before any model registers.
"""
from typing import Any, Dict, Optional, Tuple

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fairseq.dataclass.flags import DataclassFlags
from fairseq.hub_loader import hub_loader
from fairseq.modules.fused_cross_entropy import linear_target_log_probs
from fairseq.modules.output_projection import withdraw_if_overridden

NetOutput = Tuple[Tensor, Dict[str, Any]]


class BaseFairseqModel(nn.Module, DataclassFlags):
    """Base of all models: building from a config, normalized outputs, targets."""

    flags_without_defaults = True  # --arch fills the flags not given (DataclassFlags)

    @classmethod
    def build_model(cls, cfg: Any, task: Any) -> "BaseFairseqModel":
        """Build a model from its config node and the task (which provides the dictionaries)."""
        raise NotImplementedError(f"{cls.__name__} must implement build_model(cfg, task)")

    def get_targets(self, sample: Dict[str, Any], net_output: NetOutput) -> Tensor:
        """The targets a criterion compares ``net_output`` with: ``sample["target"]``."""
        return sample["target"]

    def get_normalized_probs(self, net_output: NetOutput, log_probs: bool,
                             sample: Optional[Dict[str, Any]] = None) -> Tensor:
        """(Log-)probabilities over the vocabulary from the model's output.

        Args:
            net_output: what ``forward`` returned; ``net_output[0]`` holds (B, T, V) logits, or
                (B, T, C) features when the decoder ends in an adaptive softmax.
            log_probs: return log-probabilities instead of probabilities.
            sample: the batch; unused except that its ``"target"`` is handed to an adaptive softmax.

        Returns:
            (B, T, V) float32 tensor.
        """
        adaptive_softmax = getattr(getattr(self, "decoder", None), "adaptive_softmax", None)
        if adaptive_softmax is not None:
            target = sample["target"] if sample is not None else None
            out = adaptive_softmax.get_log_prob(net_output[0], target)
            return out if log_probs else out.exp()
        logits = net_output[0].float()
        return F.log_softmax(logits, dim=-1) if log_probs else F.softmax(logits, dim=-1)

    def max_positions(self) -> Optional[int]:
        """The longest input the model accepts (``None``: no limit)."""
        return None

    def plain_output_projection(self) -> Optional[nn.Linear]:
        """The ``nn.Linear`` that turns the model's ``features_only=True`` output into its
        logits, when a loss or a scorer may apply it itself (the fused cross entropy, target
        scoring without the logits); ``None`` here: the model's own ``forward`` and
        :meth:`get_normalized_probs` are used."""
        return None

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: str = "model.pt",
                        data_name_or_path: str = ".", **kwargs: Any):
        """Load a local checkpoint as a hub object with ``score``, ``sample`` and ``generate``.

        See :func:`fairseq.hub_utils.from_pretrained` for the arguments; nothing is downloaded.
        The hub sits above the models (it loads checkpoints, tasks and generators): this method
        hands over to the loader the package root installs (:mod:`fairseq.hub_loader`).
        """
        return hub_loader()(model_name_or_path, checkpoint_file, data_name_or_path,
                            archive_map=cls.hub_models(), **kwargs)

    @classmethod
    def hub_models(cls) -> Dict[str, str]:
        """Names ``from_pretrained`` maps to local paths (none: every model is a local path)."""
        return {}

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters, each shared tensor counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def set_num_updates(self, num_updates: int) -> None:
        """Tell every submodule that tracks training progress how many updates have been made."""
        for module in self.modules():
            if module is not self and hasattr(module, "set_num_updates"):
                module.set_num_updates(num_updates)


class FairseqLanguageModel(BaseFairseqModel):
    """A model made of one decoder that predicts the next token.

    Args:
        decoder: module mapping (B, T) tokens to ``(logits (B, T, V), extra dict)``.
    """

    supported_targets = {"future"}

    #: this class's ``forward`` hands over to the decoder, its targets are ``sample["target"]``
    #: and its normalized probabilities the softmax of the logits: :meth:`plain_output_projection`
    #: may then offer the decoder's projection. A subclass that overrides one of
    #: ``PLAIN_OUTPUT_METHODS`` loses this unless it sets ``plain_output`` again in its own body
    #: (:func:`~fairseq.modules.output_projection.withdraw_if_overridden`)
    plain_output: bool = True
    PLAIN_OUTPUT_METHODS = ("forward", "output_layer", "get_targets", "get_normalized_probs")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        withdraw_if_overridden(cls, "plain_output", cls.PLAIN_OUTPUT_METHODS)

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None,
                incremental_state: Optional[Dict[str, Any]] = None, **kwargs: Any) -> NetOutput:
        """Run the decoder.

        Args:
            src_tokens: (B, T) token ids (right-padded).
            src_lengths: (B,) lengths; unused by decoder-only models, accepted so that a batch's
                ``net_input`` can be passed as is.
            incremental_state: cache for step-by-step decoding (see the decoder).
            **kwargs: passed on to the decoder (e.g. ``features_only=True``).

        Returns:
            ``(logits (B, T, V), extra)``.
        """
        return self.decoder(src_tokens, incremental_state=incremental_state, **kwargs)

    def extract_features(self, src_tokens: Tensor, **kwargs: Any) -> NetOutput:
        """The decoder's last hidden states (B, T, C) and extras, without the output layer."""
        return self.decoder.extract_features(src_tokens, **kwargs)

    def output_layer(self, features: Tensor) -> Tensor:
        """Project features (B, T, C) to the vocabulary."""
        return self.decoder.output_layer(features)

    def plain_output_projection(self) -> Optional[nn.Linear]:
        """The decoder's projection when this class keeps ``plain_output`` and the decoder offers
        one (``decoder.plain_output_projection()``, e.g. the transformer decoder without an
        adaptive softmax); ``None`` otherwise."""
        if not self.plain_output:
            return None
        # the decoder is any module with the decoder's call signature: the offer is optional
        offer = getattr(self.decoder, "plain_output_projection", None)
        return offer() if offer is not None else None

    def score_targets(self, net_input: Dict[str, Any], target: Tensor) -> Optional[Tuple[Tensor, Dict[str, Any]]]:
        """The (B, T) float32 log-probabilities of ``target`` and the decoder's extras, computed
        without the (B, T, V) logits, or ``None`` where that cannot be done: then score with
        ``forward`` and :meth:`get_normalized_probs` (what ``SequenceScorer`` does).

        The fast way applies when :meth:`plain_output_projection` offers a projection; the
        values are then those of ``forward`` and :meth:`get_normalized_probs` within float
        rounding. The question comes before any forward, so a model scored the other way runs
        its forward once."""
        projection = self.plain_output_projection()
        if projection is None:
            return None
        features, extra = self(**net_input, features_only=True)
        flat = features.reshape(-1, features.size(-1))
        scores = linear_target_log_probs(flat, projection.weight, target.reshape(-1), projection.bias)
        return scores.view(target.shape), extra

    def reorder_incremental_state(self, incremental_state: Dict[str, Any], new_order: Tensor) -> None:
        """Reorder (select) the batch rows of a decoding cache, e.g. after a beam search step."""
        self.decoder.reorder_incremental_state(incremental_state, new_order)

    def max_positions(self) -> Optional[int]:
        return self.decoder.max_positions()

    def max_decoder_positions(self) -> Optional[int]:
        return self.decoder.max_positions()


__all__ = ["BaseFairseqModel", "FairseqLanguageModel", "NetOutput"]
