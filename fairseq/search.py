"""Search strategies: how a generator picks the next tokens from the model's log-probabilities.

Each strategy turns per-row log-probabilities ``lprobs`` (bsz, K, V) and the cumulative scores of
the K live hypotheses of each sentence (bsz, K) into *candidates*: extended hypotheses, as
``(scores, tokens, beams)``, each (bsz, C), best first where the strategy ranks them.
``beams[b, c]`` names the hypothesis (0..K-1) candidate ``c`` extends. The generator finalizes the
candidates that end in EOS and keeps the best K others alive.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

Candidates = Tuple[Tensor, Tensor, Tensor]


class Search:
    """Base class: ``select`` proposes candidates; ``num_candidates`` says how many per sentence."""

    def num_candidates(self, beam_size: int) -> int:
        raise NotImplementedError

    def select(self, step: int, lprobs: Tensor, scores: Tensor) -> Candidates:
        raise NotImplementedError


class BeamSearch(Search):
    """Keep the ``2K`` best extensions of a sentence's K hypotheses (twice K, so that K remain
    alive even when up to K of them end in EOS and are finalized)."""

    def __init__(self, tgt_dict=None):
        self.tgt_dict = tgt_dict

    def num_candidates(self, beam_size: int) -> int:
        return 2 * beam_size

    def select(self, step: int, lprobs: Tensor, scores: Tensor) -> Candidates:
        bsz, beam_size, vocab = lprobs.shape
        total = (scores.unsqueeze(2) + lprobs).view(bsz, beam_size * vocab)  # (bsz, K*V)
        k = min(self.num_candidates(beam_size), total.size(1))
        cand_scores, flat = total.topk(k, dim=1)  # (bsz, C), best first
        return cand_scores, flat % vocab, torch.div(flat, vocab, rounding_mode="floor")


class Sampling(Search):
    """Draw one next token per hypothesis: from the whole distribution, the ``sampling_topk``
    most likely tokens, or the smallest set whose probability reaches ``sampling_topp``.

    Args:
        sampling_topk: keep only the k most likely tokens (``-1``: no limit).
        sampling_topp: keep the smallest most-likely set with total probability >= p, the token
            that crosses p included (``-1``: no limit).
        generator: the random number generator, for reproducible samples.
    """

    def __init__(self, tgt_dict=None, sampling_topk: int = -1, sampling_topp: float = -1.0,
                 generator: Optional[torch.Generator] = None):
        if sampling_topk == 0 or sampling_topk < -1:
            raise ValueError(f"sampling_topk={sampling_topk}: give a positive k, or -1 for no limit")
        if not (sampling_topp == -1.0 or 0.0 < sampling_topp <= 1.0):
            raise ValueError(f"sampling_topp={sampling_topp}: give p in (0, 1], or -1 for no limit")
        self.tgt_dict = tgt_dict
        self.sampling_topk = sampling_topk
        self.sampling_topp = sampling_topp
        self.generator = generator

    def num_candidates(self, beam_size: int) -> int:
        return beam_size

    def _restrict(self, lprobs: Tensor) -> Tensor:
        """``lprobs`` with every token outside the top-k / top-p set at -inf."""
        if self.sampling_topk > 0 and self.sampling_topk < lprobs.size(-1):
            kth = lprobs.topk(self.sampling_topk, dim=-1).values[..., -1:]  # (..., 1)
            lprobs = lprobs.masked_fill(lprobs < kth, float("-inf"))
        if self.sampling_topp > 0:
            sorted_lp, order = lprobs.sort(dim=-1, descending=True)
            before = sorted_lp.exp().cumsum(dim=-1) - sorted_lp.exp()  # probability mass ahead
            drop_sorted = before >= self.sampling_topp  # the crossing token itself stays
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            lprobs = lprobs.masked_fill(drop, float("-inf"))
        return lprobs

    def select(self, step: int, lprobs: Tensor, scores: Tensor) -> Candidates:
        bsz, beam_size, vocab = lprobs.shape
        allowed = self._restrict(lprobs)  # (bsz, K, V)
        probs = allowed.float().softmax(dim=-1).view(-1, vocab)
        # rows with nothing allowed (all -inf) come out as NaN: fall back to their argmax
        dead = ~torch.isfinite(allowed.view(-1, vocab)).any(dim=-1)
        probs = torch.where(dead.unsqueeze(1), torch.full_like(probs, 1.0 / vocab), probs)
        tokens = torch.multinomial(probs, 1, generator=self.generator).view(bsz, beam_size)
        token_lprobs = lprobs.gather(2, tokens.unsqueeze(2)).squeeze(2)  # (bsz, K)
        beams = torch.arange(beam_size, device=lprobs.device).expand(bsz, beam_size)
        return scores + token_lprobs, tokens, beams


__all__ = ["BeamSearch", "Sampling", "Search"]
