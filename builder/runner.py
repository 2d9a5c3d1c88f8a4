"""One runner for every external command.

Commands are argv lists (never a shell); each one and its output go to the
stage's log file. Tests substitute RecordingRunner and assert the argv sequence.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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


def _argv(argv: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
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
        args = _argv(argv)
        if shutil.which(args[0], path=(env or BASE_ENV).get("PATH")) is None and "/" not in args[0]:
            raise BuildError(f"required tool '{args[0]}' is not installed",
                             "install the build dependencies: make deps (as root)")
        full_env = dict(BASE_ENV)
        if env:
            full_env.update(env)
        started = time.monotonic()
        with self._log() as log:
            log.write(f"$ {' '.join(args)}\n")
            log.flush()
            if self.echo:
                self.echo(" ".join(args))
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if not capture else subprocess.PIPE,
                env=full_env,
                cwd=cwd,
                # Its own process group, so an interrupt can stop everything it
                # started (apt's dpkg, debootstrap's children), not just the leader.
                start_new_session=True,
            )
            out_chunks: list[bytes] = []
            err_tail = b""
            try:
                if capture:
                    out, err = proc.communicate(input)
                    out_chunks.append(out)
                    log.write(err.decode(errors="replace"))
                    err_tail = err[-4000:]
                else:
                    if input is not None and proc.stdin:
                        proc.stdin.write(input)
                        proc.stdin.close()
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        log.write(line.decode(errors="replace"))
                        err_tail = (err_tail + line)[-4000:]
                    proc.wait()
            except BaseException:
                # Interrupted: leave nothing running that still writes into the tree.
                _stop_group(proc)
                log.write("# interrupted\n")
                raise
            stdout = b"".join(out_chunks).decode(errors="replace")
            log.write(f"# exit {proc.returncode} after {time.monotonic() - started:.1f}s\n")
        if check and proc.returncode != 0:
            raise CommandFailed(list(args), proc.returncode,
                                err_tail.decode(errors="replace"), self.log_path)
        return CommandResult(args, proc.returncode, stdout)


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


@dataclass
class RecordedCall:
    argv: tuple[str, ...]
    input: bytes | None
    env: dict[str, str] | None
    cwd: str | None


@dataclass
class RecordingRunner:
    """A fake runner for tests: records argv, answers from `responses`.

    `responses` maps a tuple prefix of argv to a CommandResult-producing callable
    or a (returncode, stdout) pair; the longest matching prefix wins.
    `side_effects` lets a test create files the real command would have made.
    """

    responses: dict[tuple[str, ...], tuple[int, str]] = field(default_factory=dict)
    side_effects: dict[tuple[str, ...], Callable[[tuple[str, ...]], None]] = field(
        default_factory=dict)
    calls: list[RecordedCall] = field(default_factory=list)

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
        args = _argv(argv)
        self.calls.append(RecordedCall(args, input, dict(env) if env else None,
                                       os.fspath(cwd) if cwd else None))
        for prefix in sorted(self.side_effects, key=len, reverse=True):
            if args[: len(prefix)] == prefix:
                self.side_effects[prefix](args)
                break
        code, out = 0, ""
        for prefix in sorted(self.responses, key=len, reverse=True):
            if args[: len(prefix)] == prefix:
                code, out = self.responses[prefix]
                break
        if check and code != 0:
            raise CommandFailed(list(args), code, out)
        return CommandResult(args, code, out)

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [c.argv for c in self.calls]

    def programs(self) -> list[str]:
        return [c.argv[0] for c in self.calls]
