"""Token-level cross entropy of a model's next-token predictions."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from omegaconf import II
from torch.nn.parallel import DistributedDataParallel

from fairseq.criterions import register_criterion
from fairseq.criterions.fairseq_criterion import FairseqCriterion
from fairseq.dataclass import FairseqDataclass


@dataclass
class CrossEntropyCriterionConfig(FairseqDataclass):
    sentence_avg: bool = II("optimization.sentence_avg")
    fused_output_loss: bool = field(
        default=True,
        metadata={"help": "compute the output projection and the loss together, block by block over "
                          "tokens, never building the tokens x vocabulary logits (same loss and "
                          "gradients, less memory and time); false: logits, then cross entropy. "
                          "Applies to models ending in a plain output projection; others always "
                          "take the plain path"},
    )


def fusable_output_projection(model: torch.nn.Module) -> Optional[torch.nn.Linear]:
    """The output projection of ``model`` when its loss may be fused, else None.

    The fused path calls ``model(..., features_only=True)`` and applies the projection itself,
    which is exact when the model offers it: ``model.plain_output_projection()`` (see
    :mod:`fairseq.modules.output_projection`; models without the method take the plain path).
    ``model`` is what the trainer passes: the model itself (also when ``torch.compile``d in
    place, or sharded by FSDP2, which keeps its class's methods), or a wrapper that answers the
    model's methods (``ModuleProxyDDP``, torch's ``OptimizedModule``). DDP with
    ``find_unused_parameters`` is not fused: the projection's gradient would arrive outside
    the graph DDP searches for unused parameters.
    """
    if isinstance(model, DistributedDataParallel) and model.find_unused_parameters:
        return None
    offer = getattr(model, "plain_output_projection", None)
    return offer() if offer is not None else None


@register_criterion("cross_entropy", dataclass=CrossEntropyCriterionConfig)
class CrossEntropyCriterion(FairseqCriterion):
    """Sum of ``-log p(target)`` over non-padding target tokens.

    By default (``fused_output_loss``) the output projection and the loss run as one step
    (:func:`fairseq.modules.fused_cross_entropy.fused_linear_cross_entropy`) when the model
    offers its projection (see :func:`fusable_output_projection`); otherwise, or with
    ``fused_output_loss=false``, the model's logits go through ``F.cross_entropy``.
    """

    #: logits per block of the fused path (rows x vocabulary); None: the rule of
    #: :func:`fairseq.modules.fused_cross_entropy.block_rows` (from the vocabulary and hidden sizes)
    block_elements: Optional[int] = None

    def __init__(self, cfg: Any, task: Any):
        super().__init__(task)
        self.sentence_avg = bool(cfg.sentence_avg)
        self.fused_output_loss = bool(cfg.fused_output_loss)

    def forward(self, model, sample: Dict[str, Any],
                reduce: bool = True) -> Tuple[torch.Tensor, int, Dict[str, Any]]:
        """Loss of one batch.

        Args:
            model: the model (possibly wrapped in DDP or compiled).
            sample: a collated batch (``net_input``, ``target``, ``ntokens``, ``nsentences``).
            reduce: sum the loss; otherwise return the (B*T,) per-token losses, 0 at pads.

        Returns:
            ``(loss, sample_size, logging_output)``.
        """
        projection = fusable_output_projection(model) if self.fused_output_loss else None
        if projection is not None:
            loss = self._fused_loss(model, projection, sample, reduce)
        else:
            logits, _ = model(**sample["net_input"])  # (B, T, V)
            target = model.get_targets(sample, (logits, None))  # (B, T)
            loss = self._plain_loss(logits, target, reduce)
        sample_size = sample["nsentences"] if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.detach(),
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    def _plain_loss(self, logits: torch.Tensor, target: torch.Tensor, reduce: bool) -> torch.Tensor:
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1),
            ignore_index=self.padding_idx, reduction="sum" if reduce else "none",
        )

    def _fused_loss(self, model, projection: torch.nn.Linear, sample: Dict[str, Any],
                    reduce: bool) -> torch.Tensor:
        from fairseq.modules.fused_cross_entropy import fused_linear_cross_entropy

        features, extra = model(**sample["net_input"], features_only=True)  # (B, T, C)
        target = model.get_targets(sample, (features, extra))  # (B, T)
        if target.shape != features.shape[:-1]:  # targets of another shape: the plain path
            return self._plain_loss(projection(features), target, reduce)
        return fused_linear_cross_entropy(
            features.reshape(-1, features.size(-1)), projection.weight, target.reshape(-1),
            bias=projection.bias, ignore_index=self.padding_idx, reduction="sum" if reduce else "none",
            block_elements=self.block_elements,
        )
