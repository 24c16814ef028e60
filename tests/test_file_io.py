"""fairseq.file_io.PathManager: fairseq's file API on the local file system."""
import os
import stat

import pytest

from fairseq.file_io import PathManager


def test_basic_file_operations(tmp_path):
    d = tmp_path / "a" / "b"
    PathManager.mkdirs(str(d))
    PathManager.mkdirs(str(d))  # existing is fine
    f = d / "x.txt"
    with PathManager.open(str(f), "w", encoding="utf-8") as out:
        out.write("hello")
    assert PathManager.exists(str(f)) and PathManager.isfile(str(f)) and not PathManager.isfile(str(d))
    assert PathManager.ls(str(d)) == ["x.txt"]
    assert PathManager.get_local_path(str(f)) == str(f)
    assert PathManager.copy(str(f), str(d / "y.txt")) is True
    assert PathManager.copy(str(f), str(d / "y.txt")) is False  # exists, no overwrite
    (d / "y.txt").write_text("old")
    assert PathManager.copy(str(f), str(d / "y.txt"), overwrite=True) and (d / "y.txt").read_text() == "hello"
    PathManager.chmod(str(f), 0o600)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert PathManager.supports_rename(str(f)) and not PathManager.path_requires_pathmanager(str(f))
    PathManager.rename(str(f), str(d / "z.txt"))
    PathManager.rm(str(d / "z.txt"))
    assert sorted(PathManager.ls(str(d))) == ["y.txt"]
    with PathManager.open(str(d / "y.txt"), "rb") as inp:
        assert inp.read() == b"hello"


def test_async_writes_land_after_join(tmp_path):
    text, data = tmp_path / "t.txt", tmp_path / "b.bin"
    with PathManager.opena(str(text), "w") as f:
        f.write("line\n")
    with PathManager.opena(str(data), "wb") as f:
        f.write(b"\x00\x01")
    assert PathManager.async_join() is True
    assert text.read_text() == "line\n" and data.read_bytes() == b"\x00\x01"
    with PathManager.opena(str(text), "a") as f:
        f.write("more\n")
    assert PathManager.async_close() is True
    assert text.read_text() == "line\nmore\n"
    assert PathManager.async_close() is False  # nothing pending
    with pytest.raises(ValueError):
        PathManager.opena(str(text), "r")
