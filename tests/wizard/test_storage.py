"""Partition listing, the safe grow of `Golem storage`, and the mounts."""

from __future__ import annotations

from pathlib import Path

import pytest
from golemwz.errors import WizardError
from golemwz.layout import GOLEM_STORAGE_PARTUUID, SystemLayout
from golemwz.storage import (
    BlockDevice,
    find_partlabel,
    grow_golem_storage,
    grow_marker,
    mount_storage,
    parse_lsblk,
    parse_sfdisk,
    plan_grow,
    storage_candidates,
)
from wizard_fakes import (
    IMAGE_SECTORS,
    RecordingRunner,
    image_partitions,
    lsblk_json,
    partition,
    quiet_reporter,
    sfdisk_json,
)

STORAGE_SECTORS = IMAGE_SECTORS - 8 * 2**20 - 2048 - 34  # as built: up to the image's end
STICK_BYTES = 32 * 2**30
STICK_SECTORS = STICK_BYTES // 512
STORAGE_START = 8 * 2**20


def grown_by_sfdisk() -> int:
    """The size sfdisk gives with ",+": up to the last 1 MiB boundary before the backup GPT."""
    aligned_end = (STICK_SECTORS - 33) // 2048 * 2048 - 1
    return aligned_end - STORAGE_START + 1


@pytest.fixture
def layout(tmp_path: Path) -> SystemLayout:
    layout = SystemLayout.under(tmp_path)
    size_file = layout.sysfs_root / "class/block/sda/size"
    size_file.parent.mkdir(parents=True)
    size_file.write_text(f"{STICK_BYTES // 512}\n")
    return layout


def golem_storage(mountpoint: str | None = None) -> BlockDevice:
    devices = parse_lsblk(lsblk_json(*image_partitions(mountpoint)))
    found = find_partlabel(devices, "Golem storage")
    assert found is not None
    return found


def test_candidates_list_linux_filesystems_with_golem_storage_first(tmp_path: Path) -> None:
    devices = parse_lsblk(lsblk_json(
        partition(1, "data", "xfs", "aaaaaaaa-0000-0000-0000-000000000001", disk="nvme0n1"),
        *image_partitions(),
        partition(2, None, "ntfs", "aaaaaaaa-0000-0000-0000-000000000002", disk="nvme0n1"),
        partition(3, None, "btrfs", "aaaaaaaa-0000-0000-0000-000000000003", label="big",
                  mountpoint="/srv", disk="nvme0n1"),
    ))
    candidates = storage_candidates(devices, tmp_path / "mnt")
    assert [c.path for c in candidates] == ["/dev/sda5", "/dev/nvme0n11"]
    assert candidates[0].title() == "/dev/sda5 Golem storage (ext4, 2.0 GiB)"


def test_plan_for_an_image_written_to_a_larger_stick() -> None:
    plan = plan_grow(parse_sfdisk(sfdisk_json(STORAGE_SECTORS)), STICK_BYTES,
                     GOLEM_STORAGE_PARTUUID)
    assert plan.relocate_backup_header and plan.grow_partition
    assert plan.partition.number == 5


def test_plan_after_the_table_was_grown_only_resizes() -> None:
    plan = plan_grow(parse_sfdisk(sfdisk_json(grown_by_sfdisk(), last_lba=STICK_SECTORS - 34)),
                     STICK_BYTES, GOLEM_STORAGE_PARTUUID)
    assert not plan.relocate_backup_header and not plan.grow_partition


def test_plan_refuses_a_partition_that_is_not_last() -> None:
    table = parse_sfdisk(sfdisk_json(STORAGE_SECTORS).replace('"start": 2048,',
                                                               '"start": 99999999,', 1))
    with pytest.raises(WizardError, match="not the last partition"):
        plan_grow(table, STICK_BYTES, GOLEM_STORAGE_PARTUUID)


def grow_runner(storage_sectors: int, last_lba: int = IMAGE_SECTORS - 34,
                fsck_status: int = 0) -> RecordingRunner:
    return RecordingRunner(responses={
        ("sfdisk", "--json"): (0, sfdisk_json(storage_sectors, last_lba)),
        ("sfdisk", "--dump"): (0, "label: gpt\n"),
        ("e2fsck",): (fsck_status, ""),
    })


def test_grow_sequence_backs_up_relocates_grows_checks_resizes(layout: SystemLayout) -> None:
    runner = grow_runner(STORAGE_SECTORS)
    grow_golem_storage(golem_storage(), layout, runner, quiet_reporter())
    assert runner.argvs == [
        ("sfdisk", "--json", "/dev/sda"),
        ("sfdisk", "--dump", "/dev/sda"),
        ("sfdisk", "--relocate", "gpt-bak-std", "/dev/sda"),
        ("sfdisk", "--no-reread", "-N", "5", "/dev/sda"),
        ("partx", "--update", "--nr", "5", "/dev/sda"),
        ("e2fsck", "-f", "-p", "/dev/sda5"),
        ("resize2fs", "/dev/sda5"),
    ]
    assert runner.calls[3].input == b",+\n"
    assert (layout.state_dir / "sda-partition-table.sfdisk").read_text() == "label: gpt\n"
    assert grow_marker(layout).exists()


def test_interrupted_grow_resumes_without_touching_the_table_again(
        layout: SystemLayout) -> None:
    (layout.state_dir).mkdir(parents=True)
    original_backup = layout.state_dir / "sda-partition-table.sfdisk"
    original_backup.write_text("the original table\n")
    # Power was cut after sfdisk -N: the table is grown, the filesystem is not, no marker.
    runner = grow_runner(grown_by_sfdisk(), last_lba=STICK_SECTORS - 34)
    grow_golem_storage(golem_storage(), layout, runner, quiet_reporter())
    assert runner.argvs == [
        ("sfdisk", "--json", "/dev/sda"),
        ("e2fsck", "-f", "-p", "/dev/sda5"),
        ("resize2fs", "/dev/sda5"),
    ]
    assert original_backup.read_text() == "the original table\n"
    assert grow_marker(layout).exists()
    again = grow_runner(STORAGE_SECTORS)
    grow_golem_storage(golem_storage(), layout, again, quiet_reporter())
    assert again.argvs == []  # the marker says it is done


def test_uncorrectable_fsck_stops_before_resize_and_writes_no_marker(
        layout: SystemLayout) -> None:
    runner = grow_runner(STORAGE_SECTORS, fsck_status=4)
    with pytest.raises(WizardError, match="e2fsck found errors"):
        grow_golem_storage(golem_storage(), layout, runner, quiet_reporter())
    assert runner.matching("resize2fs") == []
    assert not grow_marker(layout).exists()


def test_corrected_fsck_goes_on(layout: SystemLayout) -> None:
    runner = grow_runner(STORAGE_SECTORS, fsck_status=1)
    grow_golem_storage(golem_storage(), layout, runner, quiet_reporter())
    assert runner.matching("resize2fs") == [("resize2fs", "/dev/sda5")]


def test_mounted_storage_is_not_grown(layout: SystemLayout) -> None:
    runner = grow_runner(STORAGE_SECTORS)
    grow_golem_storage(golem_storage("/mnt/x"), layout, runner, quiet_reporter())
    assert runner.argvs == []
    assert not grow_marker(layout).exists()


def test_mount_storage_binds_its_directory_onto_local(layout: SystemLayout) -> None:
    runner = RecordingRunner(responses={("mountpoint",): (1, "")})
    mount_storage(golem_storage(), layout, runner, quiet_reporter())
    mount_dir, local = str(layout.storage_mount_dir), str(layout.local_dir)
    assert [a for a in runner.argvs if a[0] != "mountpoint"] == [
        ("mount", "-o", "nosuid,nodev", "/dev/sda5", mount_dir),
        ("chown", "golem:golem", f"{mount_dir}/golem-gpu-live"),
        ("mount", "--bind", f"{mount_dir}/golem-gpu-live", local),
    ]


def test_mount_storage_twice_mounts_nothing_again(layout: SystemLayout) -> None:
    runner = RecordingRunner(responses={("mountpoint",): (0, "")})
    mount_storage(golem_storage(), layout, runner, quiet_reporter())
    assert runner.matching("mount") == []


def test_a_later_boot_finds_storage_grown_and_does_not_claim_to_grow_it(
        layout: SystemLayout) -> None:
    """On the live system the marker is in RAM: the next boot plans again, changes nothing."""
    runner = grow_runner(grown_by_sfdisk(), last_lba=STICK_SECTORS - 34)
    console = layout.golem_home / "console"
    layout.golem_home.mkdir(parents=True)
    grow_golem_storage(golem_storage(), layout, runner, quiet_reporter(console=console))
    assert runner.matching("sfdisk", "--relocate") == []
    assert runner.matching("sfdisk", "--no-reread") == []
    assert console.read_text().splitlines() == [
        "golemwz: Golem storage (/dev/sda5) already reaches the end of /dev/sda; "
        "filesystem checked and sized to it"]
