"""How many threads CPU operations use: one number a run chooses once and states in its header.

PyTorch's default is the machine's core count, whatever else runs there and however many of
our own processes share it. On a machine busy with other work, or with several training
processes on one host, that oversubscribes the cores: every thread waits for the others at
each operation's barrier, and the same work can take many times the CPU time.
"""
import os
from typing import Any, Mapping, Tuple

import torch

__all__ = ["available_cpus", "choose_cpu_threads", "given_cpu_threads", "local_processes", "set_cpu_threads"]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; the core count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_cpu_threads(requested: int = 0, local_processes: int = 1) -> Tuple[int, str]:
    """The number of threads and the reason, in the order a user expects: the config's value
    (``common.cpu_threads``), then ``OMP_NUM_THREADS`` (torchrun sets it to 1), then the CPUs
    this process may use divided among the processes of this machine."""
    if requested > 0:
        return requested, "common.cpu_threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cpus = available_cpus()
    processes = max(1, local_processes)
    share = max(1, cpus // processes)
    why = f"{cpus} CPUs available" + (f" / {processes} processes on this machine" if processes > 1 else "")
    return share, why


def local_processes() -> int:
    """How many processes of this run share this machine: torchrun's ``LOCAL_WORLD_SIZE``, else 1."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def given_cpu_threads(overrides: Mapping[str, Any]) -> int:
    """``common.cpu_threads`` as given to an evaluation command (``--cpu-threads`` or
    ``common.cpu_threads=``), 0 when not given. The value a checkpoint's training run recorded is
    never used: it was chosen for that run's machine and load."""
    for key in ("common.cpu_threads", "cpu_threads"):
        if overrides.get(key) is not None:
            return int(overrides[key])
    return 0


def set_cpu_threads(requested: int = 0, local_processes: int = 1) -> str:
    """Set torch's intra-op threads by :func:`choose_cpu_threads`; the line that says so."""
    threads, why = choose_cpu_threads(requested, local_processes)
    torch.set_num_threads(threads)
    return f"{threads} CPU thread{'s' if threads > 1 else ''} ({why})"
