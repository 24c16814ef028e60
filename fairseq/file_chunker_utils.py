"""Splitting a text file into byte ranges that start at line boundaries, and reading the lines
of one range: the unit of work of parallel dictionary building and binarization (fairseq's
``fairseq.file_chunker_utils``)."""
import os
from typing import Iterator, List

__all__ = ["find_offsets", "read_lines_in_range"]


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
