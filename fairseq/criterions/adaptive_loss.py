"""Cross entropy through the decoder's adaptive softmax, without scoring the whole vocabulary."""
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from omegaconf import II

from fairseq.criterions import register_criterion
from fairseq.criterions.fairseq_criterion import FairseqCriterion
from fairseq.dataclass import FairseqDataclass
from fairseq.errors import ConfigError


@dataclass
class AdaptiveLossConfig(FairseqDataclass):
    sentence_avg: bool = field(
        default=II("optimization.sentence_avg"),
        metadata={"help": "normalize gradients by the number of sentences instead of tokens"},
    )


def adaptive_softmax_of(model: torch.nn.Module):
    """The adaptive softmax at the end of ``model``'s decoder.

    Raises:
        ConfigError: if the model has none (it was built without ``adaptive_softmax_cutoff``).
    """
    adaptive_softmax = getattr(getattr(model, "decoder", None), "adaptive_softmax", None)
    if adaptive_softmax is None:
        raise ConfigError(
            f"criterion adaptive_loss needs a model whose decoder ends in an adaptive softmax, but "
            f"{type(model).__name__} has none (model.adaptive_softmax_cutoff is unset); set it to "
            "vocabulary cutoffs below the vocabulary size, e.g. model.adaptive_softmax_cutoff='10000,50000' "
            "(legacy: --adaptive-softmax-cutoff 10000,50000), or use criterion=cross_entropy"
        )
    return adaptive_softmax


@register_criterion("adaptive_loss", dataclass=AdaptiveLossConfig)
class AdaptiveLoss(FairseqCriterion):
    """Sum of ``-log p(target)`` over non-padding tokens, computed band by band.

    A target in the head band costs one head cross entropy; a target in tail band ``i`` costs
    the head cross entropy of its cluster token plus its cross entropy within the tail, which
    is scored only at the positions whose target lies in that band. The sum equals the cross
    entropy of the full distribution the model's ``get_normalized_probs`` gives.

    Args:
        cfg: an :class:`AdaptiveLossConfig` node.
        task: provides the target dictionary (its pad is ignored).
    """

    def __init__(self, cfg: Any, task: Any):
        super().__init__(task)
        self.sentence_avg = bool(cfg.sentence_avg)

    def forward(self, model: torch.nn.Module, sample: Dict[str, Any],
                reduce: bool = True) -> Tuple[torch.Tensor, int, Dict[str, Any]]:
        """Loss of one batch.

        Args:
            model: a model whose decoder ends in an adaptive softmax.
            sample: a collated batch (``net_input``, ``target``, ``ntokens``, ``nsentences``).
            reduce: sum the loss; otherwise return the per-position loss (B, T), 0 at pads.

        Returns:
            ``(loss, sample_size, logging_output)``.

        Raises:
            ConfigError: if the model has no adaptive softmax.
        """
        adaptive_softmax = adaptive_softmax_of(model)
        net_output = model(**sample["net_input"])
        features = net_output[0]  # (B, T, C)
        target = model.get_targets(sample, net_output)  # (B, T)
        flat_target = target.reshape(-1)  # (B*T,)
        # Drop pads before the softmax: no band scores them, whatever the cutoffs.
        rows = flat_target.ne(self.padding_idx).nonzero().squeeze(1)  # (N,)
        x = features.reshape(-1, features.size(-1))[rows]  # (N, C)
        logits, band_targets = adaptive_softmax(x, flat_target[rows])

        if reduce:
            loss = features.new_zeros((), dtype=torch.float32)
            for band_logits, band_target in zip(logits, band_targets):
                if band_logits is not None:
                    loss = loss + F.cross_entropy(band_logits.float(), band_target, reduction="sum")
        else:
            per_token = self._per_token_loss(adaptive_softmax, logits, band_targets, flat_target[rows])
            loss = features.new_zeros(flat_target.numel(), dtype=torch.float32)
            loss = loss.index_put((rows,), per_token).view_as(target)  # (B, T)

        sample_size = sample["nsentences"] if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.detach() if reduce else loss.detach().sum(),
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @staticmethod
    def _per_token_loss(adaptive_softmax: Any, logits: list, band_targets: list,
                        target: torch.Tensor) -> torch.Tensor:
        """(N,) loss of every kept position: head term plus the term of its tail, if any."""
        loss = F.cross_entropy(logits[0].float(), band_targets[0], reduction="none")  # (N,)
        cutoff = adaptive_softmax.cutoff
        for i, (band_logits, band_target) in enumerate(zip(logits[1:], band_targets[1:])):
            if band_logits is None:
                continue
            # The same rows, in the same order, as the adaptive softmax selected for tail i.
            in_band = ((target >= cutoff[i]) & (target < cutoff[i + 1])).nonzero().squeeze(1)
            tail = F.cross_entropy(band_logits.float(), band_target, reduction="none")
            loss = loss.index_add(0, in_band, tail)
        return loss
