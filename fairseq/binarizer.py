"""Turn text files into memory-mapped token datasets, one byte range at a time.

A file is split into byte ranges that start at line starts (:func:`find_offsets`); each
range can then be processed by its own worker (:func:`binarize_file`) and the per-range
outputs joined in order, which yields exactly the output of a single pass.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Dict, Iterator, List

from fairseq.data.dictionary import Dictionary
from fairseq.data.indexed_dataset import data_file_path, index_file_path, make_builder
from fairseq.tokenizer import tokenize_line

__all__ = ["binarize_file", "find_offsets", "read_lines_in_range"]


def find_offsets(filename: str, num_chunks: int) -> List[int]:
    """Cut a file into ``num_chunks`` byte ranges of about equal size, at line starts.

    Args:
        filename: the file to cut.
        num_chunks: number of ranges wanted (>= 1).

    Returns:
        ``num_chunks + 1`` non-decreasing offsets; range ``k`` is
        ``[offsets[k], offsets[k + 1])``. The first is 0 and the last the file size;
        a range may be empty when the file has fewer lines than chunks.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if ``num_chunks < 1``.
    """
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1 to split {filename}, got {num_chunks}")
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"cannot split {filename}: file not found")
    file_size = os.path.getsize(filename)
    offsets = [0]
    with open(filename, "rb") as file:
        for chunk in range(1, num_chunks):
            target = max(file_size * chunk // num_chunks, offsets[-1])
            if target == 0:
                offsets.append(0)
                continue
            # Reading from one byte before the target finds the first line start >= target.
            file.seek(target - 1)
            file.readline()
            offsets.append(max(file.tell(), offsets[-1]))
    offsets.append(file_size)
    return offsets


def read_lines_in_range(filename: str, start: int, end: int) -> Iterator[str]:
    """Yield the decoded lines of ``filename`` that start in bytes ``[start, end)``.

    ``start`` must be the start of a ``\\n``-terminated line (as returned by
    :func:`find_offsets`). Lines end as in Python's text mode, which fairseq reads with:
    at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (so a ``\\r`` inside a line starts a new
    sentence, as in fairseq). Lines are read one at a time, so memory does not grow with
    the file.

    Raises:
        ValueError: if a line is not valid UTF-8 (the message names the file and the
            byte offset).
    """
    with open(filename, "rb") as file:
        file.seek(start)
        position = start
        while position < end:
            raw_line = file.readline()
            if not raw_line:
                break
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{filename}: the line starting at byte {position} is not valid UTF-8 ({err.reason} at "
                    f"byte {position + err.start}); re-encode the file as UTF-8"
                ) from None
            if "\r" in line:
                # bytes.splitlines splits at \n, \r\n and \r only: text mode's universal newlines
                yield from (piece.decode("utf-8") for piece in raw_line.splitlines())
            else:
                yield line
            position += len(raw_line)


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
