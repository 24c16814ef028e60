"""Data pipeline: vocabularies, memory-mapped token datasets, blocks, batching, iterators."""
from fairseq.data import data_utils
from fairseq.data.fairseq_dataset import EpochListening, FairseqDataset, FairseqIterableDataset
from fairseq.data.base_wrapper_dataset import BaseWrapperDataset
from fairseq.data.list_dataset import ListDataset
from fairseq.data.dictionary import Dictionary
from fairseq.data import indexed_dataset, iterators
from fairseq.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder
from fairseq.data.iterators import (
    BufferedIterator,
    CountingIterator,
    EpochBatchIterator,
    GroupedIterator,
    ShardedIterator,
)
from fairseq.data.language_pair_dataset import LanguagePairDataset
from fairseq.data.monolingual_dataset import MonolingualDataset
from fairseq.data.token_block_dataset import TokenBlockDataset

__all__ = [
    "BaseWrapperDataset",
    "BufferedIterator",
    "CountingIterator",
    "Dictionary",
    "EpochBatchIterator",
    "EpochListening",
    "FairseqDataset",
    "FairseqIterableDataset",
    "GroupedIterator",
    "LanguagePairDataset",
    "ListDataset",
    "MMapIndexedDataset",
    "MMapIndexedDatasetBuilder",
    "MonolingualDataset",
    "ShardedIterator",
    "TokenBlockDataset",
    "data_utils",
    "indexed_dataset",
    "iterators",
]
