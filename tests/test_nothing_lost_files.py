"""Nothing lost in files: fairseq-preprocess --overwrite killed, interrupted or fed a bad input
keeps the old data-bin; preprocess.log is appended to; fairseq-hydra-convert -o never replaces a
file unasked; start-up cleanup in a save_dir deletes only a dead writer's temporaries."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, dead_pid, scaled_timeout
from test_nothing_lost import children_of, wait_for

from fairseq_cli import hydra_convert, preprocess

SMALL = "".join(f"the cat {i % 5} sat on the mat\n" for i in range(40))
LINUX = sys.platform.startswith("linux")


@pytest.fixture(scope="module")
def big_text(tmp_path_factory):
    """A text binarization takes a few seconds on: time to kill the run halfway."""
    block = "".join(" ".join(f"w{(i * 7 + j * 13) % 500}" for j in range(12)) + "\n" for i in range(1000))
    path = tmp_path_factory.mktemp("big") / "big.txt"
    path.write_text(block * 100, encoding="utf-8")
    return path


@pytest.fixture
def old_bin(tmp_path):
    """A data-bin (dict.txt, train, valid, test) with a user's file beside it."""
    (tmp_path / "small.txt").write_text(SMALL, encoding="utf-8")
    dest = tmp_path / "bin"
    small = str(tmp_path / "small.txt")
    preprocess.cli_main(["--only-source", "--trainpref", small, "--validpref", small, "--testpref", small,
                         "--destdir", str(dest)])
    (dest / "notes.md").write_text("mine\n")
    return dest


def snapshot(dest):
    """Every file of ``dest`` but the log, with its bytes."""
    return {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file() and p.name != "preprocess.log"}


def scratch(dest):
    return sorted(p.name for p in dest.iterdir() if p.name.startswith(".preprocess-"))


def listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_preprocess(argv):
    """fairseq-preprocess in its own session, with Ctrl-C at its default whatever pytest got."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "fairseq_cli.preprocess"] + argv, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)


def overwrite_with_big(dest, big_text):
    """Rebuild ``dest`` from ``big_text`` with 2 workers; returns once they are binarizing."""
    proc = popen_preprocess(["--only-source", "--srcdict", str(dest / "dict.txt"), "--trainpref", str(big_text),
                             "--validpref", str(big_text), "--destdir", str(dest), "--workers", "2",
                             "--overwrite"])
    tmp = dest / f".preprocess-tmp-{proc.pid}"
    wait_for(lambda: any("worker" in n for n in listdir(tmp)), proc, "the workers' first shard files")
    return proc, tmp


def assert_ended(pids, timeout=10):
    """Each process ends (a zombie nobody reaped counts as ended) within ``timeout`` seconds."""
    from fairseq.save_dir_lock import pid_alive

    deadline = time.time() + scaled_timeout(timeout)
    while [pid for pid in pids if pid_alive(pid)]:
        assert time.time() < deadline, f"workers {[p for p in pids if pid_alive(p)]} live on"
        time.sleep(0.05)


def test_kill_9_mid_run_keeps_the_old_data_bin_and_the_rerun_cleans_up(old_bin, big_text, tmp_path):
    before = snapshot(old_bin)
    proc, tmp = overwrite_with_big(old_bin, big_text)
    workers = children_of(proc.pid) if LINUX else []
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert tmp.is_dir(), "the kill came after the run: this does not test what it should"
    assert snapshot(old_bin) == before
    assert_ended(workers)  # the workers die with the main process: nothing writes in tmp any more

    small = str(tmp_path / "small.txt")
    preprocess.cli_main(["--only-source", "--trainpref", small, "--destdir", str(old_bin), "--overwrite"])
    assert scratch(old_bin) == []
    log = (old_bin / "preprocess.log").read_text()
    assert f"removed {tmp.name} from {old_bin}, left by run {proc.pid}, which was killed" in log
    after = snapshot(old_bin)
    assert set(after) == {"dict.txt", "train.bin", "train.idx", "notes.md"}  # old splits removed
    assert after["dict.txt"] == before["dict.txt"] and after["notes.md"] == b"mine\n"


def test_ctrl_c_ends_with_one_line_130_and_the_old_data_bin(old_bin, big_text):
    before = snapshot(old_bin)
    proc, _ = overwrite_with_big(old_bin, big_text)
    workers = children_of(proc.pid) if LINUX else []
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=scaled_timeout(60))
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"fairseq-preprocess: interrupted (Ctrl-C): --destdir {old_bin} is as it was")
    assert snapshot(old_bin) == before
    assert scratch(old_bin) == []
    assert_ended(workers)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_non_utf8_input_keeps_the_old_data_bin(old_bin, tmp_path, capsys, workers):
    before = snapshot(old_bin)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        preprocess.cli_main(["--only-source", "--trainpref", str(tmp_path / "small.txt"), "--validpref",
                             str(tmp_path / "latin1.txt"), "--destdir", str(old_bin), "--overwrite",
                             "--workers", workers])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "latin1.txt" in err and "UTF-8" in err, err
    assert snapshot(old_bin) == before
    assert scratch(old_bin) == []


def test_a_failure_while_moving_the_new_data_bin_in_rolls_back(old_bin, tmp_path, monkeypatch, capsys):
    before = snapshot(old_bin)
    real_rename, moved_in = os.rename, []

    def rename(src, dst):
        if ".preprocess-tmp-" in str(src):
            moved_in.append(dst)
            if len(moved_in) == 2:
                raise OSError(28, "No space left on device", str(dst))
        return real_rename(src, dst)

    monkeypatch.setattr(preprocess.os, "rename", rename)
    with pytest.raises(SystemExit) as exit_info:
        preprocess.cli_main(["--only-source", "--trainpref", str(tmp_path / "small.txt"),
                             "--destdir", str(old_bin), "--overwrite"])
    assert exit_info.value.code == 2
    assert "the old data-bin is unchanged" in capsys.readouterr().err
    assert snapshot(old_bin) == before and scratch(old_bin) == []


def build_scratch(dest, pid, old_names, moved_all, tmp_names):
    """What a run killed inside its swap leaves: old files aside, new ones not moved in yet."""
    old, tmp = dest / f".preprocess-old-{pid}", dest / f".preprocess-tmp-{pid}"
    old.mkdir()
    for name in old_names:
        (dest / name).rename(old / name)
    if moved_all:
        (old / preprocess.MOVED_MARK).write_bytes(b"")
    if tmp_names is not None:
        tmp.mkdir()
        for name in tmp_names:
            (tmp / name).write_bytes(b"new " + name.encode())


@pytest.mark.parametrize("state", ["moving_old_aside", "moving_new_in", "committed"])
def test_the_next_run_undoes_a_swap_killed_midway(old_bin, state):
    before, pid = snapshot(old_bin), dead_pid()
    data_bin = preprocess.existing_data_bin(str(old_bin))
    if state == "moving_old_aside":  # two old files aside, no new one in
        build_scratch(old_bin, pid, data_bin[:2], False, ["dict.txt", "train.bin", "train.idx"])
    elif state == "moving_new_in":  # all old aside, dict.txt moved in, the splits not yet
        build_scratch(old_bin, pid, data_bin, True, ["train.bin", "train.idx"])
        (old_bin / "dict.txt").write_bytes(b"new dict.txt")
    else:  # every new file in, the old ones not deleted yet
        build_scratch(old_bin, pid, data_bin, True, None)
        (old_bin / "dict.txt").write_bytes(b"new dict.txt")
    lines = preprocess.recover_interrupted(str(old_bin))
    assert scratch(old_bin) == [] and len(lines) == 1
    if state == "committed":
        assert snapshot(old_bin) == {"dict.txt": b"new dict.txt", "notes.md": b"mine\n"}
        assert lines[0].startswith(f"removed .preprocess-old-{pid}")
    else:
        assert snapshot(old_bin) == before
        assert lines[0].startswith(f"put the old data-bin back into {old_bin}: process {pid}")


def test_the_next_run_keeps_what_is_not_a_dead_runs_scratch(old_bin):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (old_bin / f".preprocess-tmp-{sleeper.pid}").mkdir()  # a live run's
        (old_bin / ".preprocess-tmp-notes").mkdir()  # a user's
        (old_bin / f".preprocess-tmp-{dead_pid()}x").mkdir()
        (old_bin / f".preprocess-old-{dead_pid()}").write_text("a file, not ours")
        lines = preprocess.recover_interrupted(str(old_bin))
        assert len(scratch(old_bin)) == 4
        assert lines == [f"kept .preprocess-tmp-{sleeper.pid} in {old_bin}: process {sleeper.pid}, which "
                         "writes it, is running"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_preprocess_log_is_appended_to(old_bin, tmp_path):
    first = (old_bin / "preprocess.log").read_text()
    assert first.count("Namespace(") == 1
    preprocess.cli_main(["--only-source", "--trainpref", str(tmp_path / "small.txt"), "--destdir",
                         str(old_bin), "--overwrite", "--dict-only"])
    second = (old_bin / "preprocess.log").read_text()
    assert second.startswith(first) and second.count("Namespace(") == 2 and "dict_only=True" in second


@pytest.mark.parametrize("destdir", ["a_file", "a_file/sub/bin"])
def test_a_destdir_that_cannot_be_a_directory_is_one_line(tmp_path, capsys, destdir):
    (tmp_path / "small.txt").write_text(SMALL, encoding="utf-8")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        preprocess.cli_main(["--only-source", "--trainpref", str(tmp_path / "small.txt"),
                             "--destdir", str(tmp_path / destdir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--destdir {tmp_path / destdir}" in err, err
    assert (tmp_path / "a_file").read_text() == "x"


LEGACY = ["--", "fairseq-train", "data-bin/demo", "--arch", "transformer_lm", "--optimizer", "adam"]


def convert_exit(argv, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        hydra_convert.cli_main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip()


def test_convert_output_replaces_a_file_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "exp.yaml"
    out.write_text("my experiment\n")
    code, err = convert_exit(["--to", "yaml", "-o", str(out)] + LEGACY, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"-o/--output {out} already exists" in err and "--overwrite" in err
    assert out.read_text() == "my experiment\n"

    hydra_convert.cli_main(["--to", "yaml", "-o", str(out), "--overwrite"] + LEGACY)
    assert "override /model: transformer_lm" in out.read_text()
    assert sorted(os.listdir(tmp_path)) == ["exp.yaml"]
    hydra_convert.cli_main(["--to", "line", "-o", str(tmp_path / "new.txt")] + LEGACY)
    assert (tmp_path / "new.txt").read_text().startswith("fairseq-hydra-train ")


@pytest.mark.parametrize("where", ["missing/dir/x.yaml", "a_file/x.yaml"])
def test_convert_output_that_cannot_be_written_is_one_line(tmp_path, capsys, where):
    (tmp_path / "a_file").write_text("x")
    code, err = convert_exit(["--to", "yaml", "-o", str(tmp_path / where)] + LEGACY, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"-o/--output {tmp_path / where}" in err
    assert not (tmp_path / "missing").exists()


def test_startup_cleanup_deletes_only_a_dead_writers_temporaries(tmp_path):
    from fairseq import checkpoint_utils as cu

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live, dead = sleeper.pid, dead_pid()
    try:
        (tmp_path / ".tmp_checkpoint_notes").write_text("mine")
        (tmp_path / ".old_checkpoint_backup").mkdir()
        (tmp_path / ".old_checkpoint_backup" / "a.pt").write_text("mine")
        (tmp_path / f".tmp_checkpoint_last.pt.{live}.abcd1234").write_bytes(b"being written")
        (tmp_path / f".old_checkpoint_best.pt.{live}.abcd1234").mkdir()  # a live save's
        (tmp_path / f".tmp_checkpoint_last.pt.{dead}.link").symlink_to(tmp_path / ".tmp_checkpoint_notes")
        (tmp_path / f".tmp_checkpoint_last.pt.{dead}.abcd1234").write_bytes(b"partial")
        (tmp_path / f".tmp_checkpoint_1_8.pt.{dead}.q9").mkdir()  # a sharded save's directory
        (tmp_path / f".old_checkpoint_1_4.pt.{dead}.zz").mkdir()  # no DCP files: deleted
        put_back = tmp_path / f".old_checkpoint_1_2.pt.{dead}.zz"
        put_back.mkdir()
        (put_back / ".metadata").write_bytes(b"x")
        cu.remove_partial_writes(str(tmp_path))
        assert sorted(os.listdir(tmp_path)) == sorted([
            ".tmp_checkpoint_notes", ".old_checkpoint_backup", f".tmp_checkpoint_last.pt.{live}.abcd1234",
            f".old_checkpoint_best.pt.{live}.abcd1234", f".tmp_checkpoint_last.pt.{dead}.link",
            "checkpoint_1_2.pt"])
        assert (tmp_path / ".old_checkpoint_backup" / "a.pt").read_text() == "mine"
        assert (tmp_path / "checkpoint_1_2.pt" / ".metadata").read_bytes() == b"x"
    finally:
        sleeper.kill()
        sleeper.wait()
