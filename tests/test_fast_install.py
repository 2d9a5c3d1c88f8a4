"""Installing with update-initramfs diverted and dpkg's unsafe io, the initramfs made once."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from builder.chroot import Chroot
from stages.fast_install import (
    DEFERRED_STUB,
    DIVERTED_TO,
    UNSAFE_IO_CONF,
    UPDATE_INITRAMFS,
    deferred_initramfs,
)
from tests.fakes import RecordingRunner

REAL_TOOL = "#!/bin/sh\n# initramfs-tools' update-initramfs\n"


def diverting_runner(root: Path) -> RecordingRunner:
    """chroot dpkg-divert --rename moves the file as dpkg-divert does."""
    runner = RecordingRunner()
    original = root / UPDATE_INITRAMFS.lstrip("/")
    diverted = root / DIVERTED_TO.lstrip("/")

    def divert(argv: tuple[str, ...]) -> None:
        if "--add" in argv and original.exists():
            original.rename(diverted)
        if "--remove" in argv and diverted.exists():
            assert not original.exists(), "the stub must be gone before the rename back"
            diverted.rename(original)

    runner.side_effects[("chroot", str(root), "dpkg-divert")] = divert
    return runner


def chroot_commands(runner: RecordingRunner, root: Path) -> list[tuple[str, ...]]:
    return [argv[2:] for argv in runner.argvs if argv[:2] == ("chroot", str(root))]


def test_the_initramfs_is_generated_once_after_the_install(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    runner = diverting_runner(root)
    seen: dict[str, str] = {}
    with ExitStack() as stack:
        chroot = Chroot(root, runner, stack)
        with deferred_initramfs(chroot, lambda m: seen.setdefault("progress", m)):
            # what the packages bring while the block runs: the kernel, then the tool
            # (dpkg writes a diverted file under its diverted name)
            (root / "usr/lib/modules/6.12.1-amd64").mkdir(parents=True)
            (root / DIVERTED_TO.lstrip("/")).write_text(REAL_TOOL)
            stub = root / UPDATE_INITRAMFS.lstrip("/")
            seen["stub"] = stub.read_text()
            seen["conf"] = (root / UNSAFE_IO_CONF).read_text()
    assert seen["stub"] == DEFERRED_STUB and "force-unsafe-io" in seen["conf"]
    divert = ("dpkg-divert", "--local", "--rename", "--divert", DIVERTED_TO)
    assert chroot_commands(runner, root) == [
        (*divert, "--add", UPDATE_INITRAMFS), (*divert, "--remove", UPDATE_INITRAMFS),
        ("update-initramfs", "-c", "-k", "all")]
    assert (root / UPDATE_INITRAMFS.lstrip("/")).read_text() == REAL_TOOL
    assert not (root / UNSAFE_IO_CONF).exists()
    assert seen["progress"] == "generating the initramfs once for 6.12.1-amd64"


def test_no_initramfs_without_initramfs_tools_or_a_kernel(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    runner = diverting_runner(root)
    with ExitStack() as stack:
        chroot = Chroot(root, runner, stack)
        with deferred_initramfs(chroot, lambda m: None):
            (root / "usr/lib/modules/6.12.1-amd64").mkdir(parents=True)  # no tool
    assert [argv[0] for argv in chroot_commands(runner, root)] == ["dpkg-divert"] * 2
    assert not (root / UPDATE_INITRAMFS.lstrip("/")).exists()


def test_a_failed_install_generates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    runner = diverting_runner(root)
    with ExitStack() as stack, pytest.raises(RuntimeError):
        chroot = Chroot(root, runner, stack)
        with deferred_initramfs(chroot, lambda m: None):
            (root / "usr/lib/modules/6.12.1-amd64").mkdir(parents=True)
            raise RuntimeError("apt-get install failed")
    assert chroot_commands(runner, root) == [
        ("dpkg-divert", "--local", "--rename", "--divert", DIVERTED_TO, "--add",
         UPDATE_INITRAMFS)]
