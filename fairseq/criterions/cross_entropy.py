"""Token-level cross entropy of a model's next-token predictions."""
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from omegaconf import II

from fairseq.criterions import register_criterion
from fairseq.criterions.fairseq_criterion import FairseqCriterion
from fairseq.dataclass import FairseqDataclass


@dataclass
class CrossEntropyCriterionConfig(FairseqDataclass):
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("cross_entropy", dataclass=CrossEntropyCriterionConfig)
class CrossEntropyCriterion(FairseqCriterion):
    """Sum of ``-log p(target)`` over non-padding target tokens."""

    def __init__(self, cfg: Any, task: Any):
        super().__init__(task)
        self.sentence_avg = bool(cfg.sentence_avg)

    def forward(self, model, sample: Dict[str, Any],
                reduce: bool = True) -> Tuple[torch.Tensor, int, Dict[str, Any]]:
        logits, _ = model(**sample["net_input"])  # (B, T, V)
        target = model.get_targets(sample, (logits, None))  # (B, T)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1),
            ignore_index=self.padding_idx, reduction="sum" if reduce else "none",
        )
        sample_size = sample["nsentences"] if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.detach(),
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output
