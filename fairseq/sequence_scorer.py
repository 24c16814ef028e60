"""Score given target sequences with a model (or an ensemble): the engine of ``fairseq-eval-lm``."""
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import torch
from torch import Tensor

__all__ = ["SequenceScorer"]


class SequenceScorer:
    """Log-probability of every target token of a batch under one model or an ensemble.

    Args:
        tgt_dict: the target dictionary (gives ``pad`` and ``eos``).
        softmax_batch: normalize the output over at most this many (row, position) pairs at a
            time, to bound the memory of the (tokens x vocabulary) softmax. ``None`` or 0: all
            at once. A single model that scores by itself (``score_targets``: the transformer
            LM with a plain output projection) never holds those logits, so it needs no limit.
        compute_alignment: accepted for fairseq compatibility; language models have no
            alignment, so it is always ``None``.
        eos: the end-of-sentence index (default: ``tgt_dict.eos()``).
        symbols_to_strip_from_output: indices a caller may strip from output text (``eos`` is
            always included).

    Raises:
        ValueError: if ``softmax_batch`` is negative.
    """

    def __init__(self, tgt_dict: Any, softmax_batch: Optional[int] = None, compute_alignment: bool = False,
                 eos: Optional[int] = None, symbols_to_strip_from_output: Optional[Set[int]] = None) -> None:
        self.pad = tgt_dict.pad()
        self.eos = tgt_dict.eos() if eos is None else eos
        if softmax_batch is not None and softmax_batch < 0:
            raise ValueError(f"softmax_batch={softmax_batch}: give a positive number of tokens "
                             "(or 0 for no limit)")
        self.softmax_batch = softmax_batch or sys.maxsize
        self.compute_alignment = compute_alignment
        self.symbols_to_strip_from_output = set(symbols_to_strip_from_output or ()) | {self.eos}

    def _chunks(self, net_output: Tuple[Any, ...], target: Tensor) -> Iterator[Tuple[Tuple[Any, ...], Tensor]]:
        """``net_output`` and ``target`` flattened to one row and cut in ``softmax_batch`` pieces."""
        first, rest = net_output[0], tuple(net_output[1:])
        bsz, tsz, dim = first.shape
        if bsz * tsz <= self.softmax_batch:
            yield net_output, target
            return
        flat = first.reshape(1, bsz * tsz, dim)
        flat_target = target.reshape(1, bsz * tsz)
        for start in range(0, bsz * tsz, self.softmax_batch):
            end = start + self.softmax_batch
            yield (flat[:, start:end],) + rest, flat_target[:, start:end]

    def _target_probs(self, model: torch.nn.Module, net_output: Tuple[Any, ...], sample: Dict[str, Any],
                      log_probs: bool) -> Tensor:
        """(B, T) (log-)probabilities the model gives each target token."""
        target = sample["target"]
        pieces = []
        try:
            for chunk, chunk_target in self._chunks(net_output, target):
                sample["target"] = chunk_target  # an adaptive softmax reads the target
                probs = model.get_normalized_probs(chunk, log_probs=log_probs, sample=sample)
                pieces.append(probs.gather(-1, chunk_target.unsqueeze(-1)).squeeze(-1).reshape(-1))
        finally:
            sample["target"] = target
        return torch.cat(pieces).view(target.shape)

    @torch.no_grad()
    def generate(self, models: Sequence[torch.nn.Module], sample: Dict[str, Any],
                 **kwargs: Any) -> List[List[Dict[str, Any]]]:
        """Score ``sample["target"]``.

        An ensemble averages the models' probabilities (then takes the log).

        Returns:
            One list per row holding one hypothesis: ``{"tokens": the scored target tokens,
            "positional_scores": their log-probabilities (natural log), "score": their mean,
            "attention": None or the averaged attention, "alignment": None}``. Scored tokens
            are the non-pad targets from ``sample["start_indices"][i]`` on (0 without it).
        """
        net_input = sample["net_input"]
        single = len(models) == 1
        total: Optional[Tensor] = None
        avg_attn: Optional[Tensor] = None
        for model in models:
            model.eval()
            # one model: its own scoring without the (B, T, V) logits, where it has one
            fast = getattr(model, "score_targets", None) if single else None
            scored = fast(net_input, sample["target"]) if fast is not None else None
            if scored is not None:
                probs, extra = scored
                net_output = (probs, extra)
            else:
                net_output = model(**net_input)
                probs = self._target_probs(model, net_output, sample, log_probs=single)
            total = probs if total is None else total + probs
            attn = None
            if len(net_output) > 1:
                extra = net_output[1]
                attn = extra.get("attn") if isinstance(extra, dict) else extra
                if isinstance(attn, (list, tuple)):
                    attn = attn[0] if attn else None
            if torch.is_tensor(attn):
                avg_attn = attn.detach() if avg_attn is None else avg_attn + attn.detach()
        assert total is not None, "SequenceScorer.generate needs at least one model"
        if not single:
            total = (total / len(models)).log()
            if avg_attn is not None:
                avg_attn = avg_attn / len(models)
        target = sample["target"]
        bsz = target.size(0)
        starts = sample.get("start_indices") or [0] * bsz
        hypos = []
        for i in range(bsz):
            row = target[i, starts[i]:]
            keep = row.ne(self.pad)
            tokens = row[keep]
            scores = total[i, starts[i]:][keep]
            score = scores.sum() / max(tokens.numel(), 1)
            hypos.append([{
                "tokens": tokens,
                "score": score,
                "attention": avg_attn[i] if avg_attn is not None else None,
                "alignment": None,
                "positional_scores": scores,
            }])
        return hypos
