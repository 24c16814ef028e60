"""The lines a sweep ends with name what was swept, not every override of every job."""
import json

from fairseq_cli.train_hydra import sweep_summary

SAVE = "checkpoint.save_dir=${hydra:runtime.output_dir}/checkpoints"


def job(num, overrides, best, save_dir):
    return json.dumps({"job": num, "overrides": overrides, "best": best, "metric": "loss", "maximize": False,
                       "save_dir": save_dir})


def test_only_the_swept_keys_are_shown_and_the_best_job_is_named():
    shared = ["task.data=/data", "optimization.max_update=4", SAVE]
    lines = [job(0, shared + ["optimization.lr=[0.0001]", "model.dropout=0.1"], 5.5, "/m/0/checkpoints"),
             job(1, shared + ["optimization.lr=[0.01]", "model.dropout=0.1"], 4.25, "/m/1/checkpoints"),
             job(2, shared + ["optimization.lr=[0.1]", "model.dropout=0.3"], None, "/m/2/checkpoints")]
    out = sweep_summary(lines)
    assert out[0] == "job 0: model.dropout=0.1 optimization.lr=[0.0001] | best valid loss 5.5 | checkpoints in /m/0/checkpoints"
    assert out[2].startswith("job 2: model.dropout=0.3 optimization.lr=[0.1] | no validation")
    assert out[3] == ("best: job 1 (model.dropout=0.1 optimization.lr=[0.01]) with valid loss 4.25; "
                      "checkpoints in /m/1/checkpoints")
    assert not any("task.data" in line or "save_dir" in line or "max_update" in line for line in out)


def test_a_single_job_shows_its_own_overrides_without_the_added_save_dir():
    out = sweep_summary([job(0, ["optimization.lr=[0.01]", SAVE], 3.0, "/m/0/checkpoints")])
    assert out[0].startswith("job 0: optimization.lr=[0.01] | best valid loss 3")
