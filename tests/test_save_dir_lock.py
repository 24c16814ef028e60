"""The save_dir lock belongs to the training process alone: children it forks never hold it, a
dead holder's leftovers are waited for and named, and a second run is still refused."""
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, dead_pid, scaled_timeout
from fairseq import save_dir_lock as lock_module
from fairseq.save_dir_lock import SaveDirBusyError, pid_alive, save_dir_lock


def python(code):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_forked_child_does_not_keep_the_lock_of_a_killed_holder(tmp_path, monkeypatch):
    holder = python(f"""
        import os, time
        from fairseq.save_dir_lock import save_dir_lock
        with save_dir_lock({str(tmp_path)!r}):
            child = os.fork()
            if child == 0:          # a data worker: outlives its parent for a while
                time.sleep(60)
                os._exit(0)
            print(child, flush=True)
            time.sleep(60)
    """)
    try:
        child = int(holder.stdout.readline())
        holder.kill()
        holder.wait()
        assert pid_alive(child), "the forked child should still be running"
        # a lock kept by the child would be waited for ORPHAN_WAIT_S: made long, so that only
        # that wait, never a slow machine, can reach half of it
        monkeypatch.setattr(lock_module, "ORPHAN_WAIT_S", 120.0)
        started = time.monotonic()
        with save_dir_lock(str(tmp_path)) as path:
            took = time.monotonic() - started
            assert open(path).read() == f"pid={os.getpid()} host={socket.gethostname()}\n"
        assert took < 60, f"the lock was taken only after {took:.1f} s: it waited for the child"
    finally:
        holder.kill()
        if "child" in locals():
            os.kill(child, 9)


def test_a_live_holder_is_refused_with_its_pid_and_a_second_lock_in_one_process_too(tmp_path):
    holder = python(f"""
        import time
        from fairseq.save_dir_lock import save_dir_lock
        with save_dir_lock({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SaveDirBusyError) as e:
            with save_dir_lock(str(tmp_path)):
                pass
        assert f"in use by another training run (PID {holder.pid} on host {socket.gethostname()}" in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    other = tmp_path / "other"
    with save_dir_lock(str(other)):
        with pytest.raises(SaveDirBusyError, match=f"another training run in this process \\(PID {os.getpid()}"):
            with save_dir_lock(str(other)):
                pass
        # the refused attempt did not release the lock this process holds
        probe = python(f"""
            from fairseq.save_dir_lock import save_dir_lock, SaveDirBusyError
            try:
                with save_dir_lock({str(other)!r}):
                    print("taken")
            except SaveDirBusyError:
                print("refused")
        """)
        assert probe.communicate(timeout=scaled_timeout(60))[0].strip() == "refused"
    assert not (other / ".lock").exists()


def raw_holder(path, seconds):
    """A process that takes the record lock without writing its own PID into the file."""
    return python(f"""
        import fcntl, os, time
        fd = os.open({str(path)!r}, os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep({seconds})
    """)


def test_a_lock_left_held_after_its_recorded_holder_died_is_waited_for(tmp_path, monkeypatch):
    lock = tmp_path / ".lock"
    lock.write_text(f"pid={dead_pid()} host={socket.gethostname()}\n")
    holder = raw_holder(lock, 1.5)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # the holder lets go after 1.5 s; the orphan wait is made long (120 s) so that a loaded
        # machine cannot be mistaken for a lock waited for to the end
        monkeypatch.setattr(lock_module, "ORPHAN_WAIT_S", 120.0)
        started = time.monotonic()
        with save_dir_lock(str(tmp_path)):
            waited = time.monotonic() - started
        assert 0.5 < waited < 60, waited
    finally:
        holder.kill()
        holder.wait()


def test_a_leftover_that_keeps_the_lock_is_named_after_the_wait(tmp_path, monkeypatch):
    lock = tmp_path / ".lock"
    dead = dead_pid()
    lock.write_text(f"pid={dead} host={socket.gethostname()}\n")
    holder = raw_holder(lock, 60)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(lock_module, "ORPHAN_WAIT_S", 0.5)
        with pytest.raises(SaveDirBusyError) as e:
            with save_dir_lock(str(tmp_path)):
                pass
        message = str(e.value)
        assert f"the run that took it (PID {dead} on host {socket.gethostname()}) exited" in message
        if sys.platform.startswith("linux"):
            assert f"PID {holder.pid} (a process the dead run left behind)" in message
            assert f"kill {holder.pid}" in message
        assert lock.read_text() == f"pid={dead} host={socket.gethostname()}\n", "the file was changed"
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    save_dir = tmp_path / "ck"
    save_dir.mkdir()
    os.symlink(target, save_dir / ".lock")
    with pytest.raises(SaveDirBusyError, match="is a symbolic link"):
        with save_dir_lock(str(save_dir)):
            pass
    assert target.read_text() == "keep me\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pid_alive_counts_a_zombie_as_dead():
    proc = subprocess.Popen(["true"])
    deadline = time.time() + scaled_timeout(10)
    while time.time() < deadline:  # exited, not reaped: a zombie
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    assert not pid_alive(proc.pid)
    assert pid_alive(os.getpid())
    proc.wait()
    assert not pid_alive(proc.pid)
