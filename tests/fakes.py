"""Fakes of the builder's outside world for tests (the wizard's own are in
tests/wizard/wizard_fakes.py: the wizard must not import the builder)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from builder.errors import CommandFailed
from builder.runner import CommandResult, as_argv


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
        args = as_argv(argv)
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
