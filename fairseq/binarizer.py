"""Turn text files into memory-mapped token datasets, one byte range at a time.

A file is split into byte ranges that start at line starts (:func:`find_offsets`); each
range can then be processed by its own worker (:func:`binarize_file`) and the per-range
outputs joined in order, which yields exactly the output of a single pass.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict

from fairseq.data.dictionary import Dictionary
from fairseq.file_chunker_utils import find_offsets, read_lines_in_range  # noqa: F401 -- also imported from here
from fairseq.data.indexed_dataset import data_file_path, index_file_path, make_builder
from fairseq.tokenizer import tokenize_line

__all__ = ["binarize_file", "find_offsets", "read_lines_in_range"]


def binarize_file(
    filename: str,
    dictionary: Dictionary,
    out_prefix: str,
    start_offset: int,
    end_offset: int,
    append_eos: bool = True,
    impl: str = "mmap",
) -> Dict[str, Any]:
    """Encode the lines starting in ``[start_offset, end_offset)`` into ``out_prefix.bin/.idx``.

    Every line becomes one sequence (an empty line becomes just eos). Words missing
    from ``dictionary`` become unk. Lines are streamed, so memory stays bounded.

    Args:
        filename: UTF-8 text file.
        dictionary: vocabulary used to encode; also chooses the token dtype.
        out_prefix: output path without extension.
        start_offset: byte offset of a line start.
        end_offset: lines starting at or after this byte are left out.
        append_eos: end each sequence with eos.
        impl: dataset implementation; only ``"mmap"``.

    Returns:
        ``{"nseq": sequences, "ntok": tokens (eos included), "nunk": tokens encoded as
        unk, "replaced": Counter of the words replaced by unk}``.
    """
    replaced: Counter = Counter()
    num_unknown = 0
    unk_index = dictionary.unk()
    builder = make_builder(data_file_path(out_prefix), impl, vocab_size=len(dictionary))
    num_sequences = num_tokens = 0
    try:
        for line in read_lines_in_range(filename, start_offset, end_offset):
            ids = dictionary.encode_line(
                line, line_tokenizer=tokenize_line, add_if_not_exist=False, append_eos=append_eos
            )
            builder.add_item(ids)
            num_sequences += 1
            num_tokens += len(ids)
            if unk_index in ids.tolist():  # rare: look at the words only then
                for word in tokenize_line(line):
                    if dictionary.index(word) == unk_index:
                        num_unknown += 1
                        if word != dictionary.unk_word:
                            replaced[word] += 1
    except BaseException:
        builder.discard()  # never leave a partial dataset that looks complete
        raise
    builder.finalize(index_file_path(out_prefix))
    return {"nseq": num_sequences, "ntok": num_tokens, "nunk": num_unknown, "replaced": replaced}
