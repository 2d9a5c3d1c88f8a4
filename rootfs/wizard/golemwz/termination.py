"""SIGTERM (unit stop, shutdown) during the wizard: stop cleanly, never mid-step.

Outside a critical section SIGTERM stops the wizard at once (Terminated unwinds
through the `finally` blocks, so the conf partition is closed). Inside one (a
step that writes the partition table or resizes the filesystem) it is held until
the step has finished, so the disk is left between two steps, which the next
boot's grow resumes from. A SIGKILL (systemd's stop timeout) or a power cut can
still cut a step: each grow step is idempotent for that reason (see storage).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(BaseException):
    """Not an Exception: no `except Exception` on the way may swallow it."""

    exit_status = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM death

    def __init__(self, signum: int, held_for: str | None = None) -> None:
        self.signum = signum
        self.held_for = held_for
        super().__init__(self.line())

    def line(self) -> str:
        name = signal.Signals(self.signum).name
        after = f" after finishing: {self.held_for}" if self.held_for else ""
        return (f"stopped by {name}{after}; the conf partition was closed and the next "
                "boot continues where this one stopped")


class TerminationGuard:
    def __init__(self) -> None:
        self.depth = 0
        self.pending: int | None = None
        self.current: str | None = None

    def install(self) -> Callable[[], None]:
        """Handle SIGTERM from now on; returns what puts the previous handler back."""
        previous = signal.signal(signal.SIGTERM, self.handle)

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)
            self.depth, self.pending, self.current = 0, None, None

        return restore

    def handle(self, signum: int, frame: FrameType | None = None) -> None:
        if self.depth:
            self.pending = signum  # the running command goes on; raised after the step
            return
        raise Terminated(signum)

    @contextmanager
    def critical(self, what: str) -> Iterator[None]:
        """A step that must not be cut by SIGTERM: a signal waits until it is done."""
        self.depth += 1
        outer, self.current = self.current, self.current or what
        try:
            yield
        finally:
            self.depth -= 1
            self.current = outer
        if self.depth == 0 and self.pending is not None:
            signum, self.pending = self.pending, None
            raise Terminated(signum, held_for=what)


GUARD = TerminationGuard()
