"""Growing `Golem storage` survives power cuts and SIGTERM (issue 10 items 7 and 8).

A stateful fake disk answers sfdisk, dumpe2fs, blockdev... from its GPT and
superblock, so a "power cut" can stop the grow before or after any command and a
"reboot" (the RAM overlay gone, the disk and the conf partition kept) runs it again.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from golemwz.cli import main
from golemwz.errors import CommandFailed, WizardError
from golemwz.layout import SystemLayout
from golemwz.runner import CommandResult
from golemwz.storage import (
    TABLE_BACKUP_NAME,
    find_partlabel,
    grow_golem_storage,
    parse_lsblk,
)
from golemwz.termination import GUARD, Terminated
from wizard_fakes import (
    FULL_FIRST_BOOT,
    IMAGE_SECTORS,
    FakeMachine,
    ScriptedUI,
    image_partitions,
    lsblk_json,
    quiet_reporter,
    sfdisk_json,
)

STICK_BYTES = 32 * 2**30
STICK_SECTORS = STICK_BYTES // 512
STORAGE_START = 8 * 2**20
BUILT_SECTORS = IMAGE_SECTORS - STORAGE_START - 2048 - 34
GROWN_SECTORS = (STICK_SECTORS - 33) // 2048 * 2048 - STORAGE_START
BLOCK = 4096
WRITES = ("sfdisk --lock --relocate", "sfdisk --lock --no-reread", "partx", "e2fsck",
          "resize2fs")


class PowerCut(BaseException):
    pass


@dataclass
class FakeDisk:
    """The stick: its GPT, the kernel's idea of partition 5, the ext4 superblock."""

    relocated: bool = False
    grown: bool = False
    kernel_sectors: int = BUILT_SECTORS
    fs_bytes: int = BUILT_SECTORS * 512 // BLOCK * BLOCK
    fs_clean: bool = True

    def reboot(self) -> None:
        self.kernel_sectors = GROWN_SECTORS if self.grown else BUILT_SECTORS


@dataclass
class DiskRunner:
    disk: FakeDisk
    cut_at: int | None = None  # the index of the writing command to cut at
    cut_after: bool = False  # ...after it took effect, or before
    on_command: Mapping[str, object] = field(default_factory=dict)
    argvs: list[tuple[str, ...]] = field(default_factory=list)
    writes: int = 0

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            env: Mapping[str, str] | None = None, check: bool = True) -> CommandResult:
        args = tuple(argv)
        self.argvs.append(args)
        line = " ".join(args)
        writing = any(line.startswith(w) for w in WRITES)
        if writing and self.writes == self.cut_at and not self.cut_after:
            raise PowerCut(line)
        out, code = self.effect(args, input)
        for prefix, action in self.on_command.items():
            if line.startswith(prefix):
                action()  # type: ignore[operator]
        if writing:
            if self.writes == self.cut_at:
                raise PowerCut(line)
            self.writes += 1
        if check and code:
            raise CommandFailed(args, code, out)
        return CommandResult(args, code, out)

    def effect(self, args: tuple[str, ...], input: bytes | None) -> tuple[str, int]:
        disk = self.disk
        line = " ".join(args)
        if line.startswith("sfdisk --json"):
            last_lba = STICK_SECTORS - 34 if disk.relocated else IMAGE_SECTORS - 34
            return sfdisk_json(GROWN_SECTORS if disk.grown else BUILT_SECTORS, last_lba), 0
        if line.startswith("sfdisk --dump"):
            return ("original table\n" if not (disk.relocated or disk.grown)
                    else "changed table\n"), 0
        if line.startswith("sfdisk --lock --relocate"):
            disk.relocated = True
        elif line.startswith("sfdisk --lock --no-reread -N 5"):
            assert input == b",+\n"
            disk.grown = True
        elif line.startswith("partx --update"):
            disk.kernel_sectors = GROWN_SECTORS if disk.grown else BUILT_SECTORS
        elif line.startswith("dumpe2fs -h"):
            state = "clean" if disk.fs_clean else "not clean"
            return (f"Filesystem state:         {state}\nBlock count:              "
                    f"{disk.fs_bytes // BLOCK}\nBlock size:               {BLOCK}\n"), 0
        elif line.startswith("blockdev --getsize64"):
            return f"{disk.kernel_sectors * 512}\n", 0
        elif line.startswith("e2fsck"):
            disk.fs_clean = True
        elif line.startswith("resize2fs"):
            assert disk.fs_clean, "resize2fs needs a checked filesystem"
            # resize2fs leaves a too-small last group out: not the whole partition.
            disk.fs_bytes = (disk.kernel_sectors * 512 // BLOCK - 300) * BLOCK
        return "", 0


@pytest.fixture
def layout(tmp_path: Path) -> SystemLayout:
    layout = SystemLayout.under(tmp_path)
    size_file = layout.sysfs_root / "class/block/sda/size"
    size_file.parent.mkdir(parents=True)
    size_file.write_text(f"{STICK_SECTORS}\n")
    layout.conf_mount_dir.mkdir(parents=True)
    return layout


def golem_storage():
    found = find_partlabel(parse_lsblk(lsblk_json(*image_partitions())), "Golem storage")
    assert found is not None
    return found


def boot(disk: FakeDisk, layout: SystemLayout, **cut: object) -> DiskRunner:
    """One boot's grow; the RAM overlay (state_dir) is gone first, as after a reboot."""
    shutil.rmtree(layout.state_dir, ignore_errors=True)
    disk.reboot()
    runner = DiskRunner(disk, **cut)  # type: ignore[arg-type]
    grow_golem_storage(golem_storage(), layout, runner, quiet_reporter(),
                       layout.conf_mount_dir)
    return runner


def assert_fully_grown(disk: FakeDisk) -> None:
    assert disk.relocated and disk.grown and disk.fs_clean
    assert disk.fs_bytes >= GROWN_SECTORS * 512 - 32 * 2**20


def test_item8_table_writes_lock_the_disk_and_settle_before_the_filesystem(
        layout: SystemLayout) -> None:
    runner = boot(FakeDisk(), layout)
    assert runner.argvs == [
        ("sfdisk", "--json", "/dev/sda"),
        ("sfdisk", "--dump", "/dev/sda"),
        ("sfdisk", "--lock", "--relocate", "gpt-bak-std", "/dev/sda"),
        ("udevadm", "settle", "--timeout=60"),
        ("sfdisk", "--lock", "--no-reread", "-N", "5", "/dev/sda"),
        ("partx", "--update", "--nr", "5", "/dev/sda"),
        ("udevadm", "settle", "--timeout=60"),
        ("dumpe2fs", "-h", "/dev/sda5"),
        ("blockdev", "--getsize64", "/dev/sda5"),
        ("e2fsck", "-f", "-p", "/dev/sda5"),
        ("resize2fs", "/dev/sda5"),
    ]


@pytest.mark.parametrize("cut_after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("cut_at", range(5), ids=["relocate", "grow", "partx", "e2fsck",
                                                   "resize2fs"])
def test_item7_a_power_cut_at_any_step_is_completed_by_the_next_boot(
        layout: SystemLayout, cut_at: int, cut_after: bool) -> None:
    disk = FakeDisk()
    if cut_at == 4 and not cut_after:
        # Cut in the middle of resize2fs: the superblock is not marked clean.
        def half_resized() -> None:
            disk.fs_clean = False
        with pytest.raises(PowerCut):
            boot(disk, layout, cut_at=cut_at, cut_after=True,
                 on_command={"resize2fs": half_resized})
    else:
        with pytest.raises(PowerCut):
            boot(disk, layout, cut_at=cut_at, cut_after=cut_after)
    backup = layout.conf_mount_dir / TABLE_BACKUP_NAME
    assert backup.read_text() == "original table\n"  # on the conf partition: kept
    boot(disk, layout)
    assert_fully_grown(disk)
    assert backup.read_text() == "original table\n"


def test_item7_a_grown_stick_is_not_checked_again_at_every_boot(layout: SystemLayout) -> None:
    disk = FakeDisk()
    boot(disk, layout)
    later = boot(disk, layout)
    assert later.argvs == [("sfdisk", "--json", "/dev/sda"), ("dumpe2fs", "-h", "/dev/sda5"),
                           ("blockdev", "--getsize64", "/dev/sda5")]


def test_item7_a_filesystem_left_not_clean_is_checked_and_resized(layout: SystemLayout) -> None:
    disk = FakeDisk()
    boot(disk, layout)
    disk.fs_clean = False
    again = boot(disk, layout)
    assert ("e2fsck", "-f", "-p", "/dev/sda5") in again.argvs


class FsckFails(DiskRunner):
    def effect(self, args: tuple[str, ...], input: bytes | None) -> tuple[str, int]:
        return ("", 4) if args[0] == "e2fsck" else super().effect(args, input)


def test_item7_uncorrectable_fsck_stops_before_resize(layout: SystemLayout) -> None:
    runner = FsckFails(FakeDisk())
    with pytest.raises(WizardError, match="e2fsck found errors"):
        grow_golem_storage(golem_storage(), layout, runner, quiet_reporter(),
                           layout.conf_mount_dir)
    assert not [a for a in runner.argvs if a[0] == "resize2fs"]


def test_item7_sigterm_during_a_step_lets_it_finish_then_stops(layout: SystemLayout) -> None:
    disk = FakeDisk()
    restore = GUARD.install()
    try:
        with pytest.raises(Terminated) as stopped:
            boot(disk, layout, on_command={
                "sfdisk --lock --relocate": lambda: GUARD.handle(signal.SIGTERM)})
    finally:
        restore()
    assert "after finishing: moving the backup GPT" in stopped.value.line()
    assert disk.relocated and not disk.grown  # the step done, the next one not begun
    boot(disk, layout)
    assert_fully_grown(disk)


def test_item7_sigterm_outside_a_step_stops_at_once() -> None:
    restore = GUARD.install()
    try:
        with pytest.raises(Terminated):
            GUARD.handle(signal.SIGTERM)
    finally:
        restore()


def test_item7_sigterm_at_boot_exits_143_with_one_line_and_closes_the_conf_partition(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    machine.runner.side_effects[("resize2fs",)] = lambda argv: os.kill(os.getpid(),
                                                                       signal.SIGTERM)
    previous = signal.getsignal(signal.SIGTERM)
    assert main([], machine.services(ScriptedUI())) == 143
    assert signal.getsignal(signal.SIGTERM) == previous  # put back
    last = machine.console_lines()[-1]
    assert last.startswith("golemwz: stopped by SIGTERM after finishing: checking and "
                           "resizing the filesystem on /dev/sda5")
    argvs = machine.runner.argvs
    assert argvs[-1] == ("umount", str(machine.layout.conf_mount_dir))
    assert machine.runner.matching("chpasswd") == []  # no further step ran
    assert machine.layout.first_boot_config.exists()  # read again at the next boot


def test_item7_an_unwritable_conf_partition_keeps_the_backup_in_ram_and_grows(
        layout: SystemLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    from golemwz import storage

    real_write = storage.write_atomically

    def full_fat(data: bytes, path: Path) -> None:
        if layout.conf_mount_dir in path.parents:
            raise OSError(28, "No space left on device")
        real_write(data, path)

    monkeypatch.setattr(storage, "write_atomically", full_fat)
    disk = FakeDisk()
    grow_golem_storage(golem_storage(), layout, DiskRunner(disk), quiet_reporter(),
                       layout.conf_mount_dir)
    assert_fully_grown(disk)
    assert (layout.state_dir / TABLE_BACKUP_NAME).read_text() == "original table\n"
