"""Two sticks of one image plugged in (issue 10 item 2): only the booted one is used."""

from __future__ import annotations

import json
from pathlib import Path

from golemwz.bootdisk import boot_disk, disk_of, mount_device_number
from golemwz.cli import main
from golemwz.layout import GOLEM_STORAGE_PARTUUID
from golemwz.storage import own_partition, parse_lsblk, storage_candidates, storage_choices
from wizard_fakes import (
    FULL_FIRST_BOOT,
    FakeMachine,
    ScriptedUI,
    image_partitions,
    partition,
    quiet_reporter,
    sfdisk_json,
)

# live-boot's medium is the root filesystem partition (4) of the stick booted from.
MOUNTINFO = """\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/run/live/rootfs/filesystem.squashfs
24 22 8:{minor} / /run/live/medium ro,noatime - ext4 /dev/{disk}4 ro
25 22 0:5 / /dev rw,nosuid - devtmpfs udev rw
"""


def disk_entry(name: str, model: str, size: int) -> dict[str, object]:
    return {"name": name, "path": f"/dev/{name}", "type": "disk", "pkname": None,
            "fstype": None, "label": None, "partlabel": None, "partuuid": None,
            "mountpoint": None, "size": size, "model": model}


def stick(disk: str) -> list[dict[str, object]]:
    """The image's partitions on `disk`: the same labels and PARTUUIDs on every stick."""
    entries = image_partitions()
    for entry in entries:
        number = str(entry["name"])[-1]
        entry.update(name=f"{disk}{number}", path=f"/dev/{disk}{number}", pkname=disk)
    return entries


def two_sticks_lsblk() -> str:
    return json.dumps({"blockdevices": [
        disk_entry("sda", "SanDisk Ultra", 32 * 2**30), *stick("sda"),
        disk_entry("sdb", "Kingston DataTraveler", 64 * 2**30), *stick("sdb"),
    ]})


def add_block_device(sysfs_root: Path, disk: str, number: int | None, minor: int) -> None:
    """/sys/dev/block/8:MINOR -> the device's directory, as the kernel links it."""
    disk_dir = sysfs_root / "devices/pci0000:00/0000:00:14.0/usb1/block" / disk
    device_dir = disk_dir if number is None else disk_dir / f"{disk}{number}"
    device_dir.mkdir(parents=True, exist_ok=True)
    if number is not None:
        (device_dir / "partition").write_text(f"{number}\n")
    link = sysfs_root / "dev/block" / f"8:{minor}"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(device_dir)


def booted_from(machine: FakeMachine, disk: str, minor: int) -> None:
    add_block_device(machine.layout.sysfs_root, disk, 4, minor)
    machine.layout.mountinfo_file.parent.mkdir(parents=True, exist_ok=True)
    machine.layout.mountinfo_file.write_text(MOUNTINFO.format(minor=minor, disk=disk))


def test_boot_disk_from_mountinfo_and_sysfs(tmp_path: Path) -> None:
    sysfs, mountinfo = tmp_path / "sys", tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO.format(minor=20, disk="sdb"))
    assert mount_device_number(mountinfo.read_text(), Path("/run/live/medium")) == "8:20"
    assert boot_disk(mountinfo, sysfs) is None  # no such device in sysfs
    add_block_device(sysfs, "sdb", 4, 20)
    assert boot_disk(mountinfo, sysfs) == "sdb"
    add_block_device(sysfs, "sdc", None, 32)  # an ISO written to a whole stick
    assert disk_of(sysfs, "8:32") == "sdc"
    assert boot_disk(tmp_path / "absent", sysfs) is None
    mountinfo.write_text(MOUNTINFO.replace("/run/live/medium", "/media/x"))
    assert boot_disk(mountinfo, sysfs) is None  # not booted by live-boot


def test_the_wizard_uses_only_the_stick_booted_from(machine: FakeMachine) -> None:
    machine.runner.responses[("lsblk",)] = (0, two_sticks_lsblk())
    storage_sectors = 8 * 2**30 // 512 - 8 * 2**20 - 2048 - 34
    machine.runner.responses[("sfdisk", "--json", "/dev/sdb")] = (
        0, sfdisk_json(storage_sectors).replace("/dev/sda", "/dev/sdb"))
    size = machine.layout.sysfs_root / "class/block/sdb/size"
    size.parent.mkdir(parents=True)
    size.write_text(f"{64 * 2**30 // 512}\n")
    booted_from(machine, "sdb", 20)
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    touched = [argv for argv in machine.runner.argvs
               if any(arg.startswith("/dev/sd") for arg in argv)]
    assert touched and all("/dev/sda" not in " ".join(argv) for argv in touched), touched
    assert ("sfdisk", "--json", "/dev/sdb") in touched
    assert any(argv[:1] == ("mount",) and "/dev/sdb3" in argv for argv in touched)
    assert any(argv[:1] == ("mount",) and "/dev/sdb5" in argv for argv in touched)
    assert any(argv[:1] == ("resize2fs",) and "/dev/sdb5" in argv for argv in touched)


def test_unknown_boot_disk_and_two_conf_partitions_uses_neither() -> None:
    devices = parse_lsblk(two_sticks_lsblk())
    reporter = quiet_reporter()
    assert own_partition(devices, "Golem conf storage", None, reporter) is None
    assert own_partition(devices, "Golem conf storage", "sdb", reporter).path == "/dev/sdb3"


def test_identical_storage_is_offered_once_from_the_boot_disk(tmp_path: Path) -> None:
    devices = parse_lsblk(two_sticks_lsblk())
    on_boot = storage_candidates(devices, tmp_path, "sda", quiet_reporter())
    assert [c.path for c in on_boot] == ["/dev/sda5"]
    # From the ISO (no stick booted): a saved PARTUUID could not tell them apart.
    assert storage_candidates(devices, tmp_path, None, quiet_reporter()) == []


def test_repeated_labels_name_their_disk_model_and_size(tmp_path: Path) -> None:
    data = json.dumps({"blockdevices": [
        disk_entry("sda", "SanDisk Ultra", 32 * 2**30), *stick("sda"),
        disk_entry("nvme0n1", "Samsung SSD 980", 1000 * 2**30),
        partition(1, "data", "ext4", "aaaaaaaa-0000-0000-0000-000000000001", disk="nvme0n1"),
        disk_entry("nvme1n1", "WD Blue SN570", 500 * 2**30),
        partition(1, "data", "ext4", "bbbbbbbb-0000-0000-0000-000000000001", disk="nvme1n1"),
    ]})
    devices = parse_lsblk(data)
    candidates = storage_candidates(devices, tmp_path, "sda", quiet_reporter())
    titles = dict(storage_choices(candidates, devices, "sda"))
    assert titles[GOLEM_STORAGE_PARTUUID] == "/dev/sda5 Golem storage (ext4, 2.0 GiB)"
    assert titles["aaaaaaaa-0000-0000-0000-000000000001"].endswith(
        " on Samsung SSD 980, 1000.0 GiB")
    assert titles["bbbbbbbb-0000-0000-0000-000000000001"].endswith(
        " on WD Blue SN570, 500.0 GiB")
    assert len(set(titles.values())) == 3
