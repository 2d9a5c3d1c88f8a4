"""Errors that reach the user as one clear line: what is wrong and how to fix it."""

from __future__ import annotations

from types import FrameType


class BuildError(Exception):
    """A problem the user can act on. str(err) is the one line shown, no traceback."""

    def __init__(self, problem: str, fix: str = "", log_path: object = None) -> None:
        self.problem = problem
        self.fix = fix
        self.log_path = log_path
        super().__init__(self.line())

    def line(self) -> str:
        text = self.problem
        if self.fix:
            text += f" — {self.fix}"
        if self.log_path:
            text += f" (full log: {self.log_path})"
        return text


class CommandFailed(BuildError):
    """An external command exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, output_tail: str = "",
                 log_path: object = None) -> None:
        self.argv = argv
        self.returncode = returncode
        self.output_tail = output_tail
        problem = f"command failed with status {returncode}: {' '.join(argv[:6])}"
        if len(argv) > 6:
            problem += " ..."
        last = output_tail.strip().splitlines()[-1:] if output_tail.strip() else []
        if last:
            problem += f": {last[0][:200]}"
        super().__init__(problem, "see the log for the full output", log_path)


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler: SIGTERM (a stopped job, `kill`) cleans up as Ctrl-C does."""
    raise KeyboardInterrupt(f"signal {signum}")
