"""Dictionary: building, finalizing, encoding and the dict.txt format."""
import io

import pytest
import torch

from fairseq.data import Dictionary
from fairseq.tokenizer import tokenize_line


def build(words):
    dictionary = Dictionary()
    for word in words:
        dictionary.add_symbol(word)
    return dictionary


def test_tokenize_line_collapses_whitespace():
    assert tokenize_line("  the\tcat  sat \n") == ["the", "cat", "sat"]
    assert tokenize_line("\n") == []


def test_special_symbols_have_fixed_ids():
    dictionary = Dictionary()
    assert (dictionary.bos(), dictionary.pad(), dictionary.eos(), dictionary.unk()) == (0, 1, 2, 3)
    assert dictionary[0] == "<s>" and dictionary[3] == "<unk>"
    assert dictionary.nspecial == 4 and len(dictionary) == 4
    assert "<pad>" in dictionary and "cat" not in dictionary


def test_add_symbol_counts_and_index_falls_back_to_unk():
    dictionary = build(["cat", "dog", "cat"])
    assert dictionary.index("cat") == 4
    assert dictionary.count[4] == 2
    assert dictionary.index("zebra") == dictionary.unk()


def test_finalize_sorts_by_count_then_word_and_pads():
    dictionary = build("b a c c b c d".split())
    dictionary.finalize(padding_factor=4)
    # c:3, then b:2, then a and d (1 each) ordered by word.
    assert dictionary.symbols[4:8] == ["c", "b", "a", "d"]
    assert len(dictionary) == 8  # already a multiple of 4


def test_finalize_threshold_nwords_and_padding_symbols():
    dictionary = build("b a c c b c d".split())
    dictionary.finalize(threshold=2, padding_factor=8)
    assert dictionary.symbols[4:6] == ["c", "b"]
    assert dictionary.symbols[6:] == ["madeupword0000", "madeupword0001"]
    assert "a" not in dictionary

    dictionary = build("b a c c b c d".split())
    dictionary.finalize(nwords=5, padding_factor=1)  # nwords counts the 4 specials
    assert dictionary.symbols == ["<s>", "<pad>", "</s>", "<unk>", "c"]


def test_encode_line_and_string_roundtrip():
    dictionary = build("the cat sat".split())
    ids = dictionary.encode_line("the  cat sat on\n", add_if_not_exist=False)
    assert ids.dtype == torch.int32
    assert ids.tolist() == [4, 5, 6, dictionary.unk(), dictionary.eos()]
    assert dictionary.string(ids) == "the cat sat <unk>"
    assert dictionary.encode_line("the cat", append_eos=False, reverse_order=True).tolist() == [5, 4]
    seen = []
    dictionary.encode_line("cat dog", tokenize_line, False, lambda w, i: seen.append((w, i)))
    assert seen == [("cat", 5), ("dog", dictionary.unk())]  # fairseq's positional order: consumer 4th


def test_encode_line_can_grow_the_dictionary():
    dictionary = Dictionary()
    ids = dictionary.encode_line("new words")  # adding is the default, as in fairseq
    assert ids.tolist() == [4, 5, 2]
    assert dictionary.symbols[4:] == ["new", "words"]


def test_string_drops_bos_and_eos_and_handles_bpe_and_batches():
    dictionary = build(["hel@@", "lo", "world"])
    batch = torch.tensor([[0, 4, 5, 6, 2], [6, 2, 3, 2, 2]])
    assert dictionary.string(batch, bpe_symbol="@@ ") == "hello world\nworld <unk>"
    assert dictionary.string(torch.tensor([4, 5]), extra_symbols_to_ignore=[5]) == "hel@@"
    # fairseq keeps pad symbols; eos only when asked; unk can be escaped or replaced
    assert dictionary.string(torch.tensor([6, 1, 2])) == "world <pad>"
    assert dictionary.string(torch.tensor([6, 2]), include_eos=True) == "world </s>"
    assert dictionary.string(torch.tensor([3, 6]), escape_unk=True, separator="|") == "<<unk>>|world"
    assert dictionary.string([3], unk_string="UNK") == "UNK"
    assert dictionary.string(torch.tensor([4, 5]), bpe_symbol="subword_nmt") == "hello"


def test_get_count_update_and_dummy_sentence():
    dictionary = build(["a", "b", "a"])
    assert dictionary.get_count(dictionary.index("a")) == 2
    other = build(["b", "c"])
    dictionary.update(other)
    assert dictionary.get_count(dictionary.index("b")) == 2 and dictionary.get_count(dictionary.index("c")) == 1
    sentence = dictionary.dummy_sentence(6)
    assert sentence.shape == (6,) and int(sentence[-1]) == dictionary.eos()
    assert all(dictionary.nspecial + 1 <= int(t) < len(dictionary) for t in sentence[:-1])
    assert dictionary[-1] == "c" and dictionary[len(dictionary)] == dictionary.unk_word


def test_save_load_roundtrip(tmp_path):
    dictionary = build("x y y z z z".split())
    dictionary.finalize(padding_factor=8)
    path = tmp_path / "dict.txt"
    dictionary.save(str(path))
    assert path.read_text().splitlines()[:3] == ["z 3", "y 2", "x 1"]
    loaded = Dictionary.load(str(path))
    assert loaded.symbols == dictionary.symbols
    assert loaded.count[4:] == dictionary.count[4:]
    assert loaded == dictionary


def test_load_reports_malformed_line_with_file_and_line_number(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text("a 1\nb notanumber\n")
    with pytest.raises(ValueError, match=r"dict\.txt, line 2"):
        Dictionary.load(str(path))
    path.write_text("a 1\nlonelyword\n")
    with pytest.raises(ValueError, match=r"line 2"):
        Dictionary.load(str(path))


def test_load_rejects_duplicates_unless_overwrite_flag():
    from fairseq.data.errors import DataError

    with pytest.raises(RuntimeError, match="Duplicate word found when loading Dictionary: 'a'.*line 2.*overwrite"):
        Dictionary.load(io.StringIO("a 1\na 2\n"))
    with pytest.raises(DataError):  # also reported as a user's data error
        Dictionary.load(io.StringIO("<unk> 5\n"))
    # overwrite gives the symbol a new id (as for Camembert's <unk>, <s>, </s>); the old id stays
    dictionary = Dictionary.load(io.StringIO("a 1\n<unk> 9 #fairseq:overwrite\na 7 #fairseq:overwrite\nb 1\n"))
    assert dictionary.index("<unk>") == 5 and dictionary.index("zzz") == 3
    assert dictionary.index("a") == 6 and dictionary.get_count(6) == 7 and dictionary[4] == "a"
    assert dictionary.index("b") == 7


def test_symbol_may_be_a_space_and_trailing_blanks_are_ignored():
    dictionary = Dictionary.load(io.StringIO("  999\na 5  \n"))
    assert dictionary.index(" ") == 4 and dictionary.index("a") == 5 and dictionary.get_count(5) == 5


def test_load_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Dictionary.load(str(tmp_path / "nope.txt"))


@pytest.mark.parametrize("num_workers", [1, 3])
def test_add_file_to_dictionary_counts_words_and_eos(tmp_path, num_workers):
    path = tmp_path / "corpus.txt"
    path.write_text("a b\nb c c\n\nc\n")
    dictionary = Dictionary()
    Dictionary.add_file_to_dictionary(str(path), dictionary, tokenize_line, num_workers)
    counts = dict(zip(dictionary.symbols, dictionary.count))
    assert counts["a"] == 1 and counts["b"] == 2 and counts["c"] == 3
    assert counts["</s>"] == 1 + 4  # its initial count, plus one per line
    assert dictionary.symbols[4:] == ["a", "b", "c"]  # sorted merge (fairseq's), whatever the workers


def test_add_file_to_dictionary_counts_are_independent_of_workers(tmp_path):
    path = tmp_path / "corpus.txt"
    lines = [" ".join(chr(97 + (i * j) % 26) for j in range(i % 7 + 1)) for i in range(300)]
    path.write_text("\n".join(lines) + "\n")
    results = []
    for workers in (1, 4):
        dictionary = Dictionary()
        Dictionary.add_file_to_dictionary(str(path), dictionary, tokenize_line, workers)
        dictionary.finalize(padding_factor=8)
        results.append((dictionary.symbols, dictionary.count))
    assert results[0] == results[1]
