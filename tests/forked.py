"""Commands in their own process without paying for the interpreter's start each time.

A test that needs a command's real process (its exit status, what reaches stderr before
anything else, a clean ``sys.modules``) used to start ``python`` for it: about 2.5 s, nearly all
of it importing torch, for commands that then run for a fraction of that. Here one *zygote*
process per test worker imports torch, fairseq and the command modules once, and every command
is a ``fork`` of it: its own process, its own exit status, its own file descriptors 0/1/2,
environment, working directory and ``sys.argv``, started in milliseconds.

The zygote runs no tensor operation before forking (so no thread pool exists to be copied in a
broken state) and imports no plugin or config (so each child starts as a fresh command would).
What a forked child cannot show, a real interpreter start (an import-time check, the installed
script's wrapper, a signal delivered to the process a shell started), stays with
``subprocess``.
"""
import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from types import SimpleNamespace
from typing import Dict, Optional, Sequence

# the zygote's program: read one JSON request per line, fork, run it in the child, answer
# {"pid": ...} at once and {"status": ...} when the child ends
_ZYGOTE = r'''
import importlib, json, os, runpy, sys, traceback
# the interpreter's own path (stdlib, site-packages), without -c's '' and this PYTHONPATH
given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
site_path = [p for p in sys.path[1:] if p not in given]
import torch, fairseq
for name in sys.argv[1:]:
    importlib.import_module(name)
requests, answers = sys.stdin.buffer, sys.stdout.buffer

def child(req):
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    first = {"entry": req["bindir"], "module": os.getcwd(), "code": ""}[req["kind"]]
    sys.path[:] = [first] + [p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p] + site_path
    for fd, path, mode in ((0, req["stdin"], os.O_RDONLY), (1, req["stdout"], os.O_WRONLY | os.O_TRUNC),
                           (2, req["stderr"], os.O_WRONLY | os.O_TRUNC)):
        new = os.open(path, mode)
        os.dup2(new, fd)
        os.close(new)
    sys.stdin = sys.__stdin__ = open(0, "r", encoding="utf-8", closefd=False)  # nothing read ahead
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    kind, target = req["kind"], req["target"]
    sys.argv = [req["argv0"], *req["args"]]
    code = 0
    try:
        if kind == "entry":  # module:function, as a console script calls it
            module, func = target.split(":")
            code = getattr(importlib.import_module(module), func)()
        elif kind == "module":  # python -m MODULE: its code runs afresh as __main__
            sys.modules.pop(target, None)
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:  # python -c CODE
            sys.argv[0] = "-c"
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        _stop_worker_pool()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def _stop_worker_pool():
    """The child ends with ``os._exit``, which runs no atexit handler: the worker processes of
    joblib's loky pool (Hydra's joblib launcher) would idle on for minutes. Stop them here, as
    loky's own atexit handler would."""
    reusable = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(reusable, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)

for line in requests:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(req)
    answers.write((json.dumps({"pid": pid}) + "\n").encode())
    answers.flush()
    _, status = os.waitpid(pid, 0)
    answers.write((json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n").encode())
    answers.flush()
'''

#: the command modules the zygote imports once (what the console scripts and -m runs import)
PRELOADED = ("fairseq_cli.train", "fairseq_cli.train_hydra", "fairseq_cli.eval_lm", "fairseq_cli.validate",
             "fairseq_cli.generate", "fairseq_cli.interactive", "fairseq_cli.preprocess",
             "fairseq_cli.hydra_eval", "fairseq.checkpoint_utils", "fairseq.trainer", "hydra")


class Zygote:
    """The forking process of one test worker; started at the first command, ended at exit."""

    def __init__(self, root: str):
        self.root = root
        self.proc: Optional[subprocess.Popen] = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            env = dict(os.environ, PYTHONPATH=self.root)
            env.pop("OMP_NUM_THREADS", None)  # each child sets its own
            self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE, *PRELOADED], cwd=self.root, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            atexit.register(self.close)
        return self.proc

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def run(self, kind: str, target: str, args: Sequence[str], cwd, env: Dict[str, str],
            stdin: Optional[str] = None, timeout: float = 180, argv0: Optional[str] = None) -> SimpleNamespace:
        """Run one command in a forked child; ``returncode``, ``stdout`` and ``stderr`` as
        ``subprocess.run(..., capture_output=True, text=True)`` gives them (a child ended by a
        signal has ``-signum``). Past ``timeout`` seconds the child is killed and
        ``subprocess.TimeoutExpired`` raised."""
        with self.lock, tempfile.TemporaryDirectory(prefix="forked-") as tmp:
            paths = {name: os.path.join(tmp, name) for name in ("stdin", "stdout", "stderr")}
            for path, text in ((paths["stdin"], stdin or ""), (paths["stdout"], ""), (paths["stderr"], "")):
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
            proc = self._start()
            request = {"kind": kind, "target": target, "args": [str(a) for a in args], "cwd": str(cwd),
                       "env": dict(env), "bindir": os.path.dirname(sys.executable),
                       "argv0": argv0 or target, **paths}
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
            started = proc.stdout.readline()
            if not started:
                raise RuntimeError("the forking test process ended unexpectedly")
            pid = json.loads(started)["pid"]
            answer: Dict[str, int] = {}
            reader = threading.Thread(target=lambda: answer.update(json.loads(proc.stdout.readline() or "{}")))
            reader.start()
            reader.join(timeout)
            if reader.is_alive():
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
                reader.join()
                raise subprocess.TimeoutExpired([target, *map(str, args)], timeout)
            if "status" not in answer:
                raise RuntimeError("the forking test process ended unexpectedly")

            def read(name):
                with open(paths[name], encoding="utf-8", errors="replace") as f:
                    return f.read()

            return SimpleNamespace(returncode=answer["status"], stdout=read("stdout"), stderr=read("stderr"),
                                   args=[target, *args])
