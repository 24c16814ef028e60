"""A damaged data-bin is refused when it is opened, never scored: each fault below ends the real
command (fairseq-eval-lm, fairseq-train in both doors, fairseq-preprocess) with exit code 2 and
one stderr line naming the file, and a healthy data-bin, fairseq's own included, scores as before.
"""
import os
import shutil
import struct

import numpy as np
import pytest

from conftest import ROOT, TINY_HYDRA, TINY_LEGACY
from conftest import in_process as run  # (exit code, stderr) of a command run in-process

FIXTURE = ROOT / "tests" / "fixtures" / "fairseq_0_12"
CHECKPOINT = str(FIXTURE / "checkpoint_last.pt")


# -- helpers -------------------------------------------------------------------------------------
# the Hydra door runs in-process: its handlers removed after, its run directory in tmp_path
pytestmark = pytest.mark.usefixtures("restore_root_log_handlers", "in_tmp_cwd")


def assert_one_line(code, err, *needles):
    """Exit code 2 and exactly one stderr line, no traceback, holding every needle."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def read_index(prefix):
    """(dtype code, sizes, pointers) of ``prefix.idx`` as writable arrays."""
    raw = open(f"{prefix}.idx", "rb").read()
    _, _, code, count = struct.unpack_from("<9sQBQ", raw)
    sizes = np.frombuffer(raw, dtype="<i4", count=count, offset=26).astype(np.int64)
    pointers = np.frombuffer(raw, dtype="<i8", count=count, offset=26 + 4 * count).copy()
    return code, sizes, pointers


def write_index(prefix, code, sizes, pointers):
    """Write ``prefix.idx`` in fairseq's layout with exactly these entries (no consistency fixed)."""
    with open(f"{prefix}.idx", "wb") as file:
        file.write(struct.pack("<9sQBQ", b"MMIDIDX\x00\x00", 1, code, len(sizes)))
        file.write(np.asarray(sizes, dtype="<i4").tobytes() + np.asarray(pointers, dtype="<i8").tobytes())


def edit_index(prefix, change):
    """Rewrite ``prefix.idx`` after ``change(sizes, pointers)`` edited the arrays in place."""
    code, sizes, pointers = read_index(prefix)
    change(sizes, pointers)
    write_index(prefix, code, sizes, pointers)


def zero_pointers(prefix):
    edit_index(prefix, lambda sizes, pointers: pointers.fill(0))


def negative_pointer(prefix):
    edit_index(prefix, lambda sizes, pointers: pointers.__setitem__(3, -8))


def pointer_past_the_end(prefix):
    edit_index(prefix, lambda sizes, pointers: pointers.__setitem__(len(pointers) - 1, 10**9))


def sizes_disagree(prefix):
    # same total, so only the pointers can tell
    def change(sizes, pointers):
        sizes[2] += 1
        sizes[3] -= 1
    edit_index(prefix, change)


def negative_size(prefix):
    edit_index(prefix, lambda sizes, pointers: sizes.__setitem__(2, -sizes[2]))


def truncated_bin(prefix):
    with open(f"{prefix}.bin", "r+b") as file:
        file.truncate(os.path.getsize(f"{prefix}.bin") - 6)


def truncated_idx(prefix):
    with open(f"{prefix}.idx", "r+b") as file:
        file.truncate(30)


def bad_magic(prefix):
    raw = bytearray(open(f"{prefix}.idx", "rb").read())
    raw[:4] = b"XXXX"
    open(f"{prefix}.idx", "wb").write(bytes(raw))


def bad_dtype_code(prefix):
    raw = bytearray(open(f"{prefix}.idx", "rb").read())
    raw[17] = 99
    open(f"{prefix}.idx", "wb").write(bytes(raw))


def id_beyond_dictionary(prefix):
    tokens = np.fromfile(f"{prefix}.bin", dtype=np.uint16)  # every data-bin here stores uint16
    tokens[5] = 60000
    tokens.tofile(f"{prefix}.bin")


def bin_is_a_directory(prefix):
    os.remove(f"{prefix}.bin")
    os.mkdir(f"{prefix}.bin")


def idx_is_a_directory(prefix):
    os.remove(f"{prefix}.idx")
    os.mkdir(f"{prefix}.idx")


def bin_missing(prefix):
    os.remove(f"{prefix}.bin")


def no_sentence(prefix):
    code, _, _ = read_index(prefix)
    write_index(prefix, code, [], [])
    open(f"{prefix}.bin", "wb").close()


# fault -> what the one line must say besides the file's name, and which file it names
FAULTS = {
    "zeroed pointers": (zero_pointers, "entry 1 points at byte 0 but entry 0 ends at byte", ".idx"),
    "negative pointer": (negative_pointer, "entry 3 points at byte -8", ".idx"),
    "pointer past the end": (pointer_past_the_end, "points at byte 1000000000", ".idx"),
    "sizes disagree with pointers": (sizes_disagree, "entry 3 points at byte", ".idx"),
    "negative size": (negative_size, "entry 2 has a negative size", ".idx"),
    "truncated .bin": (truncated_bin, "bytes", ".bin"),
    "truncated .idx": (truncated_idx, "truncated", ".idx"),
    "bad magic": (bad_magic, "not a fairseq mmap index", ".idx"),
    "bad dtype code": (bad_dtype_code, "dtype code 99", ".idx"),
    "token id >= dictionary size": (id_beyond_dictionary, "token id 60000", ".bin"),
    ".bin is a directory": (bin_is_a_directory, "is a directory, not a file", ".bin"),
    ".idx is a directory": (idx_is_a_directory, "is a directory, not a file", ".idx"),
    ".bin missing, .idx there": (bin_missing, "not found", ".bin"),
    "no sentence": (no_sentence, "has no tokens", ".bin"),
}


def damaged_copy(source, target, split, fault):
    """A copy of the data-bin ``source`` in ``target`` whose ``split`` has ``fault``; its prefix."""
    shutil.copytree(source, target)
    prefix = os.path.join(str(target), split)
    fault(prefix)
    return prefix


# -- eval-lm ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAULTS))
def test_eval_lm_refuses_a_damaged_split(tmp_path, capsys, name):
    from fairseq_cli import eval_lm

    fault, says, suffix = FAULTS[name]
    prefix = damaged_copy(FIXTURE / "data-bin", tmp_path / "data-bin", "test", fault)
    code, err = run(eval_lm.cli_main, [str(tmp_path / "data-bin"), "--path", CHECKPOINT, "--gen-subset", "test",
                                       "--tokens-per-sample", "32", "--num-workers", "0"], capsys)
    assert_one_line(code, err, says, prefix + suffix)


# -- fairseq-train, both doors -------------------------------------------------------------------
TRAIN_FAULTS = [("train", "zeroed pointers"), ("train", "sizes disagree with pointers"),
                ("train", "truncated .bin"), ("train", "token id >= dictionary size"),
                ("train", ".bin is a directory"), ("valid", "no sentence"), ("valid", "pointer past the end")]


@pytest.mark.parametrize("door", ["legacy", "hydra"])
@pytest.mark.parametrize("split, name", TRAIN_FAULTS, ids=[f"{s}: {n}" for s, n in TRAIN_FAULTS])
def test_train_refuses_a_damaged_split(data_bin, tmp_path, capsys, door, split, name):
    from fairseq_cli import train, train_hydra

    fault, says, suffix = FAULTS[name]
    data = tmp_path / "data-bin"
    prefix = damaged_copy(data_bin, data, split, fault)
    save = tmp_path / "ck"
    if door == "legacy":
        code, err = run(train.cli_main, [str(data), *TINY_LEGACY, "--save-dir", str(save)], capsys)
    else:
        code, err = run(train_hydra.cli_main, [f"task.data={data}", f"checkpoint.save_dir={save}", *TINY_HYDRA],
                        capsys)
    assert_one_line(code, err, says, prefix + suffix)
    assert not any(save.glob("*.pt"))  # nothing was trained on it


def test_an_empty_valid_split_says_how_to_leave_it_out(data_bin, tmp_path, capsys):
    from fairseq_cli import train

    data = tmp_path / "data-bin"
    damaged_copy(data_bin, data, "valid", no_sentence)
    code, err = run(train.cli_main, [str(data), *TINY_LEGACY, "--save-dir", str(tmp_path / "ck")], capsys)
    assert_one_line(code, err, "split 'valid'", "--disable-validation")


# -- the check itself ----------------------------------------------------------------------------
def test_the_first_bad_entry_is_named_in_a_large_index(tmp_path):
    """Past the first chunk of the vectorised check, the entry named is still the first bad one."""
    from fairseq.data import indexed_dataset
    from fairseq.errors import DataError

    prefix = str(tmp_path / "big")
    sizes = np.full((1 << 20) + 1000, 3, dtype=np.int64)
    np.zeros(int(sizes.sum()), dtype=np.uint16).tofile(prefix + ".bin")
    indexed_dataset.write_index(prefix + ".idx", np.dtype(np.uint16), sizes)
    assert len(indexed_dataset.MMapIndexedDataset(prefix)) == len(sizes)  # healthy: opens
    edit_index(prefix, lambda s, p: (p.__setitem__(slice((1 << 20) + 7, None), 0),
                                     s.__setitem__((1 << 20) + 500, -1)))
    with pytest.raises(DataError, match=rf"entry {(1 << 20) + 7} points at byte 0 but entry {(1 << 20) + 6} ends"):
        indexed_dataset.MMapIndexedDataset(prefix)


def test_a_legacy_document_index_out_of_range_is_refused(tmp_path):
    from fairseq.data import indexed_dataset
    from fairseq.errors import DataError

    prefix = str(tmp_path / "old")
    sizes = np.array([4, 1, 3], dtype="<i4")
    np.arange(8, dtype=np.uint16).tofile(prefix + ".bin")
    pointers = np.array([0, 8, 10], dtype="<i8")
    for doc_idx, ok in [([0, 3], True), ([0, 2, 1], False), ([0, 7], False)]:
        with open(prefix + ".idx", "wb") as file:
            file.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 3, len(doc_idx)))
            file.write(sizes.tobytes() + pointers.tobytes() + np.asarray(doc_idx, dtype="<i8").tobytes())
        if ok:
            assert len(indexed_dataset.MMapIndexedDataset(prefix)) == 3
        else:
            with pytest.raises(DataError, match=r"old\.idx: document boundary"):
                indexed_dataset.MMapIndexedDataset(prefix)


def test_token_ids_are_scanned_once_per_file_version(tmp_path, monkeypatch):
    """A split loaded again is not scanned again; the same file rewritten later is."""
    from fairseq.data import index_checks, indexed_dataset
    from fairseq.errors import DataError

    prefix = str(tmp_path / "train")
    shutil.copy(FIXTURE / "data-bin" / "train.bin", prefix + ".bin")
    shutil.copy(FIXTURE / "data-bin" / "train.idx", prefix + ".idx")
    scans = []
    real_scan = index_checks.token_range
    monkeypatch.setattr(index_checks, "token_range", lambda tokens: scans.append(1) or real_scan(tokens))
    for _ in range(3):
        indexed_dataset.MMapIndexedDataset(prefix).check_token_ids(1000)
    assert len(scans) == 1
    id_beyond_dictionary(prefix)
    later = os.path.getmtime(prefix + ".bin") + 5
    os.utime(prefix + ".bin", (later, later))
    _, sizes, _ = read_index(prefix)
    assert sizes[0] == 4  # so position 5 of the stream is token 1 of sequence 1
    with pytest.raises(DataError, match=r"train\.bin: sequence 1 \(token 1 of it\) holds token id 60000"):
        indexed_dataset.MMapIndexedDataset(prefix).check_token_ids(1000)


# -- a healthy data-bin --------------------------------------------------------------------------
def test_fairseqs_data_bin_still_scores_fairseqs_loss(tmp_path):
    """fairseq 0.12's data-bin passes every check and gives the loss fairseq gave (README of the fixture)."""
    from fairseq.data import index_checks, indexed_dataset
    from fairseq_cli import eval_lm

    for split in ("train", "valid", "test"):
        index_checks.forget_checks()  # checked here, not remembered from another test
        indexed_dataset.MMapIndexedDataset(str(FIXTURE / "data-bin" / split)).check_token_ids(1000)
    results = eval_lm.main([str(FIXTURE / "data-bin"), "--path", CHECKPOINT, "--tokens-per-sample", "32",
                            "--max-tokens", "1024", "--gen-subset", "test", "--context-window", "0",
                            "--num-workers", "0"])
    assert abs(results["loss"] - 6.3361) < 1e-3
    assert results["ntokens"] == 3626


# -- fairseq-preprocess ------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, content, says", [
    ("--trainpref", "", "is empty"),
    ("--trainpref", " \n\n\t\n", "holds no token"),
    ("--validpref", "", "is empty"),
    ("--validpref", "\n\n", "holds no token"),
    ("--testpref", "", "is empty"),
])
def test_preprocess_refuses_an_empty_input_before_writing(tmp_path, capsys, flag, content, says):
    from fairseq_cli import preprocess

    good = tmp_path / "good.txt"
    good.write_text("a b c\nd e\n")
    empty = tmp_path / "empty.txt"
    empty.write_text(content)
    files = {"--trainpref": good, flag: empty}
    argv = ["--only-source", "--destdir", str(tmp_path / "out")]
    for key, path in files.items():
        argv += [key, str(path)]
    code, err = run(preprocess.cli_main, argv, capsys)
    assert_one_line(code, err, f"{flag} {empty}", says)
    assert not (tmp_path / "out").exists()


def test_preprocess_refuses_an_empty_train_file_among_several(tmp_path, capsys):
    from fairseq_cli import preprocess

    (tmp_path / "a.txt").write_text("a b\n")
    (tmp_path / "b.txt").write_text("")
    code, err = run(preprocess.cli_main, ["--only-source", "--trainpref", f"{tmp_path}/a.txt,{tmp_path}/b.txt",
                                          "--destdir", str(tmp_path / "out")], capsys)
    assert_one_line(code, err, str(tmp_path / "b.txt"))
    assert not (tmp_path / "out").exists()


def test_preprocess_still_accepts_one_word_after_blank_lines(tmp_path):
    from fairseq.data import indexed_dataset
    from fairseq_cli import preprocess

    text = tmp_path / "train.txt"
    text.write_bytes(b"\n" * 70000 + b"word\n")  # the first token lies past the first chunk read
    preprocess.cli_main(["--only-source", "--trainpref", str(text), "--destdir", str(tmp_path / "out")])
    assert len(indexed_dataset.MMapIndexedDataset(str(tmp_path / "out" / "train"))) == 70001


def test_tokens_stored_as_floats_must_be_ids(tmp_path):
    """fairseq's index allows float64 tokens; NaN, inf or a fraction there is no token id."""
    from fairseq.data import indexed_dataset
    from fairseq.errors import DataError

    prefix = str(tmp_path / "floats")
    rows = [([1.0, 2.0, 3.0, 1.0], None), ([1.0, 2.0, float("nan"), 3.0], "nan"),
            ([1.0, 2.5, 3.0, 1.0], "2.5"), ([1.0, 2.0, float("inf"), 1.0], "inf")]
    for number, (values, bad) in enumerate(rows):
        np.asarray(values, dtype=np.float64).tofile(prefix + ".bin")
        indexed_dataset.write_index(prefix + ".idx", np.dtype(np.float64), np.array([2, 2]))
        os.utime(prefix + ".bin", (1e9 + number, 1e9 + number))  # each version its own mtime
        dataset = indexed_dataset.MMapIndexedDataset(prefix)
        if bad is None:
            dataset.check_token_ids(10)
        else:
            with pytest.raises(DataError, match=rf"floats\.bin: sequence \d \(token \d of it\) holds token id {bad}"):
                dataset.check_token_ids(10)
