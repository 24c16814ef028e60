"""Nothing lost: one run per save_dir, kills between two checkpoint writes, Ctrl-C, file modes
and hard-linked checkpoint names."""
import errno
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, scaled_timeout
from test_faults import TINY, losses_by_update, run_script, train_code

ARGS = TINY + ["--max-update", "12", "--save-interval-updates", "4"]
SLOW_STEPS = """
    import time
    import fairseq.trainer as t
    real_step = t.Trainer.train_step
    def step(self, samples):
        time.sleep(0.15)
        return real_step(self, samples)
    t.Trainer.train_step = step
"""


def updates_of(path):
    return torch.load(path, weights_only=True)["num_updates"]


def popen_train(argv, cwd, prelude=""):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", train_code(argv, prelude)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, what, timeout=120):
    deadline = time.time() + scaled_timeout(timeout)
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def logged_update(log, n):
    return lambda: os.path.exists(log) and f'"num_updates": "{n}"' in open(log).read()


@pytest.fixture(scope="module")
def reference(data_bin, tmp_path_factory):
    """An uninterrupted run: its save_dir and its loss at every update."""
    tmp = tmp_path_factory.mktemp("reference")
    log = str(tmp / "log")
    result = run_script(train_code([data_bin] + ARGS + ["--save-dir", str(tmp / "ck"), "--log-file", log]), tmp)
    assert result.returncode == 0, result.stderr
    losses = losses_by_update(log)
    assert sorted(losses) == list(range(1, 13))
    return tmp / "ck", losses


def test_checkpoint_files_take_the_umask_mode_and_share_one_inode(reference):
    save_dir, _ = reference
    assert not (save_dir / ".lock").exists(), "a run that ends normally removes its lock file"
    mask = os.umask(0o022)
    os.umask(mask)
    for name in os.listdir(save_dir):
        assert (save_dir / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    # the last save wrote checkpoint_last.pt once; its interval name is a hard link to it
    last, interval = (save_dir / "checkpoint_last.pt").stat(), (save_dir / "checkpoint_1_12.pt").stat()
    assert last.st_ino == interval.st_ino and last.st_nlink >= 2


def test_atomic_link_names_stay_independent_and_copy_where_links_fail(tmp_path, monkeypatch):
    from fairseq import checkpoint_utils as cu

    old_mask = os.umask(0o027)
    try:
        last, best, other = (str(tmp_path / n) for n in ("checkpoint_last.pt", "checkpoint_best.pt", "o.pt"))
        cu.atomic_save({"model": {"w": torch.zeros(3)}, "num_updates": 1}, last)
        assert os.stat(last).st_mode & 0o777 == 0o640
        assert cu.atomic_link(last, best) == "link"
        assert os.stat(best).st_ino == os.stat(last).st_ino
        best_bytes = open(best, "rb").read()
        cu.atomic_save({"model": {"w": torch.ones(3)}, "num_updates": 2}, last)  # a later save of last
        assert open(best, "rb").read() == best_bytes and updates_of(best) == 1 and updates_of(last) == 2
        assert os.stat(best).st_nlink == 1

        def no_links(src, dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(cu.os, "link", no_links)
        assert cu.atomic_link(last, other) == "copy"
        assert open(other, "rb").read() == open(last, "rb").read()
        assert os.stat(other).st_ino != os.stat(last).st_ino and os.stat(other).st_mode & 0o777 == 0o640
        assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]
    finally:
        os.umask(old_mask)


def test_startup_cleanup_keeps_the_temporary_files_of_a_live_writer(tmp_path):
    from fairseq import checkpoint_utils as cu

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
        live_tmp = tmp_path / f".tmp_checkpoint_last.pt.{sleeper.pid}.abc123"
        dead_tmp = tmp_path / f".tmp_checkpoint_last.pt.{dead}.xyz789"
        # no writer of this package names a temporary without its PID: such a file is the user's
        no_pid = tmp_path / ".tmp_checkpoint_best.ptq1w2e3"
        for path in (live_tmp, dead_tmp, no_pid):
            path.write_bytes(b"partial")
        cu.remove_partial_writes(str(tmp_path))
        assert sorted(os.listdir(tmp_path)) == sorted([live_tmp.name, no_pid.name])
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_a_second_run_into_the_same_save_dir_stops_at_once(data_bin, tmp_path):
    save_dir, go_on = tmp_path / "ck", tmp_path / "second_run_done"
    # the first run waits at update 2 until the second one has ended
    wait_at_2 = f"""
        import os, time
        import fairseq.trainer as t
        real_step = t.Trainer.train_step
        def step(self, samples):
            out = real_step(self, samples)
            deadline = time.time() + 120
            while self.get_num_updates() == 2 and not os.path.exists({str(go_on)!r}) and time.time() < deadline:
                time.sleep(0.05)
            return out
        t.Trainer.train_step = step
    """
    log = str(tmp_path / "first.log")
    command = [data_bin] + ARGS + ["--save-dir", str(save_dir)]
    first = popen_train(command + ["--log-file", log], tmp_path, wait_at_2)
    try:
        wait_for(logged_update(log, 1), first, "update 1 of the first run")
        started = time.time()
        second = run_script(train_code(command), tmp_path)
        elapsed = time.time() - started
    finally:
        go_on.write_text("")
    assert first.wait(timeout=scaled_timeout(180)) == 0, first.stderr.read()
    assert second.returncode == 2
    err = second.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"checkpoint.save_dir {save_dir} is in use by another training run (PID {first.pid} on host " in err
    assert "another save_dir" in err
    print(f"the second run stopped after {elapsed:.1f} s (interpreter start included)")
    # the first run's checkpoints are whole and its own
    assert updates_of(save_dir / "checkpoint_last.pt") == 12
    for n in (4, 8, 12):
        assert updates_of(save_dir / f"checkpoint_1_{n}.pt") == n
    assert not (save_dir / ".lock").exists()


@pytest.mark.slow
def test_kill_between_the_writes_of_one_save_resumes_from_the_newest(data_bin, tmp_path, reference):
    """SIGKILL right after the first file of the update-8 save is complete: checkpoint_last.pt is
    never older than another complete checkpoint, and the lock the dead run leaves blocks nothing."""
    save_dir, log = tmp_path / "ck", str(tmp_path / "log")
    command = [data_bin] + ARGS + ["--save-dir", str(save_dir), "--log-file", log]
    kill_after_first_file = """
        import os, signal
        import fairseq.trainer as t
        real_step, real_replace, at = t.Trainer.train_step, os.replace, []
        def step(self, samples):
            out = real_step(self, samples)
            at[:] = [self.get_num_updates()]
            return out
        def replace(src, dst, *a, **k):
            real_replace(src, dst, *a, **k)
            if at == [8] and str(dst).endswith(".pt"):
                os.kill(os.getpid(), signal.SIGKILL)
        t.Trainer.train_step = step
        os.replace = replace
    """
    result = run_script(train_code(command, kill_after_first_file), tmp_path)
    assert result.returncode == -signal.SIGKILL, result.stderr
    written = {n: updates_of(save_dir / n) for n in os.listdir(save_dir) if n.endswith(".pt")}
    assert written["checkpoint_last.pt"] == max(written.values()) == 8, written
    assert "checkpoint_1_8.pt" not in written  # the kill came before this name
    lock = (save_dir / ".lock").read_text()
    assert re.fullmatch(r"pid=\d+ host=\S+\n", lock), lock  # left by the killed run, unlocked

    result = run_script(train_code(command), tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"loaded checkpoint \S*checkpoint_last\.pt \(epoch 1 @ 8 updates\)", open(log).read())
    assert "completed the save that was interrupted: checkpoint_1_8.pt" in open(log).read()
    assert losses_by_update(log) == reference[1]
    assert updates_of(save_dir / "checkpoint_last.pt") == 12 and updates_of(save_dir / "checkpoint_1_8.pt") == 8


def interrupt_after_first_update(command, tmp_path, log, signum=signal.SIGINT):
    proc = popen_train(command, tmp_path, SLOW_STEPS)
    try:
        wait_for(logged_update(log, 1), proc, "update 1")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=scaled_timeout(120))
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err.strip()


def test_ctrl_c_stops_with_one_line_and_nothing_written(data_bin, tmp_path):
    save_dir, log = tmp_path / "ck", str(tmp_path / "log")
    code, err = interrupt_after_first_update(
        [data_bin] + ARGS + ["--save-dir", str(save_dir), "--log-file", log], tmp_path, log)
    assert code == 130
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.fullmatch(r"interrupted \(Ctrl-C\) at update \d+; no checkpoint was written "
                        r"\(checkpoint\.save_on_interrupt=true / --save-on-interrupt saves one on Ctrl-C or SIGTERM\)", err)
    assert not [n for n in os.listdir(save_dir) if n.endswith(".pt") or n.startswith(".")]


@pytest.mark.slow
@pytest.mark.parametrize("signum, name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_save_on_interrupt_saves_the_current_update_and_the_rerun_resumes_exactly(data_bin, tmp_path,
                                                                                  reference, signum, name):
    """Ctrl-C, or the SIGTERM a scheduler sends (scancel, pre-emption): the same stop and save;
    the exit status is 128 + the signal, as a shell reports it."""
    save_dir, log = tmp_path / "ck", str(tmp_path / "log")
    command = [data_bin] + ARGS + ["--save-dir", str(save_dir), "--log-file", log, "--save-on-interrupt"]
    code, err = interrupt_after_first_update(command, tmp_path, log, signum)
    assert code == 128 + signum
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    m = re.fullmatch(rf"interrupted \({name}\) at update (\d+): saved (\S+) first; rerun the same "
                     r"command to resume from it", err)
    assert m and m.group(2) == str(save_dir / "checkpoint_last.pt"), err
    stopped_at = int(m.group(1))
    assert 1 <= stopped_at < 12 and updates_of(save_dir / "checkpoint_last.pt") == stopped_at

    result = run_script(train_code(command), tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"@ {stopped_at} updates)" in open(log).read()
    # mid-epoch position, RNG and optimizer restored: every loss equals the uninterrupted run's
    assert losses_by_update(log) == reference[1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_first_stop_signal_asks_to_stop_and_a_second_one_stops_at_once(signum):
    from fairseq.stop_signals import raise_on_stop_signals
    from fairseq.training import InterruptRequest

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        raise_on_stop_signals()  # as every door does
        handler = signal.getsignal(signum)
        with InterruptRequest(active=True, save=False) as interrupt:
            os.kill(os.getpid(), signum)
            time.sleep(0.01)  # the handler runs at the next bytecode
            assert interrupt.requested and interrupt.signum == signum
            with pytest.raises(KeyboardInterrupt) as stopped:
                os.kill(os.getpid(), signum)
                time.sleep(1)
            assert getattr(stopped.value, "signum", signal.SIGINT) == signum
        assert signal.getsignal(signum) is handler
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    with InterruptRequest(active=False, save=False) as interrupt:  # several processes: at once
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert not interrupt.requested


def children_of(pid):
    """PIDs whose parent is ``pid`` (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def kill_and_rerun_at_once(proc, command, tmp_path):
    """SIGKILL the trainer (its data workers live on for a few seconds) and rerun at once."""
    workers = children_of(proc.pid)
    assert workers, "the trainer runs no data workers"
    proc.kill()
    proc.wait()
    orphans = [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
    assert orphans, "the data workers ended with the trainer: this does not test what it should"
    try:
        return run_script(train_code(command), tmp_path)
    finally:
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def assert_resumed_from_update_4(result, log, reference):
    """The rerun succeeded, resumed from the update-4 checkpoint and logged the uninterrupted losses."""
    assert result.returncode == 0, result.stderr
    assert re.search(r"loaded checkpoint \S*checkpoint_last\.pt \(epoch 1 @ 4 updates\)", open(log).read())
    assert losses_by_update(log) == reference[1]


WORKERS = ["--num-workers", "2"]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the data workers in /proc")
def test_kill_9_with_data_workers_then_an_immediate_rerun_resumes(data_bin, tmp_path, reference):
    """Issue 21: the data workers a killed trainer leaves behind never hold the save_dir lock."""
    save_dir, log = tmp_path / "ck", str(tmp_path / "log")
    command = [data_bin] + ARGS + WORKERS + ["--save-dir", str(save_dir), "--log-file", log]
    proc = popen_train(command, tmp_path, SLOW_STEPS)
    try:
        wait_for(logged_update(log, 6), proc, "update 6")
        result = kill_and_rerun_at_once(proc, command, tmp_path)
    finally:
        proc.kill()
    assert_resumed_from_update_4(result, log, reference)
    assert updates_of(save_dir / "checkpoint_last.pt") == 12
    assert not (save_dir / ".lock").exists()


STALL_SECOND_ASYNC_WRITE = """
    import os, threading, time
    real_replace, calls = os.replace, []
    def replace(src, dst, *a, **k):
        if threading.current_thread().name == "fairseq-checkpoint-writer" and str(dst).endswith("checkpoint_last.pt"):
            calls.append(dst)
            if len(calls) == 2:  # the save at update 8: its bytes are on disk, the rename never comes
                time.sleep(600)
        return real_replace(src, dst, *a, **k)
    os.replace = replace
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the data workers in /proc")
def test_kill_9_with_an_async_checkpoint_write_in_flight_then_an_immediate_rerun_resumes(
        data_bin, tmp_path, reference):
    save_dir, log = tmp_path / "ck", str(tmp_path / "log")
    command = [data_bin] + ARGS + WORKERS + ["--save-async", "--save-dir", str(save_dir), "--log-file", log]
    proc = popen_train(command, tmp_path, STALL_SECOND_ASYNC_WRITE)
    try:
        # training goes on while the update-8 checkpoint is being written
        wait_for(logged_update(log, 10), proc, "update 10")
        temporary = [n for n in os.listdir(save_dir) if n.startswith(f".tmp_checkpoint_last.pt.{proc.pid}.")]
        assert temporary, os.listdir(save_dir)
        assert updates_of(save_dir / "checkpoint_last.pt") == 4
        result = kill_and_rerun_at_once(proc, command, tmp_path)
    finally:
        proc.kill()
    assert_resumed_from_update_4(result, log, reference)
    assert f"removed {temporary[0]}, left by a save that was interrupted" in open(log).read()
    # the rerun's own async writes are complete when it returns
    for n in (4, 8, 12):
        assert updates_of(save_dir / f"checkpoint_1_{n}.pt") == n
    assert updates_of(save_dir / "checkpoint_last.pt") == 12
    assert not [n for n in os.listdir(save_dir) if n.startswith(".tmp")]
