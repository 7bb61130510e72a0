"""SIGTERM and SIGHUP do what Ctrl-C does while a launcher drives a run.

A closed terminal (SIGHUP), `kill`, a CI timeout or systemd (SIGTERM) must not kill the launcher
silently while a job runs and a machine bills: each becomes the same `Interrupted` as Ctrl-C, so
the orchestrator stops the job (it checkpoints), pulls and frees everything; a second signal
abandons that and says how to finish by hand.

SIGINT gets Python's own handler back too: a launcher started from a shell that ignores SIGINT
(`cmd &` in a script, nohup) inherits SIG_IGN, and Ctrl-C would then do nothing at all.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Generator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked the launcher to stop. A KeyboardInterrupt, so Ctrl-C paths catch it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def how(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else self.name


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_interrupt() -> Generator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise `Interrupted` in the main thread.

    Outside the main thread (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in HANDLED}
    for sig in HANDLED:
        signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def describe(error: BaseException) -> str:
    """How to name what interrupted us in a message: "Ctrl-C", "SIGTERM"..."""
    return error.how if isinstance(error, Interrupted) else "Ctrl-C"
