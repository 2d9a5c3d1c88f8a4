"""Running commands inside a rootfs being built (chroot with the API filesystems)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from builder.mounts import mount, mounts_under, unmount
from builder.runner import CommandResult, Runner

CHROOT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}

# Refuses to start services while packages install: a daemon started in the
# chroot would hold the mounts open and run on the build host.
POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def processes_inside(root: Path, proc: Path = Path("/proc")) -> list[int]:
    """PIDs whose root directory is `root` or below it."""
    base = root.resolve()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            their_root = Path(os.readlink(entry / "root"))
        except OSError:  # gone, or a kernel thread
            continue
        if their_root == base or base in their_root.parents:
            found.append(int(entry.name))
    return found


def stop_processes_inside(root: Path, grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_inside(root)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and processes_inside(root):
            time.sleep(0.1)


class Chroot:
    """A rootfs with /proc, /sys, /dev, /dev/pts and /run mounted for the duration."""

    def __init__(self, root: Path, runner: Runner, stack: ExitStack,
                 env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.runner = runner
        self.env = {**CHROOT_ENV, **(env or {})}  # every command's environment inside
        # Whatever happens inside (a killed mmdebstrap, a postinst that mounts),
        # nothing stays mounted below the root once the stack unwinds.
        stack.callback(self._unmount_everything)
        mount(stack, runner, root / "proc", "-t", "proc", "proc")
        mount(stack, runner, root / "sys", "-t", "sysfs", "sysfs")
        mount(stack, runner, root / "dev", "--bind", "/dev")
        mount(stack, runner, root / "dev" / "pts", "--bind", "/dev/pts")
        mount(stack, runner, root / "run", "-t", "tmpfs", "-o", "mode=0755", "tmpfs")
        # Registered last, so it runs first on unwind: apt starts dpkg in a session of
        # its own, which the runner's process-group kill does not reach.
        stack.callback(stop_processes_inside, root)

    def _unmount_everything(self) -> None:
        for point in mounts_under(self.root):
            if point != self.root.resolve():
                unmount(self.runner, point)

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            env: Mapping[str, str] | None = None, capture: bool = False,
            check: bool = True) -> CommandResult:
        full_env = dict(self.env)
        if env:
            full_env.update(env)
        return self.runner.run(["chroot", str(self.root), *argv], input=input, env=full_env,
                               capture=capture, check=check)
