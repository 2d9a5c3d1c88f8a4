"""What each stage does so that two builds give the same bytes: dates from
SOURCE_DATE_EPOCH (or the archive's date inside the chroot), no caches of inode data."""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest

from apt_repo.archive_state import ARCHIVE_DATE
from builder.config import BuildConfig, make_config
from builder.stage import StageContext
from stages.iso import IsoStage
from stages.packages import PackagesStage, remove_build_secrets
from stages.shared import ARCHIVE_EPOCH_FILE
from stages.squashfs import BaseSquashfsStage, SquashfsStage
from tests.fakes import RecordingRunner

EPOCH = 1700000000


@pytest.fixture
def config(fake_project: Path, tmp_path: Path) -> BuildConfig:
    return make_config(fake_project, "gpu-node", "1.0", tmp_path / "t", tmp_path / "w",
                       source_date_epoch=EPOCH)


def context(config: BuildConfig, output: Path, runner: RecordingRunner, stack: ExitStack,
            resolved: dict[str, str] | None = None, **inputs: Path) -> StageContext:
    output.mkdir(parents=True, exist_ok=True)
    return StageContext(config, output, inputs, runner, stack, output / "log",
                        lambda m: None, resolved or {})


def test_squashfs_dates_every_inode_and_its_outputs(config: BuildConfig, tmp_path: Path) -> None:
    """The packages layer by the archive's date (the chroot's), the top layer by the
    build's SOURCE_DATE_EPOCH."""
    packages = tmp_path / "packages"
    root = packages / "rootfs"
    (root / "boot").mkdir(parents=True)
    (root / "boot/vmlinuz-6.12").write_text("k")
    (root / "boot/initrd.img-6.12").write_text("i")
    (packages / ARCHIVE_EPOCH_FILE).write_text(f"{EPOCH - 100}\n")
    overlay = tmp_path / "overlay/rootfs"
    shutil.copytree(root, overlay, copy_function=os.link)
    runner = RecordingRunner()
    runner.side_effects[("mksquashfs",)] = lambda argv: Path(argv[2]).write_text("sq")
    with ExitStack() as stack:
        BaseSquashfsStage().run(context(config, tmp_path / "base", runner, stack,
                                        packages=packages))
        SquashfsStage().run(context(config, tmp_path / "out", runner, stack,
                                    packages=packages, overlay=overlay.parent,
                                    **{"squashfs-base": tmp_path / "base"}))
    base_argv, top_argv = runner.argvs
    for argv, epoch in ((base_argv, EPOCH - 100), (top_argv, EPOCH)):
        assert argv[argv.index("-mkfs-time") + 1] == argv[argv.index("-all-time") + 1] \
            == str(epoch)
    for path in (tmp_path / "out/live").iterdir():
        from_base = path.name in ("vmlinuz", "initrd.img", "filesystem.squashfs")
        assert path.stat().st_mtime == (EPOCH - 100 if from_base else EPOCH), path.name
    # The ISO and the USB image record the directory's own time too.
    assert (tmp_path / "out/live").stat().st_mtime == EPOCH
    assert "source_date_epoch" in SquashfsStage.config_keys


def test_xorriso_gets_source_date_epoch(config: BuildConfig, tmp_path: Path) -> None:
    squashfs = tmp_path / "squashfs/live"
    squashfs.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        (squashfs / name).write_text(name)
    runner = RecordingRunner()
    with ExitStack() as stack:
        IsoStage().run(context(config, tmp_path / "out", runner, stack,
                               squashfs=squashfs.parent, bootloader=tmp_path / "boot"))
    assert runner.calls[0].argv[0] == "xorriso"
    assert runner.calls[0].env == {"SOURCE_DATE_EPOCH": str(EPOCH)}


def test_commands_in_the_chroot_are_dated_by_the_archive(config: BuildConfig,
                                                         tmp_path: Path) -> None:
    runner = RecordingRunner(responses={("chroot",): (0, "")})

    def fake_copy(argv: tuple[str, ...]) -> None:
        for sub in ("etc/apt", "etc/ssh", "usr/sbin", "var/lib/apt/lists"):
            (Path(argv[-1]) / sub).mkdir(parents=True, exist_ok=True)

    runner.side_effects[("cp",)] = fake_copy
    with ExitStack() as stack:
        PackagesStage().run(context(config, tmp_path / "out", runner, stack,
                                    {ARCHIVE_DATE: "1796155865"}, bootstrap=tmp_path / "b"))
    inside = [c for c in runner.calls if c.argv[0] == "chroot"]
    assert inside and all((c.env or {}).get("SOURCE_DATE_EPOCH") == "1796155865"
                          for c in inside)


def test_caches_of_inode_data_and_shadow_backups_are_removed(tmp_path: Path) -> None:
    for name in ("var/cache/ldconfig/aux-cache", "etc/shadow-", "etc/passwd-", "etc/shadow",
                 "etc/ssh/ssh_host_rsa_key", "var/lib/dbus/machine-id", "etc/machine-id"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    remove_build_secrets(tmp_path)
    assert not (tmp_path / "var/cache/ldconfig/aux-cache").exists()
    assert not (tmp_path / "etc/shadow-").exists() and not (tmp_path / "etc/passwd-").exists()
    assert (tmp_path / "etc/shadow").exists()
