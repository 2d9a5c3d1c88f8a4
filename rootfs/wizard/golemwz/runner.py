"""One runner for every external command of the wizard.

Commands are argv lists, never a shell. Each command line and its output go to
the wizard log; standard input (where a password may travel) is never logged.
Tests substitute a recording fake and assert the argv sequence.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from golemwz.errors import CommandFailed, WizardError
from golemwz.report import Reporter

# Commands see this environment plus what the caller adds, nothing inherited:
# the wizard's own environment must not change what the tools do.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
}
# What a caller may never set: these choose which program runs or what it loads,
# and the wizard runs as root. BASE_ENV's PATH is the only PATH.
UNSAFE_ENV_NAMES = frozenset({"PATH", "IFS", "ENV", "BASH_ENV", "SHELL", "SHELLOPTS",
                              "CDPATH", "GCONV_PATH", "NLSPATH", "HOSTALIASES"})
UNSAFE_ENV_PREFIXES = ("LD_", "PYTHON", "PERL", "RUBY", "GLIBC_", "MALLOC_")


def check_env(env: Mapping[str, str]) -> None:
    """WizardError for a variable that could make a root command run foreign code."""
    unsafe = sorted(name for name in env
                    if name in UNSAFE_ENV_NAMES or name.startswith(UNSAFE_ENV_PREFIXES))
    if unsafe:
        raise WizardError(f"refusing to run a command with {', '.join(unsafe)} set",
                          "this is a bug in golemwz: please report it")


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""


class Runner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult: ...


class SubprocessRunner:
    """Runs commands for real; stdout is captured and returned, stderr is logged."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        args = tuple(argv)
        check_env(env or {})
        full_env = dict(BASE_ENV)
        full_env.update(env or {})
        self.reporter.detail("$ " + " ".join(args))
        try:
            proc = subprocess.run(
                args,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                env=full_env,
                check=False,
            )
        except FileNotFoundError as missing:
            raise WizardError(f"required tool '{args[0]}' is not installed",
                              "this image is incomplete; rebuild it") from missing
        stdout = proc.stdout.decode(errors="replace")
        stderr = proc.stderr.decode(errors="replace")
        if stdout.strip():
            self.reporter.detail(stdout.rstrip())
        if stderr.strip():
            self.reporter.detail(stderr.rstrip())
        self.reporter.detail(f"# exit {proc.returncode}")
        if check and proc.returncode != 0:
            raise CommandFailed(args, proc.returncode, stderr or stdout)
        return CommandResult(args, proc.returncode, stdout)
