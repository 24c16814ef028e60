"""Token-level cross entropy of a model's next-token predictions."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from omegaconf import II

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
    which is exact only for this package's decoder-only models with an unmodified output layer
    (no adaptive softmax, no overridden ``forward``/``output_layer``/``get_targets``). Wrappers
    (DDP, ``torch.compile``) are looked through; DDP with ``find_unused_parameters`` is not
    fused (the projection's gradient arrives outside the graph DDP searches).
    """
    from fairseq.models.fairseq_model import BaseFairseqModel, FairseqLanguageModel
    from fairseq.modules.transformer_decoder import TransformerDecoder

    if getattr(model, "find_unused_parameters", False):
        return None
    inner = model
    for _ in range(4):  # DDP / proxy wrappers (.module), torch.compile (._orig_mod)
        nxt = getattr(inner, "_orig_mod", None) or getattr(inner, "module", None)
        if not isinstance(nxt, torch.nn.Module):
            break
        inner = nxt
    if not isinstance(inner, FairseqLanguageModel):
        return None
    cls, decoder = type(inner), getattr(inner, "decoder", None)
    if (cls.forward is not FairseqLanguageModel.forward or cls.get_targets is not BaseFairseqModel.get_targets
            or not isinstance(decoder, TransformerDecoder)):
        return None
    dcls = type(decoder)
    if dcls.forward is not TransformerDecoder.forward or dcls.output_layer is not TransformerDecoder.output_layer:
        return None
    projection = decoder.output_projection
    if decoder.adaptive_softmax is not None or type(projection) is not torch.nn.Linear:
        return None
    return projection


@register_criterion("cross_entropy", dataclass=CrossEntropyCriterionConfig)
class CrossEntropyCriterion(FairseqCriterion):
    """Sum of ``-log p(target)`` over non-padding target tokens.

    By default (``fused_output_loss``) the output projection and the loss run as one step
    (:func:`fairseq.modules.fused_cross_entropy.fused_linear_cross_entropy`) when the model
    allows it exactly (see :func:`fusable_output_projection`); otherwise, or with
    ``fused_output_loss=false``, the model's logits go through ``F.cross_entropy``.
    """

    #: logits per block of the fused path (rows x vocabulary); None: the rule of
    #: :func:`fairseq.modules.fused_cross_entropy.block_rows` (from the vocabulary and hidden sizes)
    block_elements: Optional[int] = None

    def __init__(self, cfg: Any, task: Any):
        super().__init__(task)
        self.sentence_avg = bool(cfg.sentence_avg)
        self.fused_output_loss = bool(getattr(cfg, "fused_output_loss", True))

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
