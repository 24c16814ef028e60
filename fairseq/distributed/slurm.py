"""A job step started by ``srun`` without ``torchrun``: the group described from SLURM's
variables, the way ``torchrun`` would describe it (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``)."""
import logging
import os

logger = logging.getLogger("fairseq.distributed.utils")

TORCHRUN_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


def export_slurm_env() -> bool:
    """Under ``srun`` with several tasks and no ``torchrun``, describe the group the way
    ``torchrun`` would, from SLURM's variables (each task is one process of the group).
    Returns whether it did.

    ``RANK`` = ``SLURM_PROCID``, ``WORLD_SIZE`` = ``SLURM_STEP_NUM_TASKS`` (the tasks of this
    ``srun`` step), ``LOCAL_RANK`` = ``SLURM_LOCALID``, ``MASTER_ADDR`` = the step's first node
    (:func:`slurm_first_host`) and ``MASTER_PORT`` = :func:`slurm_master_port`; a
    ``MASTER_ADDR`` or ``MASTER_PORT`` already set is kept. Nothing changes when ``torchrun``'s
    variables are all set (``srun torchrun ...``: ``torchrun`` describes the group), with one
    task, or outside a job step (a batch script's own shell has ``SLURM_PROCID=0`` and the
    job's ``SLURM_NTASKS`` but is one process; only ``srun`` starts the others). Jobs run by
    submitit (``SUBMITIT_EXECUTOR=slurm``) are steps, so ``SLURM_NTASKS`` counts there.
    """
    if all(key in os.environ for key in TORCHRUN_VARS) or "SLURM_PROCID" not in os.environ:
        return False
    ntasks = os.environ.get("SLURM_STEP_NUM_TASKS")
    if ntasks is None and os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        ntasks = os.environ.get("SLURM_NTASKS")
    if ntasks is None or int(ntasks) <= 1:
        return False
    nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST") or "localhost"
    num_nodes = int(os.environ.get("SLURM_STEP_NUM_NODES") or os.environ.get("SLURM_JOB_NUM_NODES") or 1)
    os.environ.update(RANK=os.environ["SLURM_PROCID"], WORLD_SIZE=ntasks,
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"),
                      LOCAL_WORLD_SIZE=str(max(1, int(ntasks) // max(1, num_nodes))))
    os.environ.setdefault("MASTER_ADDR", slurm_first_host(nodes))
    os.environ.setdefault("MASTER_PORT", str(slurm_master_port(os.environ.get("SLURM_JOB_ID", "0"),
                                                               os.environ.get("SLURM_STEP_ID", "0"))))
    logger.info("SLURM task %s of %s: rendezvous at %s:%s", os.environ["RANK"], ntasks,
                os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    return True


def slurm_first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[07-08,11],cpu3`` -> ``gpu07``).

    ``scontrol show hostnames`` decides when it is installed; otherwise the list is read here
    (prefix, first bracketed number or range start with its zero padding, suffix).

    Raises:
        ValueError: for a list that is empty or has an unclosed bracket.
    """
    import shutil
    import subprocess

    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, timeout=60)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    first, depth = "", 0
    for char in nodelist.strip():  # the first comma outside brackets ends the first group
        if char == "," and depth == 0:
            break
        depth += {"[": 1, "]": -1}.get(char, 0)
        first += char
    host = ""
    while "[" in first:
        prefix, rest = first.split("[", 1)
        if "]" not in rest:
            raise ValueError(f"SLURM node list {nodelist!r}: unclosed '['")
        inside, first = rest.split("]", 1)
        host += prefix + inside.split(",")[0].split("-")[0]
    host += first
    if not host:
        raise ValueError(f"SLURM node list {nodelist!r} names no host; set MASTER_ADDR")
    return host


def slurm_master_port(job_id: str, step_id: str = "0") -> int:
    """A port in 20000-59999 that every task of one job step computes alike (from the ids)."""
    import zlib

    return 20000 + zlib.crc32(f"{job_id}.{step_id}".encode()) % 40000
