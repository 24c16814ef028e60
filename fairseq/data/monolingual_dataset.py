"""Language-model samples (input and next-token target) built from token blocks."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from fairseq.data import data_utils
from fairseq.data.dictionary import Dictionary
from fairseq.data.fairseq_dataset import FairseqDataset

__all__ = ["MonolingualDataset", "TARGET_KINDS", "collate"]

# "future": the next token (language modelling); "self": the input itself;
# "past": the previous token.
TARGET_KINDS = ("self", "future", "past")

Target = Union[torch.Tensor, List[torch.Tensor], None]


def collate(
    samples: List[Dict[str, Any]],
    pad_idx: int,
    eos_idx: int,
    fixed_pad_length: Optional[int] = None,
    pad_to_bsz: Optional[int] = None,
) -> Dict[str, Any]:
    """Merge language-model samples into a right-padded mini-batch.

    Returns:
        ``{}`` for no samples (a dummy batch), else ``{"id": LongTensor (B,),
        "nsentences": B, "ntokens": source tokens in the batch, "net_input":
        {"src_tokens": (B, T), "src_lengths": LongTensor (B,)}, "target": (B, T), a list
        of such tensors for several targets, or ``src_tokens`` when samples have none}``.
    """
    if len(samples) == 0:
        return {}

    def merge(values: List[torch.Tensor]) -> torch.Tensor:
        return data_utils.collate_tokens(
            values, pad_idx, eos_idx, left_pad=False, pad_to_length=fixed_pad_length, pad_to_bsz=pad_to_bsz
        )

    src_tokens = merge([sample["source"] for sample in samples])
    first_target = samples[0]["target"]
    if first_target is None:
        target: Any = src_tokens
    elif isinstance(first_target, list):
        target = [merge([sample["target"][k] for sample in samples]) for k in range(len(first_target))]
    else:
        target = merge([sample["target"] for sample in samples])
    return {
        "id": torch.LongTensor([int(sample["id"]) for sample in samples]),
        "nsentences": len(samples),
        "ntokens": sum(len(sample["source"]) for sample in samples),
        "net_input": {
            "src_tokens": src_tokens,
            "src_lengths": torch.LongTensor([sample["source"].numel() for sample in samples]),
        },
        "target": target,
    }


class MonolingualDataset(FairseqDataset):
    """Pairs each block's input with its target(s) for language modelling.

    With ``targets``, the wrapped items are ``(source, future_target, past_target)``
    triples, as :class:`~fairseq.data.TokenBlockDataset` returns with
    ``include_targets=True``; without, items are plain token tensors and the batch target
    is the input itself.

    Args:
        dataset: the triples (or tensors when ``targets`` is None).
        sizes: length of every item, shape (N,).
        src_vocab: dictionary of the input (gives pad, eos, bos).
        tgt_vocab: dictionary of the target; ids it does not cover become its unk.
            Defaults to ``src_vocab``.
        add_eos_for_other_targets: with a ``"self"`` or ``"past"`` target, end the source
            with eos when it does not already (the future target gets a pad there, the
            past target the former last token).
        shuffle: randomise the order of equal-size items in :meth:`ordered_indices`.
        targets: target kinds, each ``"self"``, ``"future"`` or ``"past"``; several give
            a list of targets. None or empty: no target (see above).
        add_bos_token: prepend bos to the source and to the target(s).
        fixed_pad_length: pad every batch to at least this length.
        pad_to_bsz: pad every batch to at least this many rows.
        src_lang_idx, tgt_lang_idx: accepted for fairseq compatibility (multilingual LMs).
        seed: if given, :meth:`ordered_indices` shuffles under ``numpy_seed(seed)`` (the
            order fairseq gets from ``get_batch_iterator(seed=...)``); None uses numpy's
            global RNG as the caller seeded it.

    Raises:
        ValueError: on an unknown target kind.
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        sizes: Union[np.ndarray, Sequence[int]],
        src_vocab: Dictionary,
        tgt_vocab: Optional[Dictionary] = None,
        add_eos_for_other_targets: bool = False,
        shuffle: bool = False,
        targets: Optional[List[str]] = None,
        add_bos_token: bool = False,
        fixed_pad_length: Optional[int] = None,
        pad_to_bsz: Optional[int] = None,
        src_lang_idx: Optional[int] = None,
        tgt_lang_idx: Optional[int] = None,
        *,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        if targets is not None:
            unknown = [kind for kind in targets if kind not in TARGET_KINDS]
            if unknown:
                raise ValueError(f"unknown target kind(s) {unknown}; targets must be among {list(TARGET_KINDS)}")
            targets = list(targets) or None
        self.dataset = dataset
        self.sizes = np.array(sizes)
        self.vocab = src_vocab
        self.tgt_vocab = tgt_vocab or src_vocab
        self.add_eos_for_other_targets = add_eos_for_other_targets
        self.shuffle = shuffle
        self.targets = targets
        self.add_bos_token = add_bos_token
        self.fixed_pad_length = fixed_pad_length
        self.pad_to_bsz = pad_to_bsz
        self.src_lang_idx = src_lang_idx
        self.tgt_lang_idx = tgt_lang_idx
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        """Return ``{"id": index, "source": LongTensor (T,), "target": tensor, list or None}``."""
        target: Target
        if self.targets is not None:
            source, future_target, past_target = self.dataset[index]
            source, target = self._make_source_target(source, future_target, past_target)
        else:
            source, target = self.dataset[index], None
        source, target = self._maybe_add_bos(source, target)
        return {"id": index, "source": source, "target": target}

    def _make_source_target(
        self, source: torch.Tensor, future_target: torch.Tensor, past_target: torch.Tensor
    ) -> Tuple[torch.Tensor, Target]:
        assert self.targets is not None
        eos = self.vocab.eos()
        wants_eos = self.add_eos_for_other_targets and ("self" in self.targets or "past" in self.targets)
        if wants_eos and (len(source) == 0 or int(source[-1]) != eos):
            source = torch.cat([source, source.new([eos])])
            if "future" in self.targets:
                future_target = torch.cat([future_target, future_target.new([self.vocab.pad()])])
            if "past" in self.targets:
                # x[t-2] for the appended position is the former last source token.
                before_eos = source[-2:-1] if len(source) > 1 else source.new([self.vocab.pad()])
                past_target = torch.cat([past_target.new([self.vocab.pad()]), past_target[1:], before_eos])
        chosen = [{"self": source, "future": future_target, "past": past_target}[kind] for kind in self.targets]
        target: Target = chosen[0] if len(chosen) == 1 else chosen
        return source, self._filter_vocab(target)

    def _maybe_add_bos(self, source: torch.Tensor, target: Target) -> Tuple[torch.Tensor, Target]:
        if not self.add_bos_token:
            return source, target
        source = torch.cat([source.new([self.vocab.bos()]), source])
        if isinstance(target, list):
            target = [torch.cat([t.new([self.tgt_vocab.bos()]), t]) for t in target]
        elif target is not None:
            target = torch.cat([target.new([self.tgt_vocab.bos()]), target])
        return source, target

    def _filter_vocab(self, target: Target) -> Target:
        """Map ids beyond the target vocabulary to its unk."""
        if len(self.tgt_vocab) == len(self.vocab) or target is None:
            return target
        if isinstance(target, list):
            return [self._filter_vocab(t) for t in target]  # type: ignore[misc]
        return target.masked_fill(target >= len(self.tgt_vocab), self.tgt_vocab.unk())

    def collater(self, samples: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Merge samples into a right-padded mini-batch (see :func:`collate`)."""
        return collate(samples, self.vocab.pad(), self.vocab.eos(), self.fixed_pad_length, self.pad_to_bsz)

    def num_tokens(self, index: int) -> int:
        """Number of tokens of item ``index`` (what ``max_tokens`` counts)."""
        return int(self.sizes[index])

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        """Number of tokens of each item in ``indices``."""
        return self.sizes[np.asarray(indices, dtype=np.int64)]

    def size(self, index: int) -> int:
        """Length of item ``index``, used to filter by maximum positions."""
        return int(self.sizes[index])

    def ordered_indices(self) -> np.ndarray:
        """Item ids sorted by size (stable); in random order among equal sizes with ``shuffle``."""
        if self.shuffle:
            with data_utils.numpy_seed(self.seed):
                tie_breaker = np.random.permutation(len(self))
        else:
            tie_breaker = np.arange(len(self))
        # lexsort sorts by its last key first: size, then the tie breaker.
        return np.lexsort([tie_breaker, self.sizes])

    @property
    def supports_prefetch(self) -> bool:
        return getattr(self.dataset, "supports_prefetch", False)

    def prefetch(self, indices: Sequence[int]) -> None:
        self.dataset.prefetch(indices)  # type: ignore[attr-defined]

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped dataset if it uses it."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
