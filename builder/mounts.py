"""Mounts, loop devices and tree removal, each undone through an ExitStack.

Every acquisition registers its undo on the stack the moment it succeeds
(diskimage-builder's add_rollback), so an exception or Ctrl-C anywhere leaves
nothing mounted. Tree removal refuses to cross a mount point: a leaked bind
mount of /dev must never turn `rm -r` into a host wipe.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

from builder.errors import BuildError
from builder.runner import Runner

MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return (field.replace("\\040", " ").replace("\\011", "\t")
            .replace("\\012", "\n").replace("\\134", "\\"))


def mount_points(mountinfo: Path = MOUNTINFO) -> list[Path]:
    try:
        lines = mountinfo.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [Path(_unescape(line.split()[4])) for line in lines if len(line.split()) > 4]


def mounts_under(path: Path, mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them)."""
    base = path.resolve()
    found = [m for m in mount_points(mountinfo) if m == base or base in m.parents]
    return sorted(set(found), key=lambda m: len(m.parts), reverse=True)


def safe_rmtree(path: Path) -> None:
    busy = mounts_under(path)
    if busy:
        raise BuildError(f"refusing to delete {path}: {busy[0]} is still mounted",
                         "run `golem-live clean --sweep` to unmount what a killed build left")
    shutil.rmtree(path)


def mount(stack: ExitStack, runner: Runner, target: Path, *args: str) -> Path:
    """`mount ARGS TARGET`, with the unmount registered on `stack`."""
    target.mkdir(parents=True, exist_ok=True)
    runner.run(["mount", *args, str(target)])
    stack.callback(unmount, runner, target)
    return target


def unmount(runner: Runner, target: Path) -> None:
    result = runner.run(["umount", str(target)], check=False)
    if result.returncode != 0:
        # Something still holds it (a daemon a postinst started): detach lazily
        # so it disappears from the tree before anything deletes the tree.
        runner.run(["umount", "--lazy", str(target)], check=False)


def attach_loop(stack: ExitStack, runner: Runner, image: Path, partscan: bool = False) -> str:
    argv = ["losetup", "--find", "--show"]
    if partscan:
        argv.append("--partscan")
    device = runner.run([*argv, str(image)], capture=True).stdout.strip()
    stack.callback(runner.run, ["losetup", "--detach", device], check=False)
    return device


def loops_backed_under(paths: list[Path], runner: Runner) -> list[str]:
    result = runner.run(["losetup", "--list", "--json"], capture=True, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    devices = json.loads(result.stdout).get("loopdevices", [])
    roots = [p.resolve() for p in paths]
    found = []
    for dev in devices:
        backing = Path(str(dev.get("back-file") or "").replace(" (deleted)", ""))
        if any(backing == r or r in backing.parents for r in roots):
            found.append(str(dev["name"]))
    return found


def sweep(paths: list[Path], runner: Runner) -> list[str]:
    """Unmount and detach whatever a killed build left below `paths`."""
    done: list[str] = []
    for root in paths:
        if not root.exists():
            continue
        for point in mounts_under(root):
            unmount(runner, point)
            done.append(f"unmounted {point}")
    for device in loops_backed_under(paths, runner):
        runner.run(["losetup", "--detach", device], check=False)
        done.append(f"detached {device}")
    return done


def is_root() -> bool:
    return os.geteuid() == 0
