"""The state the training loop carries, and how Ctrl-C stops it.

:class:`TrainingState` holds what lives across updates, epochs and saves (the best validation
value, patience, training time, where the last checkpoint is, whether Ctrl-C came); the
checkpoint saver reads its saved part. :class:`InterruptRequest` turns the first Ctrl-C into a
request the loop honours at its next safe point: after the update in progress, between two
validation batches, or between epochs (:func:`stop_on_interrupt`).
"""
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from omegaconf import DictConfig

from fairseq.logging.meters import StopwatchMeter
from fairseq.stop_signals import STOP_SIGNALS, describe, is_stop_handler

logger = logging.getLogger("fairseq.train")


class TrainingInterrupted(KeyboardInterrupt):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) stopped training; ``message`` says where the last
    checkpoint is, ``signum`` which signal it was."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.message = message
        self.signum = signum


class InterruptRequest:
    """While active, the first stop signal (Ctrl-C, SIGTERM, SIGHUP) only asks the loop to stop
    at its next safe point (after the current update or validation batch).

    A second one raises ``KeyboardInterrupt`` (or :class:`~fairseq.stop_signals.Stopped`) at once:
    the previous handlers are back. Installed only in the main thread of a single-process run:
    with many processes each would stop at its own update and the others would wait for it
    forever, so there a stop signal interrupts at once. A signal that is ignored (SIGINT in a
    background job, SIGHUP under ``nohup``) stays ignored.
    """

    def __init__(self, active: bool, save: bool) -> None:
        self.requested = False
        self.signum: int = signal.SIGINT
        self.save = save
        self._previous: Dict[int, Any] = {}
        self._active = active and threading.current_thread() is threading.main_thread()

    def _ours_to_take(self, signum: int) -> bool:
        handler = signal.getsignal(signum)
        if signum == signal.SIGINT:
            return handler is signal.default_int_handler
        return handler is signal.SIG_DFL or is_stop_handler(handler)

    def __enter__(self) -> "InterruptRequest":
        if self._active:
            for signum in STOP_SIGNALS:
                if self._ours_to_take(signum):
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        self.signum = signum
        self._restore()
        logger.warning("%s: stopping after the current update or validation batch%s; send it again "
                       "to stop at once",
                       describe(signum), " and saving checkpoint_last.pt" if self.save else "")

    def __exit__(self, *exc: Any) -> None:
        self._restore()


def interrupt_message(cfg: DictConfig, num_updates: Optional[int], last: Optional[Tuple[str, Optional[int]]],
                      saved_now: bool, signum: int = signal.SIGINT) -> str:
    """The one line printed when a stop signal (Ctrl-C, SIGTERM, SIGHUP) stops training."""
    what = f"interrupted ({describe(signum)})"
    where = f" at update {num_updates}" if num_updates is not None else ""
    if last is not None and saved_now:
        return (f"{what}{where}: saved {last[0]} first; rerun the same command to "
                "resume from it")
    if last is not None and num_updates is not None and last[1] == num_updates:
        # the scheduled save (or the restored checkpoint) is already at the update where it stopped
        return (f"{what}{where}: the last checkpoint {last[0]} is at this update; rerun the "
                "same command to resume from it")
    ck = cfg.checkpoint
    if ck.no_save:
        why = " (checkpoint.no_save=true)"
    elif ck.save_on_interrupt and ck.no_last_checkpoints:
        why = " (checkpoint.no_last_checkpoints=true)"
    elif ck.save_on_interrupt and not num_updates:
        why = " (no update was trained yet)"
    elif ck.save_on_interrupt:
        why = " (stopped at once: a second signal, or several processes)"
    else:
        why = " (checkpoint.save_on_interrupt=true / --save-on-interrupt saves one on Ctrl-C or SIGTERM)"
    if last is None and os.path.isfile(os.path.join(ck.save_dir, "checkpoint_last.pt")):
        last = (os.path.join(ck.save_dir, "checkpoint_last.pt"), None)
    if last is not None:
        at = f" (update {last[1]})" if last[1] is not None else ""
        return (f"{what}{where}; nothing saved now{why}: the last checkpoint is "
                f"{last[0]}{at}; rerun the same command to resume from it")
    return f"{what}{where}; no checkpoint was written{why}"


@dataclass
class TrainingState:
    """What the loop carries between updates, epochs and saves.

    ``best``, ``num_bad_validations`` and ``train_wall`` are saved in every checkpoint's
    ``extra_state`` and restored on resume; the rest lives for one run.
    """

    interrupt: Optional[InterruptRequest] = None
    #: the best value of ``checkpoint.best_checkpoint_metric`` so far
    best: Optional[float] = None
    #: validations in a row without improvement (``checkpoint.patience``)
    num_bad_validations: int = 0
    #: time spent in training steps, over every run of this training
    train_wall: StopwatchMeter = field(default_factory=StopwatchMeter)
    start_time: float = field(default_factory=time.perf_counter)
    #: TensorBoard / W&B writers (first process only)
    writers: Any = None
    trainer: Any = None
    #: (path, update) of the last checkpoint written or restored
    last_checkpoint: Optional[Tuple[str, Optional[int]]] = None
    interrupted: bool = False
    saved_on_interrupt: bool = False


class ValidationStopped(Exception):
    """A stop signal came during validation: the pass stopped between two batches, and its
    partial metric is neither logged nor used (best checkpoint, patience, lr schedule)."""


def stop_requested(state: TrainingState) -> bool:
    """Whether a stop signal asked the loop to stop."""
    return state.interrupt is not None and state.interrupt.requested


def stop_on_interrupt(cfg: DictConfig, trainer: Any, epoch_itr: Any, end_of_epoch: bool,
                      state: TrainingState) -> None:
    """Stop for a stop signal at a point where the run's state is whole.

    With ``checkpoint.save_on_interrupt`` it saves ``checkpoint_last.pt`` here first, without
    validating (``val_loss`` None, never ``checkpoint_best.pt``), unless the last checkpoint is
    already at this update (a scheduled save, or the one the run resumed from) or nothing was
    trained yet. The position in the epoch is saved as by every save, so the rerun continues
    with the next batch.
    """
    from fairseq import checkpoint_utils, distributed_utils

    ck = cfg.checkpoint
    num_updates = trainer.get_num_updates()
    current = state.last_checkpoint is not None and state.last_checkpoint[1] == num_updates
    assert state.interrupt is not None
    if (state.interrupt.save and not ck.no_save and not ck.no_last_checkpoints and not current
            and num_updates > 0):
        checkpoint_utils.save_checkpoint(cfg, trainer, epoch_itr, None, end_of_epoch, state, False)
        if distributed_utils.is_master():
            state.last_checkpoint = (os.path.join(ck.save_dir, "checkpoint_last.pt"), num_updates)
            state.saved_on_interrupt = True
    state.interrupted = True
