"""A task's own state travels with its checkpoints (``get_checkpoint_dict`` / ``set_checkpoint_dict``).

A task that counts its training steps returns ``{"CountingTask": {"steps": n}}``; the count is
stored in every save path (``.pt``, safetensors pair), handed back when a run resumes (the count
goes on from there) and when a model is loaded for evaluation, and fairseq's protocol
(``checkpoint_utils.save_checkpoint`` / ``load_checkpoint`` with a fairseq-style trainer) finds it
in ``extra_state`` under the task's class name, as fairseq's newer releases do.
"""
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch

from conftest import TINY_LEGACY, registrations_forgotten

from fairseq.tasks import register_task
from fairseq.tasks.fairseq_task import FairseqTask
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask


class CountingTask(LanguageModelingTask):
    """Language modeling that counts its training steps and how often its state came back."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0
        self.restored = []

    def train_step(self, sample, model, criterion, update_num=0):
        self.steps += 1
        return super().train_step(sample, model, criterion, update_num)

    def get_checkpoint_dict(self):
        return {type(self).__name__: {"steps": self.steps}}

    def set_checkpoint_dict(self, state):
        self.restored.append(dict(state))
        self.steps = int(state["steps"])


@pytest.fixture(scope="module", autouse=True)
def counting_task_registered():
    """CountingTask registered for this module's tests only (``--help`` elsewhere never lists it)."""
    with registrations_forgotten():
        register_task("counting_lm_for_tests", dataclass=LanguageModelingConfig)(CountingTask)
        yield


@pytest.fixture
def seen_tasks(monkeypatch):
    """Every CountingTask built during the test."""
    built = []
    original = CountingTask.__init__

    def remember(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(CountingTask, "__init__", remember)
    return built


def _train(data_bin, save_dir, updates, *extra):
    from fairseq_cli import train

    train.cli_main([data_bin, "--task", "counting_lm_for_tests", *TINY_LEGACY, "--max-update", str(updates),
                    "--save-dir", str(save_dir), "--log-format", "none", "--seed", "1", *extra])


def test_the_base_task_saves_nothing_and_takes_anything():
    task = FairseqTask(SimpleNamespace())
    assert task.get_checkpoint_dict() == {}
    assert task.set_checkpoint_dict({"anything": 1}) is None


@pytest.mark.parametrize("save_format", ["pt", "safetensors"])
def test_the_task_state_is_saved_restored_on_resume_and_given_to_an_evaluation_task(
        data_bin, tmp_path, seen_tasks, save_format):
    from fairseq import checkpoint_utils

    save_dir = tmp_path / "run"
    _train(data_bin, save_dir, 2, "--save-format", save_format)
    raw = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    assert raw["task_state"] == {"CountingTask": {"steps": 2}}
    assert raw["extra_state"]["CountingTask"] == {"steps": 2}  # where fairseq's newer resume looks

    # resumed: the count comes back and goes on
    _train(data_bin, save_dir, 4, "--save-format", save_format)
    resumed = seen_tasks[-1]
    assert resumed.restored == [{"steps": 2}] and resumed.steps == 4
    assert torch.load(save_dir / "checkpoint_last.pt", weights_only=True)["task_state"] == {
        "CountingTask": {"steps": 4}}

    # loaded for evaluation: the task built from the checkpoint gets it too
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(save_dir / "checkpoint_last.pt")])
    assert isinstance(task, CountingTask) and task.restored == [{"steps": 4}] and models


def test_a_task_without_state_is_not_called_back(tiny_checkpoint):
    from fairseq.checkpoint.task_state import restore_task_state

    task = MagicMock(spec=CountingTask)
    state = torch.load(tiny_checkpoint / "checkpoint_last.pt", weights_only=True)
    assert state["task_state"] == {}
    assert restore_task_state(state, task) is False
    task.set_checkpoint_dict.assert_not_called()


def test_a_task_state_key_taken_by_the_trainer_is_refused_in_one_line():
    from fairseq.checkpoint.task_state import add_task_state
    from fairseq.errors import ConfigError

    task = MagicMock()
    task.get_checkpoint_dict.return_value = {"epoch": 3}
    with pytest.raises(ConfigError, match="'epoch'.*already uses"):
        add_task_state({"extra_state": {"epoch": 1}}, task)
    task.get_checkpoint_dict.return_value = ["not", "a", "dict"]
    with pytest.raises(ConfigError, match="must return a dict"):
        add_task_state({"extra_state": {}}, task)


def test_fairseqs_protocol_stores_and_hands_back_the_task_entry(tmp_path):
    """fairseq's own callers: ``save_checkpoint(cfg.checkpoint, trainer, epoch_itr, val_loss)`` and
    ``load_checkpoint(cfg.checkpoint, trainer)`` with a trainer of fairseq's protocol."""
    from omegaconf import OmegaConf

    from fairseq import checkpoint_utils
    from fairseq.dataclass.configs import FairseqConfig

    saved = {"observed": {"layer": torch.tensor([1.0, 2.0]), "count": 3}}
    trainer = MagicMock()
    trainer.task = MagicMock(spec=CountingTask)
    type(trainer.task).__name__ = "CountingTask"
    trainer.task.get_checkpoint_dict.return_value = {"CountingTask": saved}
    trainer.get_num_updates.return_value = 5
    trainer.is_fully_sharded = False
    trainer.checkpoint_suffix = ""
    written = {}
    trainer.state_dict.return_value = {"model": {"w": torch.zeros(2)}, "optimizer": {}, "lr_scheduler": {},
                                       "num_updates": 5}
    trainer.cfg = OmegaConf.structured(FairseqConfig())
    trainer.cfg.checkpoint.save_dir = str(tmp_path)
    trainer.cfg.checkpoint.no_epoch_checkpoints = True
    cfg = trainer.cfg.checkpoint
    epoch_itr = MagicMock(epoch=1)
    epoch_itr.end_of_epoch.return_value = False
    epoch_itr.state_dict.return_value = {"epoch": 1, "iterations_in_epoch": 5}
    checkpoint_utils.save_checkpoint(cfg, trainer, epoch_itr, None)
    raw = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert torch.equal(raw["extra_state"]["CountingTask"]["observed"]["layer"], torch.tensor([1.0, 2.0]))

    def load_checkpoint(path, *args, **kwargs):
        written["path"] = path
        return checkpoint_utils.load_checkpoint_to_cpu(path)["extra_state"]

    trainer.load_checkpoint.side_effect = load_checkpoint
    checkpoint_utils.load_checkpoint(cfg, trainer)
    assert written["path"].endswith("checkpoint_last.pt")
    (given,), _ = trainer.task.set_checkpoint_dict.call_args
    assert given["observed"]["count"] == 3 and torch.equal(given["observed"]["layer"], torch.tensor([1.0, 2.0]))
