"""Errors that reach the user as one clear line: what is wrong and how to fix it."""

from __future__ import annotations


class WizardError(Exception):
    """A problem the user can act on; the wizard exits with status 1."""

    exit_status = 1

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.problem} — {self.fix}" if self.fix else self.problem


class ConfigError(WizardError):
    """A configuration value is wrong or missing; exit status 2 like any usage error."""

    exit_status = 2

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        super().__init__(problem, fix)


class CommandFailed(WizardError):
    """An external command exited non-zero."""

    def __init__(self, argv: tuple[str, ...], returncode: int, output_tail: str = "") -> None:
        self.argv = argv
        self.returncode = returncode
        shown = " ".join(argv[:6]) + (" ..." if len(argv) > 6 else "")
        problem = f"command failed with status {returncode}: {shown}"
        last_lines = output_tail.strip().splitlines()[-1:]
        if last_lines:
            problem += f": {last_lines[0][:200]}"
        super().__init__(problem, "see ~golem/golemwz.log for the full output")
