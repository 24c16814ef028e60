"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

A scheduler that cancels or pre-empts a job (``scancel``, a spot reclaim) sends SIGTERM, a
closed terminal SIGHUP. Left at their default, both kill the process with no word and no
chance to save. :func:`raise_on_stop_signals` makes them raise :class:`Stopped`, a
``KeyboardInterrupt``, so every door ends with the same single line as for Ctrl-C and exits
with ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP), and the training loop
(``fairseq.training_state.InterruptRequest``) can stop after the current update and save.
"""
import os
import signal
import threading
from typing import Any, Dict

__all__ = ["STOP_SIGNALS", "Stopped", "describe", "exit_code", "is_stop_handler", "raise_on_stop_signals"]

#: the signals that stop a command, and how a message names them
STOP_SIGNALS: Dict[int, str] = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (``signum``); handled wherever Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {describe(signum)}")
        self.signum = signum


def describe(signum: int) -> str:
    return STOP_SIGNALS.get(signum, f"signal {signum}")


def exit_code(error: BaseException) -> int:
    """The exit status a shell reports for the signal behind ``error`` (a KeyboardInterrupt):
    128 + its number, 130 for Ctrl-C."""
    return 128 + int(getattr(error, "signum", signal.SIGINT))


def _raise(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def _default_in_child() -> None:
    # a forked DataLoader worker is stopped by its parent; it keeps the default actions
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is _raise:
            signal.signal(signum, signal.SIG_DFL)


def is_stop_handler(handler: Any) -> bool:
    """Whether ``handler`` is the one :func:`raise_on_stop_signals` installs."""
    return handler is _raise


_registered = False


def raise_on_stop_signals() -> None:
    """In the main thread, make SIGTERM and SIGHUP raise :class:`Stopped`. A signal left at a
    handler of someone else's, or ignored (``nohup`` ignores SIGHUP), is left alone."""
    global _registered
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _raise)
    if not _registered:
        os.register_at_fork(after_in_child=_default_in_child)
        _registered = True
