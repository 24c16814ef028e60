"""fairseq-preprocess end to end on tiny corpora."""
import logging

import pytest

from fairseq.data import Dictionary, MMapIndexedDataset
from fairseq_cli.preprocess import PreprocessError, cli_main, get_preprocessing_parser, main

TRAIN_TEXT = "".join(f"the cat {i % 7} sat on the mat number {i}\n" for i in range(60)) + "\nrare words here\n"
VALID_TEXT = "the dog sat\nthe cat\n"


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "train.txt").write_text(TRAIN_TEXT, encoding="utf-8")
    (tmp_path / "valid.txt").write_text(VALID_TEXT, encoding="utf-8")
    (tmp_path / "valid2.txt").write_text("cat cat\n", encoding="utf-8")
    return tmp_path


def run(corpus, destdir, *extra):
    args = get_preprocessing_parser().parse_args([
        "--only-source",
        "--trainpref", str(corpus / "train.txt"),
        "--validpref", f"{corpus / 'valid.txt'},{corpus / 'valid2.txt'}",
        "--destdir", str(destdir),
        *extra,
    ])
    main(args)


def test_end_to_end_outputs_and_contents(corpus, caplog):
    destdir = corpus / "bin"
    with caplog.at_level(logging.INFO, logger="fairseq_cli.preprocess"):
        run(corpus, destdir, "--workers", "1")
    for name in ["dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx", "valid1.bin", "valid1.idx",
                 "preprocess.log"]:
        assert (destdir / name).is_file(), name

    dictionary = Dictionary.load(str(destdir / "dict.txt"))
    assert len(dictionary) % 8 == 0
    train = MMapIndexedDataset(str(destdir / "train"))
    assert len(train) == 62
    assert dictionary.string(train[0]) == "the cat 0 sat on the mat number 0"
    assert train[60].tolist() == [dictionary.eos()]  # the empty line
    valid = MMapIndexedDataset(str(destdir / "valid"))
    assert dictionary.string(valid[0]) == "the <unk> sat"
    assert "[valid] dict.txt:" in caplog.text and "valid: 2 sents, 7 tokens, 14.3% replaced by <unk>" in caplog.text
    assert "Namespace(" in (destdir / "preprocess.log").read_text()


def test_workers_give_byte_identical_outputs(corpus):
    run(corpus, corpus / "one", "--workers", "1")
    run(corpus, corpus / "two", "--workers", "2")
    for name in ["dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx", "valid1.bin", "valid1.idx"]:
        assert (corpus / "one" / name).read_bytes() == (corpus / "two" / name).read_bytes(), name
    assert not list((corpus / "two").glob("*worker*")), "temporary shard files must be removed"


def test_threshold_nwords_srcdict_and_dict_only(corpus):
    run(corpus, corpus / "pruned", "--thresholdsrc", "2", "--dict-only")
    pruned = Dictionary.load(str(corpus / "pruned" / "dict.txt"))
    assert "rare" not in pruned and "the" in pruned
    assert not (corpus / "pruned" / "train.bin").exists()

    run(corpus, corpus / "small", "--nwordssrc", "6", "--padding-factor", "1", "--dict-only")
    assert len(Dictionary.load(str(corpus / "small" / "dict.txt"))) == 6

    run(corpus, corpus / "reused", "--srcdict", str(corpus / "pruned" / "dict.txt"))
    assert (corpus / "reused" / "dict.txt").read_bytes() == (corpus / "pruned" / "dict.txt").read_bytes()


def test_source_lang_names_outputs_like_fairseq(corpus):
    (corpus / "train.en").write_text(TRAIN_TEXT, encoding="utf-8")
    main(get_preprocessing_parser().parse_args([
        "--only-source", "-s", "en", "--trainpref", str(corpus / "train"), "--destdir", str(corpus / "lang"),
    ]))
    assert (corpus / "lang" / "dict.en.txt").is_file()
    assert (corpus / "lang" / "train.en-None.en.bin").is_file()


def test_missing_file_is_a_one_line_error_with_exit_code_2(corpus, capsys):
    missing = corpus / "nothere.txt"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--only-source", "--trainpref", str(corpus / "train.txt"), "--validpref", str(missing),
                  "--destdir", str(corpus / "bin")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(missing) in error and "--validpref" in error and "train.txt" in error
    assert "Traceback" not in error
    assert not (corpus / "bin").exists()  # nothing written before inputs are checked


def test_bilingual_is_reported_as_unsupported(corpus):
    with pytest.raises(PreprocessError, match="not supported yet"):
        main(get_preprocessing_parser().parse_args(["-s", "en", "-t", "de", "--trainpref", str(corpus / "x")]))


def test_parser_rejects_abbreviations():
    with pytest.raises(SystemExit):
        get_preprocessing_parser().parse_args(["--dest", "x"])


def test_bad_input_data_is_a_one_line_error(corpus, capsys):
    (corpus / "bad_dict.txt").write_text("the 3\nbroken\n")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--only-source", "--srcdict", str(corpus / "bad_dict.txt"), "--trainpref",
                  str(corpus / "train.txt"), "--destdir", str(corpus / "bin")])
    assert exit_info.value.code == 2
    assert "bad_dict.txt, line 2" in capsys.readouterr().err

    (corpus / "latin1.txt").write_bytes("caf\xe9 ok\n".encode("latin-1"))
    (corpus / "good_dict.txt").write_text("ok 1\n")
    for workers in ["1", "2"]:
        args = get_preprocessing_parser().parse_args([
            "--only-source", "--srcdict", str(corpus / "good_dict.txt"), "--trainpref", str(corpus / "latin1.txt"),
            "--destdir", str(corpus / "enc"), "--workers", workers,
        ])
        with pytest.raises(PreprocessError, match=r"latin1\.txt: the line starting at byte 0 is not valid UTF-8"):
            main(args)
        assert not list((corpus / "enc").glob("*.bin")), "no partial dataset may be left behind"


FAIRSEQ_0_12 = __import__("pathlib").Path(__file__).parent / "fixtures" / "fairseq_0_12"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_outputs_are_byte_identical_to_fairseq_0_12(tmp_path, workers):
    """The command of tests/fixtures/fairseq_0_12/README.md gives fairseq's exact files."""
    text = FAIRSEQ_0_12 / "text"
    cli_main([
        "--only-source", "--trainpref", str(text / "train.txt"), "--validpref", str(text / "valid.txt"),
        "--testpref", str(text / "test.txt"), "--destdir", str(tmp_path), "--nwordssrc", "1000",
        "--workers", workers,
    ])
    for split in ("train", "valid", "test"):
        for suffix in (".bin", ".idx"):
            name = split + suffix
            assert (tmp_path / name).read_bytes() == (FAIRSEQ_0_12 / "data-bin" / name).read_bytes(), name
    assert (tmp_path / "dict.txt").read_bytes() == (FAIRSEQ_0_12 / "data-bin" / "dict.txt").read_bytes()


def test_carriage_returns_end_lines_as_in_fairseq(tmp_path):
    """fairseq reads text files in text mode: \\r, \\r\\n and \\n all end a line."""
    (tmp_path / "train.txt").write_bytes(b"a b\r\nc\rd e\n\nf\r")
    for workers in ("1", "3"):
        destdir = tmp_path / f"bin{workers}"
        cli_main(["--only-source", "--trainpref", str(tmp_path / "train.txt"), "--destdir", str(destdir),
                  "--workers", workers])
        dictionary = Dictionary.load(str(destdir / "dict.txt"))
        train = MMapIndexedDataset(str(destdir / "train"))
        assert [dictionary.string(train[i]) for i in range(len(train))] == ["a b", "c", "d e", "", "f"]


def test_an_existing_data_bin_is_refused_without_overwrite(corpus, capsys):
    destdir = corpus / "bin"
    run(corpus, destdir, "--workers", "1")
    before = {p.name: p.read_bytes() for p in destdir.iterdir()}
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--only-source", "--trainpref", str(corpus / "valid.txt"), "--destdir", str(destdir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"--destdir {destdir} already holds a data-bin (dict.txt, train.bin" in err
    assert "--overwrite" in err and "another --destdir" in err
    assert {p.name: p.read_bytes() for p in destdir.iterdir()} == before  # nothing touched, log included


def test_overwrite_rebuilds_every_split_and_removes_stale_ones(corpus):
    destdir = corpus / "bin"
    (corpus / "test.txt").write_text("the mat\n", encoding="utf-8")
    run(corpus, destdir, "--workers", "1", "--testpref", str(corpus / "test.txt"))
    assert {"valid1.bin", "test.bin", "test.idx"} <= {p.name for p in destdir.iterdir()}
    old = Dictionary.load(str(destdir / "dict.txt"))

    # a new training text gives another dictionary; only train and valid are written this time
    (corpus / "train2.txt").write_text("dog bird dog fish\n" * 5, encoding="utf-8")
    cli_main(["--only-source", "--trainpref", str(corpus / "train2.txt"), "--validpref",
              str(corpus / "valid.txt"), "--destdir", str(destdir), "--overwrite"])
    names = {p.name for p in destdir.iterdir()}
    assert names == {"dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx", "preprocess.log"}
    new = Dictionary.load(str(destdir / "dict.txt"))
    assert new.symbols != old.symbols
    assert new.string(MMapIndexedDataset(str(destdir / "train"))[0]) == "dog bird dog fish"
    assert new.string(MMapIndexedDataset(str(destdir / "valid"))[0]) == "<unk> dog <unk>"


def test_overwrite_with_the_destdirs_own_dictionary(corpus):
    """--srcdict may name the dict.txt being replaced: it is read before anything is deleted."""
    destdir = corpus / "bin"
    run(corpus, destdir, "--workers", "1")
    kept = (destdir / "dict.txt").read_bytes()
    cli_main(["--only-source", "--srcdict", str(destdir / "dict.txt"), "--testpref",
              str(corpus / "valid2.txt"), "--destdir", str(destdir), "--overwrite"])
    assert (destdir / "dict.txt").read_bytes() == kept
    assert {p.name for p in destdir.iterdir()} == {"dict.txt", "test.bin", "test.idx", "preprocess.log"}
