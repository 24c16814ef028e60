"""Data-parallel training across processes started by ``torchrun``.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and the rendezvous address); both
front doors read them here, so the same command line trains on one process or many:

    torchrun --nproc_per_node 2 -m fairseq_cli.train_hydra task.data=... ...
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \\
        --nproc_per_node 8 -m fairseq_cli.train DATA --arch transformer_lm ...
"""
import logging
import os
from typing import Any, Dict, List

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def init_from_env(cfg: Any) -> bool:
    """Join the process group ``torchrun`` describes; record rank and world size in ``cfg``.

    Returns:
        True when this is a multi-process run.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    dt = cfg.distributed_training
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
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", world_size=world_size, rank=rank)
    dt.distributed_world_size = world_size
    dt.distributed_rank = rank
    dt.device_id = local_rank
    dt.distributed_backend = backend
    logger.info("process %d of %d (local rank %d, backend %s)", rank, world_size, local_rank, backend)
    return True


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_master() -> bool:
    return get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


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


class ModuleProxyDDP(torch.nn.parallel.DistributedDataParallel):
    """DDP whose unknown attributes (``get_targets``, ``max_positions``, ...) reach the model."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)
