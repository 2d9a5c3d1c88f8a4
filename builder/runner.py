"""One runner for every external command.

Commands are argv lists (never a shell); each one and its output go to the
stage's log file. Tests substitute a recording fake (tests/fakes.py) and assert
the argv sequence.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from builder.errors import BuildError, CommandFailed

# A minimal, explicit environment for commands: nothing leaks in from the
# caller's shell except what is listed here.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}
# How much of a failed command's output its error line can quote from.
TAIL_BYTES = 4000


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""


class Runner(Protocol):
    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        check: bool = True,
        capture: bool = False,
    ) -> CommandResult: ...


def as_argv(argv: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    return tuple(os.fspath(a) for a in argv)


class SubprocessRunner:
    """Runs commands for real, appending each command and its output to a log file."""

    def __init__(self, log_path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.log_path = log_path
        self.echo = echo
        log_path.parent.mkdir(parents=True, exist_ok=True)

    def _log(self) -> TextIO:
        return open(self.log_path, "a", encoding="utf-8", errors="replace")

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        check: bool = True,
        capture: bool = False,
    ) -> CommandResult:
        args = as_argv(argv)
        full_env = {**BASE_ENV, **(env or {})}
        if "/" not in args[0] and shutil.which(args[0], path=full_env["PATH"]) is None:
            raise BuildError(f"required tool '{args[0]}' is not installed",
                             "install the build dependencies: make deps (as root)")
        started = time.monotonic()
        with self._log() as log:
            log.write(f"$ {' '.join(args)}\n")
            log.flush()
            if self.echo:
                self.echo(" ".join(args))
            proc = self._spawn(args, full_env, cwd, with_input=input is not None,
                               capture=capture)
            try:
                stdout, err_tail = self._pump(proc, log, input, capture)
            except BaseException:
                # Interrupted: leave nothing running that still writes into the tree.
                _stop_group(proc)
                log.write("# interrupted\n")
                raise
            log.write(f"# exit {proc.returncode} after {time.monotonic() - started:.1f}s\n")
        return self._finish(args, proc.returncode, stdout, err_tail, check)

    @staticmethod
    def _spawn(args: tuple[str, ...], env: dict[str, str], cwd: str | os.PathLike[str] | None,
               *, with_input: bool, capture: bool) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            stdin=subprocess.PIPE if with_input else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            # Captured stdout is the command's answer; its stderr goes to the log only.
            stderr=subprocess.PIPE if capture else subprocess.STDOUT,
            env=env,
            cwd=cwd,
            # Its own process group, so an interrupt can stop everything it
            # started (apt's dpkg, mmdebstrap's children), not just the leader.
            start_new_session=True,
        )

    @staticmethod
    def _pump(proc: subprocess.Popen[bytes], log: TextIO, input: bytes | None,
              capture: bool) -> tuple[str, bytes]:
        """Feed input, copy output into the log; return (captured stdout, output tail)."""
        if capture:
            out, err = proc.communicate(input)
            log.write(err.decode(errors="replace"))
            return out.decode(errors="replace"), err[-TAIL_BYTES:]
        if input is not None and proc.stdin:
            proc.stdin.write(input)
            proc.stdin.close()
        assert proc.stdout is not None
        tail = b""
        for line in proc.stdout:
            log.write(line.decode(errors="replace"))
            tail = (tail + line)[-TAIL_BYTES:]
        proc.wait()
        return "", tail

    def _finish(self, args: tuple[str, ...], returncode: int, stdout: str, err_tail: bytes,
                check: bool) -> CommandResult:
        if check and returncode != 0:
            raise CommandFailed(list(args), returncode, err_tail.decode(errors="replace"),
                                self.log_path)
        return CommandResult(args, returncode, stdout)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; give the rest of its group the same grace.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
