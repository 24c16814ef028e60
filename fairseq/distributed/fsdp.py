"""The mechanics of ``distributed_training.ddp_backend=fully_sharded``: sharding a model with
PyTorch's FSDP2 and moving whole states in and out of it.

Built on ``torch.distributed.fsdp.fully_shard``: every process keeps ``1/world_size`` of each
parameter, gradient and optimizer moment, as DTensor shards along the first dimension.
Parameters are all-gathered per unit just before its forward (and again for its backward);
gradients are reduce-scattered after the unit's backward.

Units: each layer of every ``layers`` module list (the decoder layers of ``transformer_lm``)
is one unit, and the model itself is the root unit that holds the rest -- the token
embedding, positions, final layer norm and the output projection. The tied input/output
embedding (``share_decoder_input_output_embed``) is one parameter of the root unit, so it is
gathered once and both uses see the same tensor.

Users import these names from :mod:`fairseq.distributed.fully_sharded`, which also holds the
sharded-checkpoint functions of :mod:`fairseq.checkpoint.sharded` (a layer above this one,
which imports :func:`state_dict_options` from here).
"""
import logging
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

BACKEND = "fully_sharded"


def is_fully_sharded(cfg: Any) -> bool:
    """Whether ``cfg`` (a full run config) trains with ``ddp_backend=fully_sharded``."""
    return str(cfg.distributed_training.ddp_backend) == BACKEND


def saves_sharded(cfg: Any) -> bool:
    """Whether checkpoints of this run are DCP directories (``fully_sharded`` without
    ``checkpoint.save_consolidated``), whatever the number of processes."""
    return is_fully_sharded(cfg) and not bool(cfg.checkpoint.save_consolidated)


def _dtensor_type() -> Optional[type]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    return DTensor


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a view of its storage); ``t`` itself otherwise."""
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(t, dtensor):
        return t._local_tensor
    return t


def replicated_value(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (replicated or partial) DTensor, e.g. a global gradient norm."""
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(t, dtensor):
        return t.full_tensor()
    return t


def local_parameter_bytes(model: nn.Module) -> int:
    """Bytes of parameters this process holds: the local shards (numel * element size) of a
    sharded model, every parameter of an unsharded one; tied parameters count once."""
    return sum(local_tensor(p.data).numel() * p.element_size() for p in model.parameters())


def _units(model: nn.Module) -> List[nn.Module]:
    """The modules that become their own FSDP unit: every entry of a ``layers`` ModuleList."""
    units: List[nn.Module] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] == "layers":
            units.extend(module)
    return units


def shard_model(model: nn.Module, device: torch.device, param_dtype: Optional[torch.dtype] = None,
                world_size: Optional[int] = None) -> nn.Module:
    """Shard ``model`` in place over all processes with FSDP2 and return it.

    Args:
        model: the model, already on ``device``; its class gains FSDP2's methods
            (``set_requires_gradient_sync``, ...), its attributes stay.
        device: the device type decides the mesh (``cpu`` with gloo, ``cuda`` with nccl).
        param_dtype: compute dtype of the gathered parameters (``torch.bfloat16`` with
            ``common.bf16``); gradients are still reduced and kept in float32.
        world_size: processes to shard over (default: the whole process group).

    Returns:
        ``model``, now holding DTensor shards.

    Raises:
        RuntimeError: no process group has been joined.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("distributed_training.ddp_backend=fully_sharded shards over a process "
                           "group, and none is joined; launch with torchrun --nproc_per_node N")
    world_size = world_size or dist.get_world_size()
    mesh = init_device_mesh(device.type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) \
        if param_dtype is not None else MixedPrecisionPolicy()
    units = _units(model)
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    logger.info("fully sharded over %d processes: %d layer units + the root (embeddings, output "
                "projection, final norm)%s", world_size, len(units),
                f", parameters gathered as {param_dtype}" if param_dtype is not None else "")
    return model


# -- state dicts --------------------------------------------------------------------------------
def state_dict_options(full: bool) -> Any:
    """The ``StateDictOptions`` of torch's state-dict functions for a sharded model.

    Args:
        full: gather whole tensors onto the CPU (an unsharded state: :func:`full_state`,
            consolidation); otherwise each process's shards as DTensors, where they are (what
            a DCP directory stores).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=full, cpu_offload=full)


def parameter_names(model: nn.Module) -> List[str]:
    """The names of ``model.parameters()``, in that order (tied parameters once)."""
    return [name for name, _ in model.named_parameters()]


def _to_index_keyed(fqn_state: Dict[str, Any]) -> Dict[str, Any]:
    """An optimizer state keyed by parameter names -> ``torch.optim``'s layout (by index)."""
    order: List[str] = [name for group in fqn_state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(order)}
    groups = [dict(group, params=[index[n] for n in group["params"]]) for group in fqn_state["param_groups"]]
    return {"state": {index[n]: v for n, v in fqn_state["state"].items()}, "param_groups": groups}


def _to_name_keyed(state: Dict[str, Any], names: List[str]) -> Dict[str, Any]:
    """``torch.optim``'s layout (by index) -> keyed by parameter names (``names`` in order)."""
    count = sum(len(group["params"]) for group in state["param_groups"])
    if count != len(names):
        raise ValueError(f"the optimizer state covers {count} parameters and the model has "
                         f"{len(names)}; it was saved for another model")
    groups = [dict(group, params=[names[int(i)] for i in group["params"]]) for group in state["param_groups"]]
    return {"state": {names[int(i)]: v for i, v in state["state"].items()}, "param_groups": groups}


def full_state(model: nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> Dict[str, Any]:
    """The whole model and optimizer state, gathered onto the CPU of the first process.

    A collective: every process calls it. Returns ``{"model", "optimizer"}`` on the first
    process, in the layouts of an unsharded run (``state_dict()`` keys; the optimizer keyed by
    parameter index), and ``{}`` on the others.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    model_state = get_model_state_dict(model, options=state_dict_options(True))
    optim_state = get_optimizer_state_dict(model, optimizer, options=state_dict_options(True)) \
        if optimizer is not None else None
    if dist.is_initialized() and dist.get_rank() != 0:
        return {}
    out: Dict[str, Any] = {"model": model_state}
    if optim_state is not None:
        out["optimizer"] = _to_index_keyed(optim_state)
    return out


def load_full_model(model: nn.Module, model_state: Dict[str, Any]) -> None:
    """Load an unsharded model state (every process passes the whole of it) into a sharded
    model; each process keeps its shards.

    Raises:
        RuntimeError: the state does not fit (missing or unexpected keys, other sizes).
    """
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    result = set_model_state_dict(model, model_state, options=state_dict_options(True))
    missing = list(getattr(result, "missing_keys", []) or [])
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if missing or unexpected:
        raise RuntimeError(f"Error(s) in loading state_dict:\n  Missing key(s): {missing[:5]}\n"
                           f"  Unexpected key(s): {unexpected[:5]}")


def load_full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, optim_state: Dict[str, Any]) -> None:
    """Load an unsharded optimizer state in ``torch.optim``'s layout (by parameter index, as
    :func:`full_state` and unsharded runs save it) into the optimizer of a sharded model."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, _to_name_keyed(optim_state, parameter_names(model)),
                             options=state_dict_options(True))



__all__ = ["BACKEND", "full_state", "is_fully_sharded", "load_full_model", "load_full_optimizer",
           "local_parameter_bytes", "local_tensor", "parameter_names", "replicated_value", "saves_sharded",
           "shard_model", "state_dict_options"]
