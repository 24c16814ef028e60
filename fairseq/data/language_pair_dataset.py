"""Pairs of token sequences (source, optional target) batched for sequence-to-sequence models.

This project trains language models; the pair dataset is here because fairseq's public API has it
(``fairseq.data.LanguagePairDataset`` and ``language_pair_dataset.collate``) and scripts and tests
written against fairseq build batches with it. Alignments and decoding constraints are not
supported: they belong to translation, which this project does not implement.
"""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from fairseq.data import data_utils


def _shift_eos_to_front(sequence: torch.Tensor, eos_idx: int) -> torch.Tensor:
    """``[a, b, c, </s>]`` -> ``[</s>, a, b, c]``: the decoder input of teacher forcing."""
    shifted = sequence.new_empty(sequence.shape)
    shifted[0] = eos_idx
    shifted[1:] = sequence[:-1]
    return shifted


def collate(
    samples: List[Dict[str, Any]],
    pad_idx: int,
    eos_idx: int,
    left_pad_source: bool = True,
    left_pad_target: bool = False,
    input_feeding: bool = True,
    pad_to_length: Optional[Dict[str, int]] = None,
    pad_to_multiple: int = 1,
) -> Dict[str, Any]:
    """Batch ``{"id", "source", "target"}`` samples, longest source first.

    Returns:
        ``{"id": (B,), "nsentences", "ntokens", "net_input": {"src_tokens": (B, S),
        "src_lengths": (B,), "prev_output_tokens": (B, T) when there are targets and
        ``input_feeding``}, "target": (B, T) or None}``. ``ntokens`` counts target tokens when
        there are targets, source tokens otherwise.
    """
    if len(samples) == 0:
        return {}
    pad_to_length = pad_to_length or {}

    def pad(key: str, values: Sequence[torch.Tensor], left: bool) -> torch.Tensor:
        return data_utils.collate_tokens(list(values), pad_idx=pad_idx, left_pad=left,
                                         pad_to_length=pad_to_length.get(key),
                                         pad_to_multiple=pad_to_multiple)

    ids = torch.tensor([s["id"] for s in samples], dtype=torch.long)
    sources = [s["source"] for s in samples]
    src_lengths = torch.tensor([s.numel() for s in sources], dtype=torch.long)
    src_lengths, order = src_lengths.sort(descending=True)
    src_tokens = pad("source", sources, left_pad_source).index_select(0, order)  # (B, S)

    batch: Dict[str, Any] = {
        "id": ids.index_select(0, order),
        "nsentences": len(samples),
        "ntokens": int(src_lengths.sum()),
        "net_input": {"src_tokens": src_tokens, "src_lengths": src_lengths},
        "target": None,
    }
    if samples[0].get("target") is not None:
        targets = [s["target"] for s in samples]
        batch["target"] = pad("target", targets, left_pad_target).index_select(0, order)  # (B, T)
        batch["ntokens"] = int(sum(t.numel() for t in targets))
        if input_feeding:
            shifted = [_shift_eos_to_front(t, eos_idx) for t in targets]
            batch["net_input"]["prev_output_tokens"] = pad(
                "target", shifted, left_pad_target).index_select(0, order)  # (B, T)
    return batch


class LanguagePairDataset(torch.utils.data.Dataset):
    """A source dataset, optionally paired with a target dataset of the same length.

    Args:
        src: indexable of 1-D token tensors.
        src_sizes: the length of each source sequence.
        src_dict: the source vocabulary (its ``pad()`` and ``eos()`` are used).
        tgt, tgt_sizes, tgt_dict: the same for targets (optional).
        left_pad_source, left_pad_target: which side padding goes in a batch.
        shuffle: whether :meth:`ordered_indices` shuffles before sorting by length.
        input_feeding: whether batches carry ``prev_output_tokens``.
    """

    def __init__(self, src: Any, src_sizes: Sequence[int], src_dict: Any, tgt: Any = None,
                 tgt_sizes: Optional[Sequence[int]] = None, tgt_dict: Any = None,
                 left_pad_source: bool = True, left_pad_target: bool = False, shuffle: bool = True,
                 input_feeding: bool = True, pad_to_multiple: int = 1):
        if tgt is not None and len(src) != len(tgt):
            raise ValueError(f"source and target datasets differ in length: {len(src)} vs {len(tgt)}")
        self.src, self.tgt = src, tgt
        self.src_sizes = np.asarray(src_sizes, dtype=np.int64)
        self.tgt_sizes = np.asarray(tgt_sizes, dtype=np.int64) if tgt_sizes is not None else None
        self.sizes = (np.maximum(self.src_sizes, self.tgt_sizes) if self.tgt_sizes is not None
                      else self.src_sizes)
        self.src_dict = src_dict
        self.tgt_dict = tgt_dict if tgt_dict is not None else src_dict
        self.left_pad_source, self.left_pad_target = left_pad_source, left_pad_target
        self.shuffle = shuffle
        self.input_feeding = input_feeding
        self.pad_to_multiple = pad_to_multiple

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return {"id": index, "source": self.src[index],
                "target": self.tgt[index] if self.tgt is not None else None}

    def __len__(self) -> int:
        return len(self.src)

    def collater(self, samples: List[Dict[str, Any]],
                 pad_to_length: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
        return collate(samples, pad_idx=self.src_dict.pad(), eos_idx=self.tgt_dict.eos(),
                       left_pad_source=self.left_pad_source, left_pad_target=self.left_pad_target,
                       input_feeding=self.input_feeding, pad_to_length=pad_to_length,
                       pad_to_multiple=self.pad_to_multiple)

    def num_tokens(self, index: int) -> int:
        return int(self.sizes[index])

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return self.sizes[indices]

    def size(self, index: int) -> tuple:
        return (int(self.src_sizes[index]),
                int(self.tgt_sizes[index]) if self.tgt_sizes is not None else 0)

    def ordered_indices(self) -> np.ndarray:
        """Indices sorted by length (target, then source), shuffled first within equal lengths."""
        indices = (np.random.permutation(len(self)) if self.shuffle
                   else np.arange(len(self), dtype=np.int64))
        if self.tgt_sizes is not None:
            indices = indices[np.argsort(self.tgt_sizes[indices], kind="mergesort")]
        return indices[np.argsort(self.src_sizes[indices], kind="mergesort")]

    @property
    def supports_prefetch(self) -> bool:
        return False

    def set_epoch(self, epoch: int) -> None:
        for dataset in (self.src, self.tgt):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
