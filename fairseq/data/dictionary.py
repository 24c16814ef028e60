"""A vocabulary mapping symbols to contiguous integer ids, with counts.

The on-disk form (``dict.txt``) holds one ``<symbol> <count>`` line per non-special
symbol, in id order; the four special symbols are implicit and always take ids 0-3.
"""
from __future__ import annotations

import os
from collections import Counter
from multiprocessing import Pool
from typing import IO, Any, Callable, Dict, Iterable, List, Optional, Union

import torch

from fairseq.data import data_utils
from fairseq.errors import DataError
from fairseq.tokenizer import tokenize_line

__all__ = ["Dictionary", "DuplicateSymbolError"]

# Appended to a dict.txt line to replace an existing entry instead of failing on a duplicate.
OVERWRITE_FLAG = "#fairseq:overwrite"
# Filler symbols added by ``finalize`` so the vocabulary size is a multiple of a factor.
PADDING_SYMBOL_TEMPLATE = "madeupword{:04d}"


class DuplicateSymbolError(DataError, RuntimeError):
    """A ``dict.txt`` lists a symbol twice without the ``#fairseq:overwrite`` flag.

    A :class:`DataError` (reported as a one-line user error) and, as in fairseq, a
    ``RuntimeError``.
    """


def _not_utf8(path: str, error: UnicodeDecodeError) -> DataError:
    """The one-line error for a ``dict.txt`` that is not UTF-8: the file, the byte offset and
    line of its first bad byte (``error``'s offset counts from a read chunk, so it is found
    again in the file's bytes)."""
    try:
        with open(path, "rb") as file:
            data = file.read()
        data.decode("utf-8")
        offset, line, byte = error.start, None, None
    except UnicodeDecodeError as e:
        offset, line, byte = e.start, data.count(b"\n", 0, e.start) + 1, data[e.start]
    except OSError:
        offset, line, byte = error.start, None, None
    where = f"byte {offset}" + (f" (line {line}, 0x{byte:02x})" if line is not None else "")
    return DataError(f"{path}: {where} is not UTF-8; a dictionary is read as UTF-8: re-encode the file "
                     "(e.g. iconv -f latin1 -t utf-8) or regenerate it with fairseq-preprocess")


class Dictionary:
    """Maps symbols (words, sub-words, characters) to ids and back.

    Ids are assigned in insertion order. The special symbols are inserted first so that
    ``bos=0, pad=1, eos=2, unk=3``; any ``extra_special_symbols`` follow them.

    Args:
        bos: beginning-of-sentence symbol.
        pad: padding symbol.
        eos: end-of-sentence symbol (appended by :meth:`encode_line`).
        unk: symbol standing for any word not in the vocabulary.
        extra_special_symbols: further symbols that, like the four above, are never
            pruned by :meth:`finalize` and never written by :meth:`save`.
    """

    def __init__(
        self,
        *,
        bos: str = "<s>",
        pad: str = "<pad>",
        eos: str = "</s>",
        unk: str = "<unk>",
        extra_special_symbols: Optional[Iterable[str]] = None,
    ) -> None:
        self.bos_word, self.pad_word, self.eos_word, self.unk_word = bos, pad, eos, unk
        self.symbols: List[str] = []
        self.count: List[int] = []
        self.indices: Dict[str, int] = {}
        self.bos_index = self.add_symbol(bos)
        self.pad_index = self.add_symbol(pad)
        self.eos_index = self.add_symbol(eos)
        self.unk_index = self.add_symbol(unk)
        for symbol in extra_special_symbols or ():
            self.add_symbol(symbol)
        self.nspecial = len(self.symbols)

    # ------------------------------------------------------------------ lookup

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and self.indices == other.indices

    def __getitem__(self, idx: int) -> str:
        """Return the symbol with id ``idx``, or the unk symbol for an id beyond the vocabulary."""
        idx = int(idx)
        if idx < len(self.symbols):
            return self.symbols[idx]
        return self.unk_word

    def get_count(self, idx: int) -> int:
        """How many times the symbol with id ``idx`` was counted."""
        return self.count[idx]

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, sym: str) -> bool:
        return sym in self.indices

    def __repr__(self) -> str:
        return f"Dictionary({len(self)} symbols, {self.nspecial} special)"

    def index(self, sym: str) -> int:
        """Return the id of ``sym``, or :meth:`unk` if it is not in the vocabulary.

        Raises:
            TypeError: if ``sym`` is not a string.
        """
        if not isinstance(sym, str):
            raise TypeError(f"Dictionary.index expects a str symbol, got {type(sym).__name__}: {sym!r}")
        return self.indices.get(sym, self.unk_index)

    def bos(self) -> int:
        """Id of the beginning-of-sentence symbol."""
        return self.bos_index

    def pad(self) -> int:
        """Id of the padding symbol."""
        return self.pad_index

    def eos(self) -> int:
        """Id of the end-of-sentence symbol."""
        return self.eos_index

    def unk(self) -> int:
        """Id of the unknown-word symbol."""
        return self.unk_index

    # ---------------------------------------------------------------- building

    def add_symbol(self, word: str, n: int = 1, overwrite: bool = False) -> int:
        """Add ``word`` with count ``n``, or add ``n`` to its count if already present.

        Args:
            word: the symbol to add.
            n: how many occurrences to count.
            overwrite: give ``word`` a new id even if it is present (fairseq's
                ``#fairseq:overwrite``: the new entry replaces the old one for lookups,
                the old id keeps printing the symbol).

        Returns:
            The id of ``word``.
        """
        existing = self.indices.get(word)
        if existing is not None and not overwrite:
            self.count[existing] += n
            return existing
        new_index = len(self.symbols)
        self.indices[word] = new_index
        self.symbols.append(word)
        self.count.append(n)
        return new_index

    def update(self, other: "Dictionary") -> None:
        """Add every symbol of ``other`` (with its count) to this dictionary."""
        for word in other.symbols:
            self.add_symbol(word, other.count[other.indices[word]])

    def finalize(self, threshold: int = -1, nwords: int = -1, padding_factor: int = 8) -> None:
        """Sort, prune and pad the vocabulary in place; ids of non-special symbols change.

        Non-special symbols are ordered by count (descending), ties broken by the symbol
        itself, so the result does not depend on insertion order.

        Args:
            threshold: drop non-special symbols seen fewer than ``threshold`` times.
            nwords: keep at most ``nwords`` symbols in total, special symbols included
                (as fairseq counts it); ``<= 0`` keeps all.
            padding_factor: append ``madeupword0000``, ``madeupword0001``, ... (count 0)
                until the size is a multiple of this; ``<= 1`` disables padding.
        """
        max_size = len(self) if nwords <= 0 else max(nwords, self.nspecial)
        ranked = sorted(
            zip(self.symbols[self.nspecial :], self.count[self.nspecial :]),
            key=lambda word_count: (-word_count[1], word_count[0]),
        )
        kept = [(word, n) for word, n in ranked if n >= threshold][: max_size - self.nspecial]

        self.symbols = self.symbols[: self.nspecial] + [word for word, _ in kept]
        self.count = self.count[: self.nspecial] + [n for _, n in kept]
        self.indices = {word: i for i, word in enumerate(self.symbols)}
        self.pad_to_multiple_(padding_factor)

    def dummy_sentence(self, length: int) -> torch.Tensor:
        """A random sentence of ``length`` ids of ordinary symbols, ending with eos."""
        sentence = torch.Tensor(length).uniform_(self.nspecial + 1, len(self)).long()
        sentence[-1] = self.eos()
        return sentence

    def pad_to_multiple_(self, padding_factor: int) -> None:
        """Append zero-count filler symbols until ``len(self) % padding_factor == 0``."""
        if padding_factor <= 1:
            return
        filler_number = 0
        while len(self) % padding_factor != 0:
            self.add_symbol(PADDING_SYMBOL_TEMPLATE.format(filler_number), n=0)
            filler_number += 1

    # ------------------------------------------------------------ (de)encoding

    def encode_line(
        self,
        line: str,
        line_tokenizer: Callable[[str], List[str]] = tokenize_line,
        add_if_not_exist: bool = True,
        consumer: Optional[Callable[[str, int], None]] = None,
        append_eos: bool = True,
        reverse_order: bool = False,
    ) -> torch.IntTensor:
        """Turn one line of text into a tensor of ids (fairseq's argument order and defaults).

        Args:
            line: the text to encode.
            line_tokenizer: splits the line into symbols.
            add_if_not_exist: add unseen symbols to the dictionary (the default, as in
                fairseq) instead of mapping them to :meth:`unk`.
            consumer: called as ``consumer(word, id)`` for every symbol; used to count
                words replaced by unk.
            append_eos: end the sequence with :meth:`eos`.
            reverse_order: reverse the symbols (not the eos) before encoding.

        Returns:
            A 1-D ``torch.IntTensor`` of ids, of length ``len(tokens) + append_eos``.
        """
        words = line_tokenizer(line)
        if reverse_order:
            words = list(reversed(words))
        if add_if_not_exist:
            ids = [self.add_symbol(word) for word in words]
        else:
            lookup, unk_index = self.indices.get, self.unk_index  # hot loop: skip method calls
            ids = [lookup(word, unk_index) for word in words]
        if consumer is not None:
            for word, idx in zip(words, ids):
                consumer(word, idx)
        if append_eos:
            ids.append(self.eos_index)
        return torch.tensor(ids, dtype=torch.int32)

    def unk_string(self, escape: bool = False) -> str:
        """The unk symbol, or ``<<unk>>`` with ``escape`` (to tell it from a literal one)."""
        return f"<{self.unk_word}>" if escape else self.unk_word

    def string(
        self,
        tensor: Any,
        bpe_symbol: Optional[str] = None,
        escape_unk: bool = False,
        extra_symbols_to_ignore: Optional[Iterable[int]] = None,
        unk_string: Optional[str] = None,
        include_eos: bool = False,
        separator: str = " ",
    ) -> str:
        """Turn a tensor of ids back into text, dropping bos and eos (fairseq's rules).

        Args:
            tensor: a 1-D tensor (or sequence) of ids, or a 2-D tensor whose rows become lines.
            bpe_symbol: how to undo sub-word splitting (see
                :func:`fairseq.data.data_utils.post_process`), e.g. ``"sentencepiece"``,
                ``"subword_nmt"``; None leaves tokens as they are.
            escape_unk: print unk as ``<<unk>>``.
            extra_symbols_to_ignore: further ids to drop.
            unk_string: print unk as this instead.
            include_eos: keep eos symbols.
            separator: put between symbols.

        Returns:
            The decoded text; for a 2-D tensor, one line per row joined by ``"\\n"``.
        """
        if torch.is_tensor(tensor) and tensor.dim() == 2:
            return "\n".join(
                self.string(row, bpe_symbol, escape_unk, extra_symbols_to_ignore, include_eos=include_eos)
                for row in tensor
            )
        ignored = {int(i) for i in extra_symbols_to_ignore or ()}
        if not include_eos:
            ignored.add(self.eos())
        ignored.add(self.bos())
        ids = tensor.tolist() if torch.is_tensor(tensor) else [int(i) for i in tensor]

        def token_string(idx: int) -> str:
            if idx == self.unk():
                return unk_string if unk_string is not None else self.unk_string(escape_unk)
            return self[idx]

        text = separator.join(token_string(idx) for idx in ids if idx not in ignored)
        return data_utils.post_process(text, bpe_symbol)

    # --------------------------------------------------------------------- I/O

    def save(self, path_or_file: Union[str, os.PathLike, IO[str]]) -> None:
        """Write the non-special symbols as ``<symbol> <count>`` lines, in id order.

        Args:
            path_or_file: a path (parent directories are created) or a text file object.
        """
        if isinstance(path_or_file, (str, os.PathLike)):
            parent = os.path.dirname(os.fspath(path_or_file))
            if parent:
                os.makedirs(parent, exist_ok=True)
            with open(path_or_file, "w", encoding="utf-8") as file:
                self.save(file)
            return
        for word, n in zip(self.symbols[self.nspecial :], self.count[self.nspecial :]):
            path_or_file.write(f"{word} {n}\n")

    @classmethod
    def load(cls, path_or_file: Union[str, os.PathLike, IO[str]]) -> "Dictionary":
        """Read a dictionary written by :meth:`save` (a ``dict.txt``).

        Args:
            path_or_file: a path or a text file object.

        Returns:
            A new dictionary with the default special symbols followed by the file's.

        Raises:
            FileNotFoundError: if the path does not exist.
            ValueError: on a malformed or duplicated line (the message names the file
                and the line number).
        """
        dictionary = cls()
        dictionary.add_from_file(path_or_file)
        return dictionary

    def add_from_file(self, path_or_file: Union[str, os.PathLike, IO[str]]) -> None:
        """Append the symbols of a ``dict.txt`` to this dictionary.

        Each line is ``<symbol> <count>`` optionally followed by ``#fairseq:overwrite``,
        which replaces the count of an already present symbol instead of failing. The
        symbol itself may contain spaces: the count is the last field.

        Raises:
            FileNotFoundError: if the path does not exist.
            ValueError: on a malformed or duplicated line, naming the file and line number.
        """
        if isinstance(path_or_file, (str, os.PathLike)):
            path = os.fspath(path_or_file)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"dictionary file {path} not found; build one with fairseq-preprocess "
                    f"or point --srcdict at an existing dict.txt"
                )
            try:
                with open(path, "r", encoding="utf-8") as file:
                    self.add_from_file(file)
            except UnicodeDecodeError as e:
                raise _not_utf8(path, e) from None
            return

        source_name = getattr(path_or_file, "name", "<dictionary stream>")
        for line_number, raw_line in enumerate(path_or_file, start=1):
            line = raw_line.rstrip()
            if not line:
                continue
            overwrite = False
            if line.endswith(" " + OVERWRITE_FLAG):
                overwrite = True
                line = line[: -len(OVERWRITE_FLAG) - 1]
            word, separator, count_text = line.rpartition(" ")
            if not separator or not word:
                raise DataError(
                    f"{source_name}, line {line_number}: expected '<symbol> <count>', got {raw_line.rstrip()!r}; "
                    f"fix the line or regenerate the dictionary with fairseq-preprocess"
                )
            try:
                count = int(count_text)
            except ValueError:
                raise DataError(
                    f"{source_name}, line {line_number}: count {count_text!r} is not an integer in "
                    f"{raw_line.rstrip()!r}; each line must be '<symbol> <count>'"
                ) from None
            if word in self.indices and not overwrite:
                raise DuplicateSymbolError(
                    f"Duplicate word found when loading Dictionary: {word!r} ({source_name}, line {line_number}); "
                    f"remove the line, or append ' {OVERWRITE_FLAG}' to it to give the word a new id"
                )
            self.add_symbol(word, n=count, overwrite=overwrite)

    # -------------------------------------------------------- corpus counting

    @staticmethod
    def add_file_to_dictionary(
        filename: str,
        dict: "Dictionary",  # noqa: A002 - name fixed by the public fairseq interface
        tokenize: Callable[[str], List[str]],
        num_workers: int,
    ) -> None:
        """Count every token of a text file into ``dict``, one eos per line.

        The file is cut into ``num_workers`` byte ranges at line starts, each counted in
        its own process; the counts are merged in file order, so the resulting dictionary
        (ids included) does not depend on ``num_workers``. Memory holds only the counts.

        Args:
            filename: UTF-8 text file, one sentence per line.
            dict: the dictionary to add the counts to.
            tokenize: splits a line into symbols; must be picklable when
                ``num_workers > 1`` (a module-level function).
            num_workers: number of processes.

        Raises:
            FileNotFoundError: if ``filename`` does not exist.
        """
        from fairseq.file_chunker_utils import find_offsets

        if not os.path.isfile(filename):
            raise FileNotFoundError(f"cannot build a dictionary: text file {filename} not found")
        offsets = find_offsets(filename, max(1, num_workers))
        ranges = [(filename, tokenize, dict.eos_word, start, end) for start, end in zip(offsets[:-1], offsets[1:])]
        if num_workers > 1 and len(ranges) > 1:
            with Pool(processes=min(num_workers, len(ranges))) as pool:
                counters = pool.starmap(_count_words_in_range, ranges)
        else:
            counters = [_count_words_in_range(*args) for args in ranges]
        for counter in counters:
            for word, n in sorted(counter.items()):
                dict.add_symbol(word, n)


def _count_words_in_range(
    filename: str, tokenize: Callable[[str], List[str]], eos_word: str, start: int, end: int
) -> Counter:
    """Count the tokens of the lines starting in bytes ``[start, end)`` plus one eos per line."""
    from fairseq.file_chunker_utils import read_lines_in_range

    counter: Counter = Counter()
    num_lines = 0
    for line in read_lines_in_range(filename, start, end):
        counter.update(tokenize(line))
        num_lines += 1
    if num_lines:
        counter[eos_word] += num_lines
    return counter
