"""Data pipeline: vocabularies, memory-mapped token datasets, blocks, batching, iterators."""
from fairseq.data import data_utils, indexed_dataset, iterators
from fairseq.data.dictionary import Dictionary
from fairseq.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder
from fairseq.data.iterators import BufferedIterator, CountingIterator, EpochBatchIterator, GroupedIterator
from fairseq.data.language_pair_dataset import LanguagePairDataset
from fairseq.data.lm_context_window_dataset import LMContextWindowDataset
from fairseq.data.monolingual_dataset import MonolingualDataset
from fairseq.data.token_block_dataset import TokenBlockDataset

__all__ = [
    "BufferedIterator",
    "CountingIterator",
    "Dictionary",
    "EpochBatchIterator",
    "GroupedIterator",
    "LMContextWindowDataset",
    "LanguagePairDataset",
    "MMapIndexedDataset",
    "MMapIndexedDatasetBuilder",
    "MonolingualDataset",
    "TokenBlockDataset",
    "data_utils",
    "indexed_dataset",
    "iterators",
]
