"""Stopping training on a signal: SIGINT (Ctrl-C) and SIGTERM (``kill``, schedulers) end the run
after the step in progress (see :mod:`clsvc.training.loop`)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any


class TrainingStopped(KeyboardInterrupt):
    """Training ended early on signal ``signum`` (SIGINT: Ctrl-C, SIGTERM: ``kill`` or a job
    scheduler). A ``KeyboardInterrupt``, so whatever handles Ctrl-C handles it too; the message
    says what was saved and how to continue; the CLI exits with ``128 + signum``."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopSignals:
    """SIGINT/SIGTERM handlers for the duration of a ``with`` block (the previous handlers come
    back after it). The first signal only records itself in :attr:`signum`: the training loop
    looks at it between steps, saves the last completed step and stops. The same signal again,
    :attr:`repeat_s` seconds or more after the first, raises :class:`TrainingStopped` at once,
    wherever the program is (nothing more is saved; files being written are atomic, so they stay
    whole). Sooner it is the same request delivered twice (a terminal's Ctrl-C reaches torchrun's
    workers both directly and forwarded by torchrun; a scheduler signals every process of a job)
    and is ignored. Installed from the main thread only (Python delivers signals there); a signal
    the process ignores (``SIG_IGN``, e.g. a background job's SIGINT) stays ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    repeat_s = 1.0

    def __init__(self, last: Path):
        self.last = last
        self.signum = 0  # the first signal received, 0 while none
        self._first: dict[int, float] = {}  # signal -> when it first came (time.monotonic)
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                old = signal.getsignal(s)
                if old == signal.SIG_IGN:
                    continue
                self._old[s] = signal.SIG_DFL if old is None else old
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if signum not in self._first:
            self._first[signum] = now
            self.signum = self.signum or signum
        elif now - self._first[signum] >= self.repeat_s:
            raise TrainingStopped(
                signum, f"second {signal_name(signum)}: stopped at once without saving the step in progress; "
                f"{self.last} holds the last step saved before it (if any): continue with --resume")
