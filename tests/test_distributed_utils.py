"""fairseq.distributed.utils: single-process fallbacks, env inference, and a real 2-process group."""
import os
from argparse import Namespace

import pytest
import torch
from omegaconf import OmegaConf

from fairseq.dataclass.configs import CommonConfig, DistributedTrainingConfig
from fairseq.distributed import utils as dist_utils

_TORCHRUN = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")


def _cfg(world_size: int = 1):
    return OmegaConf.create({"common": OmegaConf.structured(CommonConfig(cpu=True)),
                             "distributed_training": OmegaConf.structured(
                                 DistributedTrainingConfig(distributed_world_size=world_size))})


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for key in _TORCHRUN:
        monkeypatch.delenv(key, raising=False)


def test_old_module_path_is_the_same_module():
    import fairseq.distributed_utils

    assert fairseq.distributed_utils is dist_utils
    from fairseq import distributed_utils

    assert distributed_utils.get_world_size is dist_utils.get_world_size


def test_single_process_collectives_return_their_input(no_torchrun_env):
    assert dist_utils.get_rank() == 0 and dist_utils.get_world_size() == 1
    assert dist_utils.get_data_parallel_world_size() == 1 and dist_utils.get_global_rank() == 0
    assert dist_utils.get_model_parallel_world_size() == 1
    t = torch.tensor([1.0, 2.0])
    assert dist_utils.all_reduce(t, group=None) is t and t.tolist() == [1.0, 2.0]
    assert dist_utils.all_gather_list({"a": torch.ones(1)})[0]["a"].tolist() == [1.0]
    with pytest.raises(ValueError, match="exceeds max_size"):
        dist_utils.all_gather_list("x" * 100, max_size=50)
    reduced = dist_utils.all_reduce_dict({"loss": 2.5, "n": torch.tensor([3, 4])}, device="cpu")
    assert list(reduced) == ["loss", "n"] and reduced["n"].dtype == torch.double
    assert reduced["n"].tolist() == [3.0, 4.0] and reduced["loss"].item() == 2.5
    assert dist_utils.broadcast_object({"k": 1}, src_rank=0) == {"k": 1}
    with pytest.raises(NotImplementedError):
        dist_utils.all_reduce(t, op="mean")


def test_is_master_reads_the_rank_it_is_given():
    assert dist_utils.is_master(DistributedTrainingConfig(distributed_rank=0))
    assert not dist_utils.is_master(Namespace(distributed_rank=3))
    assert not dist_utils.is_master(OmegaConf.create({"distributed_training": {"distributed_rank": 1}}))
    assert dist_utils.is_master()  # no process group: rank 0


def test_infer_init_method_from_torchrun_env(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "29555")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg = _cfg()
    dist_utils.infer_init_method(cfg.distributed_training)
    dt = cfg.distributed_training
    assert dt.distributed_init_method == "env://" and dt.distributed_no_spawn
    assert (dt.distributed_world_size, dt.distributed_rank, dt.device_id) == (4, 2, 0)


def test_infer_init_method_for_local_spawning_and_single_process(no_torchrun_env):
    cfg = _cfg(world_size=2)
    dist_utils.infer_init_method(cfg)
    assert cfg.distributed_training.distributed_init_method.startswith("tcp://localhost:")
    single = _cfg()
    dist_utils.infer_init_method(single)
    assert single.distributed_training.get("distributed_init_method") is None


def test_call_main_runs_in_process_for_one_worker(no_torchrun_env):
    seen = []
    result = dist_utils.call_main(_cfg(), lambda cfg, tag: seen.append(tag) or "ran", tag="x")
    assert seen == ["x"] and result == "ran"


def _gather_ranks(cfg, out_dir):
    """Runs in each spawned process: exercise the collectives, write what they return."""
    rank = dist_utils.get_rank()
    t = torch.tensor([float(rank + 1)])
    dist_utils.all_reduce(t, group=dist_utils.get_global_group())
    gathered = dist_utils.all_gather_list({"rank": rank})
    summed = dist_utils.all_reduce_dict({"x": rank + 1.0}, device="cpu")
    obj = dist_utils.broadcast_object({"from": rank}, src_rank=1)
    line = (f"{rank} {dist_utils.get_world_size()} {t.item()} {[g['rank'] for g in gathered]} "
            f"{summed['x'].item()} {obj['from']} {dist_utils.is_master(cfg.distributed_training)}")
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(line)


def test_call_main_spawns_a_gloo_group_and_collectives_agree(no_torchrun_env, tmp_path):
    cfg = _cfg(world_size=2)
    dist_utils.call_main(cfg, _gather_ranks, out_dir=str(tmp_path))
    lines = sorted((tmp_path / f"rank{r}.txt").read_text() for r in range(2))
    assert lines == ["0 2 3.0 [0, 1] 3.0 1 True", "1 2 3.0 [0, 1] 3.0 1 False"]
