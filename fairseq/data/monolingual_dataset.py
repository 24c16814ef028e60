"""Language-model samples (input and next-token target) built from token blocks."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from fairseq.data.data_utils import collate_tokens
from fairseq.data.dictionary import Dictionary

__all__ = ["MonolingualDataset", "TARGET_KINDS"]

# "future": the next token (language modelling); "self": the input itself;
# "past": the previous token.
TARGET_KINDS = ("future", "self", "past")


class MonolingualDataset(torch.utils.data.Dataset):
    """Pairs each block's input with its target for language modelling.

    Wraps a dataset whose items are ``(source, future_target, past_target)`` triples,
    as :class:`~fairseq.data.TokenBlockDataset` returns with ``include_targets=True``.

    Args:
        dataset: the triples.
        sizes: length of every item, shape (N,).
        src_vocab: dictionary of the input (gives pad, eos, bos).
        tgt_vocab: dictionary of the target; ids it does not cover become its unk.
            Defaults to ``src_vocab``.
        add_eos_for_other_targets: with a ``"self"`` or ``"past"`` target, end the
            source with eos when it does not already (the target follows suit, and a
            ``"future"`` target would get a pad).
        shuffle: randomise the order of equal-size items in :meth:`ordered_indices`.
        targets: which target to train on: a list holding one of ``"future"``
            (default), ``"self"``, ``"past"``. Several targets are not supported.
        add_bos_token: prepend bos to the source, and pad to the target so both keep
            the same length (the bos position predicts nothing).
        seed: seed of the shuffle in :meth:`ordered_indices`; None uses numpy's global
            RNG, which callers seed with :func:`~fairseq.data.data_utils.numpy_seed`.

    Raises:
        ValueError: on an unknown target kind.
        NotImplementedError: if more than one target is requested.
    """

    supports_prefetch = False

    def __init__(
        self,
        dataset: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        sizes: np.ndarray,
        src_vocab: Dictionary,
        tgt_vocab: Optional[Dictionary] = None,
        add_eos_for_other_targets: bool = False,
        shuffle: bool = False,
        targets: Optional[List[str]] = None,
        add_bos_token: bool = False,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        targets = ["future"] if targets is None else list(targets)
        unknown = [kind for kind in targets if kind not in TARGET_KINDS]
        if unknown:
            raise ValueError(f"unknown target kind(s) {unknown}; choose from {list(TARGET_KINDS)}")
        if len(targets) != 1:
            raise NotImplementedError(
                f"MonolingualDataset supports exactly one target kind, got {targets}; pass e.g. targets=['future']"
            )
        self.dataset = dataset
        self.vocab = src_vocab
        self.tgt_vocab = tgt_vocab if tgt_vocab is not None else src_vocab
        self.add_eos_for_other_targets = add_eos_for_other_targets
        self.shuffle = shuffle
        self.targets = targets
        self.add_bos_token = add_bos_token
        self.seed = seed
        self._sizes = np.asarray(sizes, dtype=np.int64) + (1 if add_bos_token else 0)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        """Return ``{"id": index, "source": LongTensor (T,), "target": LongTensor (T,)}``."""
        source, future_target, past_target = self.dataset[index]
        source, target = self._make_source_target(source.long(), future_target.long(), past_target.long())
        if self.add_bos_token:
            source = torch.cat([source.new_tensor([self.vocab.bos()]), source])
            target = torch.cat([target.new_tensor([self.tgt_vocab.pad()]), target])
        return {"id": index, "source": source, "target": target}

    def _make_source_target(
        self, source: torch.Tensor, future_target: torch.Tensor, past_target: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        kind = self.targets[0]
        eos = self.vocab.eos()
        if self.add_eos_for_other_targets and kind in ("self", "past") and (len(source) == 0 or source[-1] != eos):
            # The token before the appended eos is the source's former last token.
            previous = source[-1:] if len(source) else source.new_tensor([self.vocab.pad()])
            past_target = torch.cat([past_target, previous])
            source = torch.cat([source, source.new_tensor([eos])])
            future_target = torch.cat([future_target, future_target.new_tensor([self.vocab.pad()])])
        target = {"future": future_target, "self": source, "past": past_target}[kind]
        return source, self._map_to_target_vocab(target)

    def _map_to_target_vocab(self, target: torch.Tensor) -> torch.Tensor:
        if len(self.tgt_vocab) >= len(self.vocab):
            return target
        return target.masked_fill(target >= len(self.tgt_vocab), self.tgt_vocab.unk())

    def collater(self, samples: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Merge samples into a right-padded mini-batch.

        Returns:
            ``{}`` for no samples (a dummy batch), else ``{"id": LongTensor (B,),
            "nsentences": B, "ntokens": non-pad target tokens, "net_input":
            {"src_tokens": LongTensor (B, T), "src_lengths": LongTensor (B,)},
            "target": LongTensor (B, T)}``.
        """
        if len(samples) == 0:
            return {}
        pad = self.vocab.pad()
        src_tokens = collate_tokens([sample["source"] for sample in samples], pad)  # (B, T)
        target = collate_tokens([sample["target"] for sample in samples], self.tgt_vocab.pad())  # (B, T)
        return {
            "id": torch.tensor([int(sample["id"]) for sample in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": int(target.ne(self.tgt_vocab.pad()).sum()),
            "net_input": {
                "src_tokens": src_tokens,
                "src_lengths": torch.tensor([sample["source"].numel() for sample in samples], dtype=torch.long),
            },
            "target": target,
        }

    @property
    def sizes(self) -> np.ndarray:
        """Source length of every item, shape (N,)."""
        return self._sizes

    def num_tokens(self, index: int) -> int:
        """Number of tokens of item ``index`` (what ``max_tokens`` counts)."""
        return int(self._sizes[index])

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        """Number of tokens of each item in ``indices``."""
        return self._sizes[np.asarray(indices, dtype=np.int64)]

    def size(self, index: int) -> int:
        """Length of item ``index``, used to filter by maximum positions."""
        return int(self._sizes[index])

    def ordered_indices(self) -> np.ndarray:
        """Item ids sorted by size (stable); shuffled among equal sizes when ``shuffle``."""
        if self.shuffle:
            rng = np.random if self.seed is None else np.random.RandomState(self.seed)
            tie_breaker = rng.permutation(len(self))
        else:
            tie_breaker = np.arange(len(self))
        # lexsort sorts by its last key first: size, then the tie breaker.
        return np.lexsort((tie_breaker, self._sizes))

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped dataset if it uses it."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
