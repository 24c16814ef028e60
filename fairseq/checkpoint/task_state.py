"""A task's own state in its checkpoints: :meth:`FairseqTask.get_checkpoint_dict` when saving,
:meth:`FairseqTask.set_checkpoint_dict` when resuming or loading for evaluation.

fairseq's convention (its newer releases) is followed: the task returns
``{type(task).__name__: its_state}``, those entries are merged into ``extra_state`` (where
fairseq's resume looks them up by the task's class name), and ``set_checkpoint_dict`` receives
``its_state``. The returned dict is also stored as the checkpoint's top-level ``task_state``
(fairseq 0.12.2's key for task state, ``{}`` when the task has none).
"""
import logging
from typing import Any, Dict, Optional

from fairseq.errors import ConfigError

logger = logging.getLogger("fairseq.checkpoint_utils")

TASK_STATE_KEY = "task_state"


def task_checkpoint_dict(task: Any) -> Dict[str, Any]:
    """What ``task.get_checkpoint_dict()`` returns (``{}`` for a task without the hook).

    Raises:
        ConfigError: the hook returns something other than a dict.
    """
    hook = getattr(task, "get_checkpoint_dict", None)
    if task is None or hook is None:
        return {}
    entries = hook()
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise ConfigError(f"{type(task).__name__}.get_checkpoint_dict() returned a {type(entries).__name__}; "
                          f"it must return a dict, e.g. {{'{type(task).__name__}': {{...}}}}")
    return entries


def add_task_state(snapshot: Dict[str, Any], task: Any) -> None:
    """Store the task's checkpoint dict in ``snapshot`` (top-level ``task_state``, and merged into
    ``extra_state`` as fairseq does), in place.

    Raises:
        ConfigError: one of its keys is already an ``extra_state`` entry of the trainer's
            (``epoch``, ``train_iterator``, ...), which it would overwrite.
    """
    entries = task_checkpoint_dict(task)
    snapshot[TASK_STATE_KEY] = entries
    if not entries:
        return
    extra = snapshot.setdefault("extra_state", {})
    taken = sorted(k for k in entries if k in extra)
    if taken:
        raise ConfigError(f"{type(task).__name__}.get_checkpoint_dict() returned the key(s) {', '.join(map(repr, taken))}, "
                          "which the checkpoint's extra_state already uses; return "
                          f"{{'{type(task).__name__}': {{...}}}} (the task's class name as the key)")
    extra.update(entries)


def saved_task_state(state: Dict[str, Any], task: Any) -> Optional[Any]:
    """The state a checkpoint holds for ``task`` (the entry under its class name, from
    ``task_state`` or, as fairseq's newer releases write it, from ``extra_state``); None if none."""
    name = type(task).__name__
    for holder in (state.get(TASK_STATE_KEY), state.get("extra_state")):
        if isinstance(holder, dict) and holder.get(name):
            return holder[name]
    return None


def restore_task_state(state: Optional[Dict[str, Any]], task: Any) -> bool:
    """Hand ``task`` its saved state (``task.set_checkpoint_dict``), if the checkpoint ``state``
    holds any for it. Returns whether it did."""
    hook = getattr(task, "set_checkpoint_dict", None)
    if not state or task is None or hook is None:
        return False
    saved = saved_task_state(state, task)
    if not saved:
        return False
    hook(saved)
    logger.info("restored the state of %s from the checkpoint", type(task).__name__)
    return True
