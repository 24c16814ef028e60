"""Adaptive softmax (Grave et al., 2017): a cheap output layer for large, Zipfian vocabularies.

The vocabulary, sorted by frequency, is cut into bands at ``cutoff``. The *head* scores the
first band's words plus one "cluster" token per tail band; tail band ``i`` scores its own words
from a representation shrunk by ``factor**i``. A word's log-probability is its head score if it
is in the first band, else its cluster's head score plus its score within the tail.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fairseq.modules.adaptive_input import AdaptiveInput, Cutoff, normalize_cutoff
from fairseq.modules.fairseq_dropout import FairseqDropout


class AdaptiveSoftmax(nn.Module):
    """Adaptive softmax over ``vocab_size`` words.

    Every band keeps its weights in the same layout as :class:`AdaptiveInput` (tail projections
    ``(input_dim, band_dim)``, output tables ``(band_size, band_dim)``) so that the two can share
    parameters.

    Args:
        vocab_size: size of the vocabulary.
        input_dim: size of the decoder features fed to it.
        cutoff: band boundaries, e.g. ``"20000,60000"`` (see ``normalize_cutoff``).
        dropout: dropout inside each tail, between its projection and its output table.
        factor: tail band ``i`` works in dimension ``input_dim / factor**i``.
        adaptive_input: share the word tables with this adaptive input embedding
            (``tie_adaptive_weights``); its bands must match ``cutoff``.
        tie_proj: also share the tail projections with ``adaptive_input`` (``tie_adaptive_proj``).
    """

    def __init__(self, vocab_size: int, input_dim: int, cutoff: Cutoff, dropout: float = 0.0,
                 factor: float = 4.0, adaptive_input: Optional[AdaptiveInput] = None,
                 tie_proj: bool = False):
        super().__init__()
        self.cutoff = normalize_cutoff(cutoff, vocab_size)
        self.vocab_size = vocab_size
        self.input_dim = input_dim
        num_tails = len(self.cutoff) - 1
        if adaptive_input is not None:
            self._check_tie(adaptive_input, tie_proj)
        elif tie_proj:
            raise ValueError("tie_proj needs an adaptive_input to share the projections with")

        self.tie_proj = tie_proj
        self.tied = adaptive_input is not None
        self.dropout = FairseqDropout(dropout)
        if adaptive_input is not None:
            self.head_word_weight = adaptive_input.embeddings[0].weight  # shared
        else:
            self.head_word_weight = nn.Parameter(torch.empty(self.cutoff[0], input_dim))
            nn.init.xavier_uniform_(self.head_word_weight)
        self.head_cluster_weight = nn.Parameter(torch.empty(num_tails, input_dim))
        nn.init.xavier_uniform_(self.head_cluster_weight)

        self.tail_proj = nn.ParameterList()  # (input_dim, band_dim) each
        self.tail_out = nn.ParameterList()  # (band_size, band_dim) each
        for i in range(1, num_tails + 1):
            band_size = self.cutoff[i] - self.cutoff[i - 1]
            if adaptive_input is not None:
                out = adaptive_input.embeddings[i].weight
            else:
                band_dim = int(input_dim // factor**i)
                if band_dim < 1:
                    raise ValueError(f"tail {i} of the adaptive softmax gets dimension {band_dim}; "
                                     f"lower the factor ({factor}) or use fewer bands")
                out = nn.Parameter(torch.empty(band_size, band_dim))
                nn.init.xavier_uniform_(out)
            if tie_proj:
                # nn.Linear(band_dim, input_dim) stores (input_dim, band_dim): already our layout
                proj = adaptive_input.projections[i].weight
            else:
                proj = nn.Parameter(torch.empty(input_dim, out.size(1)))
                nn.init.xavier_uniform_(proj)
            self.tail_proj.append(proj)
            self.tail_out.append(out)

    def _check_tie(self, adaptive_input: AdaptiveInput, tie_proj: bool) -> None:
        if adaptive_input.cutoff != self.cutoff:
            raise ValueError(f"adaptive softmax cutoff {self.cutoff} differs from the adaptive "
                             f"input cutoff {adaptive_input.cutoff}; tied weights need the same bands")
        head_dim = adaptive_input.embeddings[0].embedding_dim
        if head_dim != self.input_dim:
            raise ValueError(f"tied head needs the adaptive input's first band dimension ({head_dim}) "
                             f"to equal the softmax input dimension ({self.input_dim})")
        if tie_proj and adaptive_input.embedding_dim != self.input_dim:
            raise ValueError(f"tie_proj needs the adaptive input output dimension "
                             f"({adaptive_input.embedding_dim}) to equal the softmax input "
                             f"dimension ({self.input_dim})")

    @property
    def num_tails(self) -> int:
        return len(self.tail_out)

    def head(self, x: Tensor) -> Tensor:
        """(N, C) features -> (N, cutoff[0] + num_tails) head logits."""
        return F.linear(x, torch.cat([self.head_word_weight, self.head_cluster_weight], dim=0))

    def tail(self, i: int, x: Tensor) -> Tensor:
        """(N, C) features -> (N, band_size) logits of the words of tail ``i`` (0-based)."""
        h = self.dropout(x @ self.tail_proj[i])  # (N, band_dim)
        return F.linear(h, self.tail_out[i])  # (N, band_size)

    def forward(self, input: Tensor, target: Tensor) -> Tuple[List[Optional[Tensor]], List[Optional[Tensor]]]:
        """Training-time logits, computed only where each band's targets need them.

        Args:
            input: (B, T, C) decoder features.
            target: (B, T) word ids.

        Returns:
            ``(logits, targets)``, two lists of ``1 + num_tails`` entries. Entry 0 is the head:
            logits (B*T, cutoff[0] + num_tails) and targets (B*T,), where a tail word is replaced
            by its cluster token. Entry ``i`` is tail ``i``: logits and targets (relative to the
            band start) of just the positions whose word lies in it, or ``None`` twice when no
            target does. A cross entropy summed over the entries is the negative log-likelihood.
            Pads (ids below ``cutoff[0]``) only occur in the head targets, so an ignore_index
            belongs on the head entry only.
        """
        x = self.dropout(input.reshape(-1, input.size(-1)))  # (N, C); dropout as fairseq applies it
        target = target.reshape(-1)  # (N,)
        head_target = target
        logits: List[Optional[Tensor]] = [self.head(x)]
        tail_targets: List[Optional[Tensor]] = []
        for i in range(self.num_tails):
            start, end = self.cutoff[i], self.cutoff[i + 1]
            in_band = (target >= start) & (target < end)  # (N,)
            head_target = torch.where(in_band, self.cutoff[0] + i, head_target)
            rows = in_band.nonzero().squeeze(1)
            if rows.numel() == 0:
                logits.append(None)
                tail_targets.append(None)
            else:
                logits.append(self.tail(i, x[rows]))
                tail_targets.append(target[rows] - start)
        return logits, [head_target] + tail_targets

    def get_log_prob(self, input: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """Log-probabilities of every word.

        Args:
            input: (B, T, C) decoder features.
            target: unused; accepted for interface compatibility (all bands are computed).

        Returns:
            (B, T, vocab_size) float32 log-probabilities.
        """
        B, T, C = input.shape
        x = input.reshape(-1, C)  # (N, C)
        head = F.log_softmax(self.head(x).float(), dim=-1)  # (N, cutoff[0] + num_tails)
        log_probs = head.new_empty(B * T, self.vocab_size)  # (N, V)
        log_probs[:, : self.cutoff[0]] = head[:, : self.cutoff[0]]
        for i in range(self.num_tails):
            start, end = self.cutoff[i], self.cutoff[i + 1]
            cluster = head[:, self.cutoff[0] + i].unsqueeze(1)  # (N, 1)
            log_probs[:, start:end] = cluster + F.log_softmax(self.tail(i, x).float(), dim=-1)
        return log_probs.view(B, T, self.vocab_size)


__all__ = ["AdaptiveSoftmax"]
