"""ddp_backend=fully_sharded (FSDP2) on the CPU with gloo and torchrun.

Four launches, two at a time, shared by the tests through one module fixture:

* 2 processes, ``pytorch_ddp`` (legacy door): the reference losses;
* 2 processes, ``fully_sharded`` (legacy door), sharded (DCP) checkpoints at updates 4 and 8;
* 1 process resuming the fully sharded run's update-4 directory (2 -> 1 processes, update_freq
  doubled so that the effective batch stays the same);
* 2 processes, ``fully_sharded`` from the Hydra door, bf16, ``checkpoint.save_consolidated=true``.

All use update_freq 2 (gradient accumulation without reduce-scatter until the last batch),
clip_norm 0.5 (every update is clipped here: the global norm of the shards decides), and the tied
input/output embedding.
"""
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, read_json_log, scaled_timeout

# every test here trains or starts several processes
pytestmark = pytest.mark.slow

SIZES = ["--decoder-layers", "2", "--decoder-embed-dim", "32", "--decoder-input-dim", "32",
         "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2"]
ARGS = ["--arch", "transformer_lm", *SIZES, "--share-decoder-input-output-embed", "--dropout", "0",
        "--optimizer", "adam", "--lr", "0.003", "--warmup-updates", "5", "--tokens-per-sample", "32",
        "--max-tokens", "128", "--max-update", "8", "--log-format", "json", "--log-interval", "1",
        "--num-workers", "0", "--save-interval-updates", "4", "--clip-norm", "0.5", "--cpu"]
HYDRA = ["task=language_modeling", "task.tokens_per_sample=32", "model=transformer_lm",
         "model.share_decoder_input_output_embed=true", "model.dropout=0", "model.decoder_layers=2",
         "model.decoder_embed_dim=32", "model.decoder_input_dim=32", "model.decoder_output_dim=32",
         "model.decoder_ffn_embed_dim=64", "model.decoder_attention_heads=2", "optimizer=adam",
         "optimization.lr=[0.003]", "lr_scheduler=fixed", "lr_scheduler.warmup_updates=5",
         "dataset.max_tokens=128", "dataset.num_workers=0", "optimization.update_freq=[2]",
         "optimization.max_update=4", "optimization.clip_norm=0.5", "common.log_format=json",
         "common.log_interval=1", "common.cpu=true", "common.bf16=true",
         "checkpoint.save_interval_updates=4", "checkpoint.save_consolidated=true",
         "distributed_training.ddp_backend=fully_sharded", "distributed_training.distributed_backend=gloo"]
MEMORY = re.compile(r"parameter memory per process \(bytes, ddp_backend=(\w+)\): \[([\d, ]+)\]")


def _start(args, cwd, nproc=2):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone"] \
        if nproc > 1 else [sys.executable]
    return subprocess.Popen([*launcher, "-m", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process):
    try:
        output, _ = process.communicate(timeout=scaled_timeout(300))
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    assert process.returncode == 0, output[-4000:]
    return output


def _losses(log):
    return {r["num_updates"]: r["loss"] for r in read_json_log(log) if "update" in r}


def _memory(output):
    found = MEMORY.search(output)
    assert found, output[-2000:]
    return [int(x) for x in found.group(2).split(",")]


@pytest.fixture(scope="module")
def runs(data_bin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fully_sharded")
    two = ["--update-freq", "2", "--distributed-backend", "gloo"]
    out = {"tmp": tmp}
    # two launches at a time: their start-up (imports, rendezvous) overlaps
    ddp = _start(["fairseq_cli.train", data_bin, *ARGS, *two, "--ddp-backend", "pytorch_ddp",
                  "--save-dir", str(tmp / "ddp"), "--log-file", str(tmp / "ddp.log")], tmp)
    fsdp = _start(["fairseq_cli.train", data_bin, *ARGS, *two, "--ddp-backend", "fully_sharded",
                   "--save-dir", str(tmp / "fsdp"), "--log-file", str(tmp / "fsdp.log")], tmp)
    out["ddp"], out["fsdp"] = _finish(ddp), _finish(fsdp)
    # resume the update-4 checkpoint on one process: the same 4 batches per update
    (tmp / "one" / "checkpoint_last.pt").mkdir(parents=True)
    for name in os.listdir(tmp / "fsdp" / "checkpoint_1_4.pt"):
        os.link(tmp / "fsdp" / "checkpoint_1_4.pt" / name, tmp / "one" / "checkpoint_last.pt" / name)
    one = _start(["fairseq_cli.train", data_bin, *ARGS, "--update-freq", "4", "--ddp-backend",
                  "fully_sharded", "--save-dir", str(tmp / "one"), "--log-file", str(tmp / "one.log")],
                 tmp, nproc=1)
    hydra = _start(["fairseq_cli.train_hydra", *HYDRA, f"task.data={data_bin}",
                    f"checkpoint.save_dir={tmp / 'hydra'}", f"common.log_file={tmp / 'hydra.log'}",
                    f"hydra.run.dir={tmp / 'outputs'}"], tmp)
    out["one"], out["hydra"] = _finish(one), _finish(hydra)
    return out


def test_fully_sharded_losses_equal_ddp_with_update_freq_and_clipping(runs):
    tmp = runs["tmp"]
    ddp, fsdp = _losses(tmp / "ddp.log"), _losses(tmp / "fsdp.log")
    assert sorted(ddp) == sorted(fsdp) == list(range(1, 9))
    for update in ddp:
        assert abs(ddp[update] - fsdp[update]) < 1e-4, (update, ddp[update], fsdp[update])
    # every update was clipped: the gradient norm compared with clip_norm is the global one
    records = [r for r in read_json_log(tmp / "fsdp.log") if "update" in r]
    assert all(r["clip"] == 100 for r in records)
    assert [r["gnorm"] for r in records] == [r["gnorm"] for r in read_json_log(tmp / "ddp.log") if "update" in r]
    # sharded checkpoints: a DCP directory per name, the other names linked to the same files
    names = sorted(os.listdir(tmp / "fsdp"))
    assert names == ["checkpoint_1_4.pt", "checkpoint_1_8.pt", "checkpoint_best.pt", "checkpoint_last.pt",
                     "config.json"]
    last = tmp / "fsdp" / "checkpoint_last.pt"
    assert sorted(os.listdir(last)) == [".metadata", "__0_0.distcp", "__1_0.distcp", "extra.pt"]
    assert os.stat(last / ".metadata").st_ino == os.stat(tmp / "fsdp" / "checkpoint_1_8.pt" / ".metadata").st_ino


def test_parameter_memory_per_process_is_about_half_of_ddp(runs):
    ddp, fsdp = _memory(runs["ddp"]), _memory(runs["fsdp"])
    print(f"parameter bytes per process: pytorch_ddp {ddp}, fully_sharded {fsdp} "
          f"(ratio {max(fsdp) / max(ddp):.3f})")
    assert len(ddp) == len(fsdp) == 2
    assert all(f < 0.6 * d for f, d in zip(fsdp, ddp))
    assert sum(fsdp) == ddp[0]  # the shards add up to one whole model


def test_resume_two_processes_onto_one(runs):
    tmp = runs["tmp"]
    assert "written by 2 processes" in runs["one"]
    whole, resumed = _losses(tmp / "fsdp.log"), _losses(tmp / "one.log")
    assert sorted(resumed) == [5, 6, 7, 8]
    for update in resumed:  # Adam moments, schedule and data position carried over
        assert abs(whole[update] - resumed[update]) < 1e-4, (update, whole[update], resumed[update])
    # the final weights agree too: consolidate both update-8 directories into single files
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu
    from fairseq.distributed.fully_sharded import main as fully_sharded_main

    a, b = tmp / "a.pt", tmp / "b.pt"
    assert fully_sharded_main(["consolidate", str(tmp / "fsdp" / "checkpoint_1_8.pt"), str(a)]) == 0
    assert fully_sharded_main(["consolidate", str(tmp / "one" / "checkpoint_1_8.pt"), str(b)]) == 0
    sa, sb = load_checkpoint_to_cpu(str(a)), load_checkpoint_to_cpu(str(b))
    assert sa["num_updates"] == sb["num_updates"] == 8
    for key, value in sa["model"].items():  # Adam after 8 updates: summation order shows a little
        torch.testing.assert_close(value, sb["model"][key], atol=3e-4, rtol=1e-3)
    moments = sa["optimizer"]["state"]
    assert len(moments) == len(sa["optimizer"]["param_groups"][0]["params"]) > 0
    assert all(float(m["exp_avg_sq"].abs().sum()) > 0 for m in moments.values())


def test_hydra_door_bf16_consolidated_checkpoint_loads_in_the_eval_tools(runs):
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu, load_model_ensemble_and_task

    tmp = runs["tmp"]
    ddp, bf16 = _losses(tmp / "ddp.log"), _losses(tmp / "hydra.log")
    assert sorted(bf16) == [1, 2, 3, 4]
    for update in bf16:  # bfloat16 compute: close to float32, not equal
        assert abs(ddp[update] - bf16[update]) < 0.05, (update, ddp[update], bf16[update])
    path = tmp / "hydra" / "checkpoint_last.pt"
    assert path.is_file()  # one file, as every other backend writes
    state = load_checkpoint_to_cpu(str(path))
    models, cfg, task = load_model_ensemble_and_task([str(path)])
    assert str(cfg.distributed_training.ddp_backend) == "fully_sharded"
    assert models[0].decoder.embed_tokens.weight is models[0].decoder.output_projection.weight
    # an unsharded Adam takes the optimizer state as it is (indexed like model.parameters())
    params = list(models[0].parameters())
    optimizer = torch.optim.AdamW(params)
    optimizer.load_state_dict(state["optimizer"])
    assert [optimizer.state[p]["exp_avg"].shape for p in params] == [p.shape for p in params]


def test_sharded_directory_refused_by_single_file_loader_and_unsafe_metadata(runs, tmp_path):
    from fairseq.checkpoint_utils import CheckpointError, load_checkpoint_to_cpu
    from fairseq.distributed.fully_sharded import check_metadata

    sharded = runs["tmp"] / "fsdp" / "checkpoint_last.pt"
    with pytest.raises(CheckpointError, match="sharded checkpoint directory.*consolidate"):
        load_checkpoint_to_cpu(str(sharded))
    check_metadata(str(sharded))  # DCP's own metadata passes
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / ".metadata").write_bytes(pickle.dumps(os.system))
    with pytest.raises(ValueError, match="posix.system.*refused unread"):
        check_metadata(str(bad))


def test_data_position_is_rescaled_for_another_number_of_processes():
    from fairseq.checkpoint_utils import reshard_data_position

    itr = {"version": 2, "epoch": 3, "iterations_in_epoch": 8, "shuffle": True}
    # this process has no process group: 1 process now
    assert reshard_data_position({"train_iterator": itr, "data_shards": 2})["iterations_in_epoch"] == 16
    assert reshard_data_position({"train_iterator": itr})["iterations_in_epoch"] == 8  # older saves
    assert reshard_data_position({"train_iterator": dict(itr, iterations_in_epoch=0),
                                  "data_shards": 4})["iterations_in_epoch"] == 0


def test_start_up_cleans_an_interrupted_directory_save(tmp_path):
    from fairseq.checkpoint_utils import remove_partial_writes

    old = tmp_path / ".old_checkpoint_last.pt.4242.abc_1"  # killed between the two renames
    old.mkdir()
    (old / ".metadata").write_bytes(b"x")
    partial = tmp_path / ".tmp_checkpoint_1_8.pt.999999999.xyz"  # a dead writer's directory
    partial.mkdir()
    (partial / "__0_0.distcp").write_bytes(b"x")
    remove_partial_writes(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.pt"]
    assert (tmp_path / "checkpoint_last.pt" / ".metadata").read_bytes() == b"x"
