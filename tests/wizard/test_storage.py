"""Partition listing, the safe grow of `Golem storage`, and the mounts."""

from __future__ import annotations

from pathlib import Path

import pytest
from golemwz.errors import WizardError
from golemwz.layout import GOLEM_STORAGE_PARTUUID, SystemLayout
from golemwz.storage import (
    BlockDevice,
    find_partlabel,
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
