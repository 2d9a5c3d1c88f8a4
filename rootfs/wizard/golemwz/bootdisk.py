"""The disk the live system booted from, so the wizard uses that stick's partitions.

Every identifier of the image derives from profile and version, so two sticks of
the same image carry the same partition labels and PARTUUIDs: labels alone cannot
tell the stick booted from (whose conf partition and storage are ours) from
another one plugged in. live-boot mounts its medium on /run/live/medium; that
mount's device number leads, through sysfs, to the partition and its disk.
Pure functions of a mountinfo text and a sysfs tree, so tests build both.
"""

from __future__ import annotations

import os
from pathlib import Path

LIVE_MEDIUM = Path("/run/live/medium")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_device_number(mountinfo: str, mount_point: Path) -> str | None:
    """The "major:minor" of what is mounted on `mount_point` (the last, visible mount)."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        # id parent major:minor root mount-point options ... - fstype source options
        if len(fields) > 4 and _unescape(fields[4]) == str(mount_point):
            found = fields[2]
    return found


def disk_of(sysfs_root: Path, device_number: str) -> str | None:
    """The kernel name of the disk holding block device `device_number` ("8:4" -> "sda").

    /sys/dev/block/MAJ:MIN links to the device's directory; a partition's directory
    has a `partition` file and sits in its disk's directory. A whole-disk medium (an
    ISO written to a stick) is its own disk."""
    link = sysfs_root / "dev/block" / device_number
    if not link.exists():
        return None
    device_dir = Path(os.path.realpath(link))
    if (device_dir / "partition").is_file():
        return device_dir.parent.name
    return device_dir.name


def boot_disk(mountinfo_file: Path, sysfs_root: Path,
              medium: Path = LIVE_MEDIUM) -> str | None:
    """The disk the live medium is on, or None when that cannot be told (not booted by
    live-boot, medium unmounted after `toram`, a medium that is no block device)."""
    try:
        mountinfo = mountinfo_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    number = mount_device_number(mountinfo, medium)
    if number is None or number.startswith("0:"):  # 0:N: no block device (tmpfs, overlay)
        return None
    return disk_of(sysfs_root, number)
