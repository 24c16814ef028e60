"""Data-parallel training across processes (``fairseq.distributed.utils``).

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and the rendezvous address); both
front doors read them here, so the same command line trains on one process or many:

    torchrun --nproc_per_node 2 -m fairseq_cli.train_hydra task.data=... ...
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \\
        --nproc_per_node 8 -m fairseq_cli.train DATA --arch transformer_lm ...

Under ``srun`` without ``torchrun`` (one SLURM task per process) the same variables are derived
from SLURM's (:func:`init_from_env`).

fairseq's own entry points are here too: :func:`call_main` runs ``main(cfg)`` in this process,
joins the group ``torchrun`` describes, or starts one process per rank itself when
``distributed_world_size > 1`` outside ``torchrun``. The collectives (:func:`all_reduce`,
:func:`all_gather_list`, :func:`all_reduce_dict`, :func:`broadcast_object`, ...) also work
in a single process without a process group, where they return their input.
``fairseq.distributed_utils`` is the same module.
"""
import gc
import logging
import os
import pickle
import random
import socket
import warnings
from argparse import Namespace
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn

from fairseq.distributed.slurm import (  # noqa: F401 -- also imported from here
    TORCHRUN_VARS, export_slurm_env, slurm_first_host, slurm_master_port,
)


logger = logging.getLogger(__name__)


# -- config access (a full config, its distributed_training node, or a Namespace) ---------------
def _dt_node(cfg: Any) -> Any:
    """The ``distributed_training`` node of a full config; the argument itself otherwise."""
    # optional: these helpers take a full config, its distributed_training node or a Namespace (fairseq's API)
    node = getattr(cfg, "distributed_training", None)
    return node if node is not None else cfg


def _get(node: Any, key: str, default: Any = None) -> Any:
    try:
        value = getattr(node, key)
    except Exception:  # AttributeError, or omegaconf's own error for an undeclared key
        return default
    return default if value is None else value


def _set(node: Any, key: str, value: Any) -> None:
    """Set ``node.key`` even on a struct-mode DictConfig that does not declare ``key``."""
    from omegaconf import OmegaConf, open_dict

    if OmegaConf.is_config(node):
        with open_dict(node):
            node[key] = value
    else:
        setattr(node, key, value)


def _use_cuda(cfg: Any) -> bool:
    # optional: a distributed_training node or a Namespace has no common node (see _dt_node)
    common = getattr(cfg, "common", None)
    cpu = bool(_get(common, "cpu", False)) if common is not None else bool(_get(cfg, "cpu", False))
    return torch.cuda.is_available() and not cpu


# -- joining a process group --------------------------------------------------------------------
def init_from_env(cfg: Any) -> bool:
    """Join the process group ``torchrun`` (or ``srun``'s tasks) describes; record rank and
    world size in ``cfg``.

    Returns:
        True when this is a multi-process run.
    """
    from_slurm = export_slurm_env()  # srun without torchrun: one SLURM task per process
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    dt = cfg.distributed_training
    if from_slurm and dt.distributed_world_size > 1 and dt.distributed_world_size != world_size:
        raise ValueError(
            f"distributed_training.distributed_world_size={dt.distributed_world_size} but srun started "
            f"{world_size} tasks (SLURM_STEP_NUM_TASKS), one process each; leave it unset, or start "
            "one task per GPU (--ntasks-per-node = GPUs per node), or one task per node running "
            "`torchrun --nproc-per-node GPUS ...`")
    if world_size <= 1:
        if dt.distributed_world_size > 1:
            raise ValueError(
                f"distributed_training.distributed_world_size={dt.distributed_world_size} but this "
                "process was not started by torchrun; launch with "
                f"`torchrun --nproc_per_node {dt.distributed_world_size} -m fairseq_cli.train ...`")
        return False
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    backend = dt.distributed_backend or ("nccl" if use_cuda else "gloo")
    device = local_rank
    if use_cuda:
        visible = torch.cuda.device_count()
        if visible == 1:  # e.g. srun --gpus-per-task=1: each task sees only its own GPU
            device = 0
        elif local_rank >= visible:
            raise ValueError(f"LOCAL_RANK={local_rank} but this process sees {visible} GPUs "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}); "
                             "start at most one process per visible GPU on each node")
        elif from_slurm and int(os.environ.get("LOCAL_WORLD_SIZE", visible)) < visible and local_rank == 0:
            logger.warning("%d GPUs visible but %s SLURM task(s) per node: the others stay idle "
                           "(--ntasks-per-node = GPUs, or srun torchrun --nproc-per-node GPUs)",
                           visible, os.environ.get("LOCAL_WORLD_SIZE"))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", world_size=world_size, rank=rank)
    dt.distributed_world_size = world_size
    dt.distributed_rank = rank
    dt.device_id = device
    dt.distributed_backend = backend
    logger.info("process %d of %d (local rank %d, backend %s)", rank, world_size, local_rank, backend)
    return True


def is_master(cfg: Any = None) -> bool:
    """Whether this is the first process.

    Args:
        cfg: fairseq passes ``cfg.distributed_training`` (its ``distributed_rank`` decides); a full
            config works too. Without it, the rank of the joined process group decides.
    """
    if cfg is None:
        return get_global_rank() == 0
    return int(_get(_dt_node(cfg), "distributed_rank", 0)) == 0


def infer_init_method(cfg: Any, force_distributed: bool = False) -> None:
    """Fill in ``distributed_init_method`` (and rank, world size) from the environment.

    Under ``torchrun`` (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` set) it is
    ``env://`` and the processes already exist (``distributed_no_spawn``). Otherwise, with
    ``distributed_world_size > 1`` (or ``force_distributed``), a free local TCP port is chosen so
    that :func:`call_main` can start the processes itself. One process: nothing changes.

    Args:
        cfg: the ``distributed_training`` node (or a full config).
    """
    dt = _dt_node(cfg)
    if _get(dt, "distributed_init_method") is not None:
        return
    export_slurm_env()
    if all(key in os.environ for key in TORCHRUN_VARS):
        _set(dt, "distributed_init_method", "env://")
        _set(dt, "distributed_world_size", int(os.environ["WORLD_SIZE"]))
        _set(dt, "distributed_rank", int(os.environ["RANK"]))
        if "LOCAL_RANK" in os.environ:
            _set(dt, "device_id", int(os.environ["LOCAL_RANK"]))
        _set(dt, "distributed_no_spawn", True)
    elif int(_get(dt, "distributed_world_size", 1)) > 1 or force_distributed:
        _set(dt, "distributed_init_method", f"tcp://localhost:{_free_port()}")


def _free_port() -> int:
    """A TCP port nobody listens on now (random in fairseq's 10000-20000 range, checked)."""
    for _ in range(50):
        port = random.randint(10000, 20000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("localhost", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port for the process group rendezvous")


def distributed_init(cfg: Any) -> int:
    """Join the process group ``cfg.distributed_training`` describes; return this process's rank.

    A legacy ``Namespace`` is converted to a config first. Joining twice only warns. The
    first process logs at INFO, the others at WARNING.
    """
    if isinstance(cfg, Namespace):
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        cfg = convert_namespace_to_omegaconf(cfg)
    dt = cfg.distributed_training
    if dist.is_available() and dist.is_initialized():
        warnings.warn("Distributed is already initialized, cannot initialize twice!")
    else:
        backend = _get(dt, "distributed_backend") or ("nccl" if _use_cuda(cfg) else "gloo")
        init_method = _get(dt, "distributed_init_method", "env://")
        logger.info("distributed init (rank %s): %s", _get(dt, "distributed_rank", 0), init_method)
        dist.init_process_group(backend=backend, init_method=init_method,
                                world_size=int(_get(dt, "distributed_world_size", 1)),
                                rank=int(_get(dt, "distributed_rank", 0)))
        _set(dt, "distributed_backend", backend)
        logger.info("initialized host %s as rank %d", socket.gethostname(), dist.get_rank())
    _set(dt, "distributed_rank", dist.get_rank())
    logging.getLogger().setLevel(logging.INFO if is_master(dt) else logging.WARNING)
    return int(dt.distributed_rank)


def distributed_main(i: int, main: Callable[..., Any], cfg: Any, kwargs: Dict[str, Any]) -> None:
    """Body of one process: pick the device, join the group, run ``main(cfg, **kwargs)``.

    Args:
        i: the local index of this process (its device).
        kwargs: ``start_rank`` (for processes this module started) and
            ``after_distributed_init_fn`` (``cfg -> cfg``) are consumed here.
    """
    if isinstance(cfg, _ConfigPayload):
        cfg = cfg.restore()
    dt = cfg.distributed_training
    _set(dt, "device_id", i)
    if _use_cuda(cfg):
        torch.cuda.set_device(i)
    spawned = "start_rank" in kwargs
    if spawned:  # started by call_main: describe the group the way torchrun would
        rank = kwargs.pop("start_rank") + i
        _set(dt, "distributed_rank", rank)
        init = str(_get(dt, "distributed_init_method", ""))
        if init.startswith("tcp://"):
            host, port = init[len("tcp://"):].rsplit(":", 1)
            os.environ.update(MASTER_ADDR=host, MASTER_PORT=port)
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(i),
                          WORLD_SIZE=str(_get(dt, "distributed_world_size", 1)))
    distributed_init(cfg)
    after_init = kwargs.pop("after_distributed_init_fn", None)
    if after_init is not None:
        cfg = after_init(cfg)
    main(cfg, **kwargs)
    gc.collect()  # what main built (a DDP reducer holds the group) goes before the group does
    if dist.is_initialized():
        # leave together, then close the group: a process that exits while a peer still tears
        # down its gloo connections can make that peer abort (SIGABRT) under load
        dist.barrier()
        dist.destroy_process_group()


def call_main(cfg: Any, main: Callable[..., Any], **kwargs: Any) -> Any:
    """Run ``main(cfg, **kwargs)`` on every process of the job ``cfg`` describes.

    * one process (no ``torchrun``, ``distributed_world_size == 1``): ``main`` runs here and its
      result is returned;
    * under ``torchrun``: this process joins the group, then runs ``main``;
    * ``distributed_world_size = N > 1`` outside ``torchrun``: N local processes are started
      (one per GPU, or gloo on the CPU), each running ``main`` in its own group rank.
    """
    dt = cfg.distributed_training
    if _get(dt, "distributed_init_method") is None:
        infer_init_method(dt)
    if _get(dt, "distributed_init_method") is None:
        return main(cfg, **kwargs)
    if _get(dt, "distributed_no_spawn", False):
        distributed_main(int(_get(dt, "device_id", 0)), main, cfg, kwargs)
        return None
    world_size = int(_get(dt, "distributed_world_size", 1))
    nprocs = min(torch.cuda.device_count(), world_size) if _use_cuda(cfg) else world_size
    kwargs["start_rank"] = int(_get(dt, "distributed_rank", 0))
    payload = _ConfigPayload(cfg) if _is_omegaconf(cfg) else cfg
    torch.multiprocessing.spawn(fn=distributed_main, args=(main, payload, kwargs), nprocs=nprocs, join=True)
    return None


def _is_omegaconf(cfg: Any) -> bool:
    from omegaconf import OmegaConf

    return OmegaConf.is_config(cfg)


class _ConfigPayload:
    """A DictConfig sent to spawned processes as plain data (its choice enums, created at run
    time, cannot be pickled); restored there as a DictConfig with the same values."""

    def __init__(self, cfg: Any):
        from omegaconf import OmegaConf

        self.data = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)

    def restore(self) -> Any:
        from omegaconf import OmegaConf

        return OmegaConf.create(self.data)


# -- groups, ranks and sizes ---------------------------------------------------------------------
def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def use_xla() -> bool:
    """Always ``False``: TPUs are outside this project's scope."""
    return False


def new_groups(grouped_ranks: List[List[int]]) -> Any:
    """Make one group per list of ranks; return the group this process belongs to."""
    groups = [dist.new_group(ranks) for ranks in grouped_ranks]
    me = get_global_rank()
    for ranks, group in zip(grouped_ranks, groups):
        if me in ranks:
            return group
    raise RuntimeError(f"rank {me} is in none of the groups {grouped_ranks}")


def get_global_group() -> Any:
    """The group of all processes (``None`` without a process group)."""
    return dist.group.WORLD if _initialized() else None


def get_rank(group: Any = None) -> int:
    """This process's rank in ``group`` (default: all processes); 0 without a process group."""
    return dist.get_rank(group=group) if _initialized() else 0


def get_world_size(group: Any = None) -> int:
    """The number of processes in ``group`` (default: all); 1 without a process group."""
    return dist.get_world_size(group=group) if _initialized() else 1


def get_global_rank() -> int:
    return get_rank()


def get_global_world_size() -> int:
    return get_world_size()


def get_data_parallel_group() -> Any:
    """The data-parallel group: every process (there is no model parallelism here)."""
    return get_global_group()


def get_data_parallel_rank() -> int:
    return get_rank(get_data_parallel_group())


def get_data_parallel_world_size() -> int:
    return get_world_size(get_data_parallel_group())


def get_model_parallel_group() -> Any:
    """``None``: models are not split across processes in this project."""
    return None


def get_model_parallel_rank() -> int:
    return 0


def get_model_parallel_world_size() -> int:
    return 1


# -- collectives ---------------------------------------------------------------------------------
_REDUCE_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "product": "PRODUCT"}


def all_reduce(tensor: torch.Tensor, group: Any = None, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over ``group`` (``op``: sum, max, min, product) and return it."""
    if op not in _REDUCE_OPS:
        raise NotImplementedError(f"all_reduce op {op!r}; choose one of {', '.join(_REDUCE_OPS)}")
    if get_world_size(group) > 1:
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]), group=group)
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all processes."""
    return all_reduce(tensor, op="sum")


def broadcast(tensor: torch.Tensor, src: int, group: Any = None) -> None:
    """Copy ``tensor`` of rank ``src`` into ``tensor`` of every process."""
    if get_world_size(group) > 1:
        dist.broadcast(tensor, src=src, group=group)


def all_gather(tensor: torch.Tensor, group: Any = None, return_tensor: bool = False) -> Any:
    """Every process's ``tensor`` (same shape everywhere): a list, or stacked with ``return_tensor``."""
    world_size = get_world_size(group)
    if world_size == 1:
        parts = [tensor]
    else:
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor, group=group)
        parts[get_rank(group)] = tensor
    return torch.stack(parts, dim=0) if return_tensor else parts


def all_gather_list(data: Any, group: Any = None, max_size: int = 16384) -> List[Any]:
    """Every process's ``data`` (any picklable object), in rank order.

    Tensors come back on the CPU. ``max_size`` bounds the pickled size of ``data`` as in
    fairseq (a larger object raises ``ValueError`` on every process alike).
    """
    from fairseq.utils import move_to_cpu

    data = move_to_cpu(data)
    size = len(pickle.dumps(data)) + 4  # fairseq counts a 4-byte length header
    if size > max_size:
        raise ValueError(f"encoded data size ({size}) exceeds max_size ({max_size})")
    world_size = get_world_size(group)
    if world_size == 1:
        return [data]
    gathered: List[Any] = [None] * world_size
    dist.all_gather_object(gathered, data, group=group)
    return gathered


def all_reduce_dict(data: Mapping[str, Any], device: Any = None, group: Any = None) -> Dict[str, torch.Tensor]:
    """Sum every value of a flat dict over the processes, in one collective per device.

    Values (numbers or tensors) come back as float64 tensors, in the order of ``data``; tensors
    keep their shape and device. ``device`` is where the reduction runs (default: CPU, or the
    current GPU under nccl).
    """
    if device is None:
        device = torch.device("cuda") if _initialized() and dist.get_backend(group) == "nccl" else torch.device("cpu")
    device = torch.device(device)
    buckets: Dict[str, "OrderedDict[str, torch.Tensor]"] = {"cpu": OrderedDict(), "device": OrderedDict()}
    for key, value in data.items():
        if not torch.is_tensor(value):
            buckets["cpu"][key] = torch.tensor(value, dtype=torch.double)
        elif value.device.type != device.type:
            buckets["cpu"][key] = value.to(dtype=torch.double)
        else:
            buckets["device"][key] = value.to(dtype=torch.double)
    reduced: Dict[str, torch.Tensor] = {}
    for bucket in buckets.values():
        if not bucket:
            continue
        flat = torch.cat([t.reshape(-1) for t in bucket.values()]).to(device)
        all_reduce(flat, group=group)
        pieces = torch.split(flat, [t.numel() for t in bucket.values()])
        for (key, original), piece in zip(bucket.items(), pieces):
            reduced[key] = piece.view_as(original)
    return OrderedDict((key, reduced[key]) for key in data)


def broadcast_object(obj: Any, src_rank: int, group: Any = None, dist_device: Any = None) -> Any:
    """``obj`` of process ``src_rank`` (a global rank), on every process.

    Tensors inside come back on the devices they had at the source when that device exists
    here; otherwise on the CPU.
    """
    if get_world_size(group) == 1:
        return obj
    del dist_device  # torch picks the transport device from the backend
    holder = [obj if get_global_rank() == src_rank else None]
    dist.broadcast_object_list(holder, src=src_rank, group=group)
    return holder[0]


def broadcast_tensors(tensors: Optional[List[torch.Tensor]], src_rank: int, group: Any = None,
                      dist_device: Any = None) -> List[torch.Tensor]:
    """The list ``tensors`` of process ``src_rank``, on every process (others pass ``None``)."""
    return broadcast_object(tensors, src_rank, group, dist_device)


def sum_logging_outputs(logging_outputs: List[Dict[str, Any]]) -> Dict[str, float]:
    """Sum every numeric key of the logging outputs, over this process and all others."""
    local: Dict[str, float] = {}
    tensors: Dict[str, List[torch.Tensor]] = {}
    for log in logging_outputs:
        for key, value in log.items():
            if torch.is_tensor(value):
                tensors.setdefault(key, []).append(value.detach().float().reshape(()))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                local[key] = local.get(key, 0.0) + float(value)
    if tensors:
        keys = list(tensors)
        sums = torch.stack([torch.stack(tensors[k]).sum() for k in keys]).tolist()  # one sync
        for key, value in zip(keys, sums):
            local[key] = local.get(key, 0.0) + value
    if get_world_size() > 1:
        gathered: List[Dict[str, float]] = [None] * get_world_size()  # type: ignore[list-item]
        dist.all_gather_object(gathered, local)
        merged: Dict[str, float] = {}
        for part in gathered:
            for key, value in part.items():
                merged[key] = merged.get(key, 0.0) + value
        return merged
    return local


# -- wrappers -----------------------------------------------------------------------------------
class ModuleProxyDDP(torch.nn.parallel.DistributedDataParallel):
    """DDP whose unknown attributes (``get_targets``, ``max_positions``, ...) reach the model."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


class ModuleProxyWrapper(nn.Module):
    """Wrap a wrapper (e.g. DDP) of a model: unknown attributes, ``state_dict`` and
    ``load_state_dict`` reach the model inside, so the result behaves like the model.

    Args:
        module: a module that itself wraps another one as ``.module``.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        if not hasattr(module, "module"):
            raise ValueError("ModuleProxyWrapper expects a module that wraps another (.module)")
        self.module = module

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            try:
                return getattr(self.module, name)
            except AttributeError:
                return getattr(self.module.module, name)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.module.load_state_dict(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
