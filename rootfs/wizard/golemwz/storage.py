"""Persistent storage: list partitions, grow `Golem storage` safely, mount it.

Parsing (`lsblk --json`, `sfdisk --json`, sysfs sizes) and planning are pure
functions; the commands go through the runner so tests assert the argv sequence.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from golemwz.config import write_atomically
from golemwz.errors import WizardError
from golemwz.layout import (
    CONF_PARTLABEL,
    GOLEM_STORAGE_PARTLABEL,
    GOLEM_STORAGE_PARTUUID,
    GOLEM_USER,
    ROOT_PARTLABEL,
    STORAGE_SUBDIR,
    SystemLayout,
)
from golemwz.report import Reporter
from golemwz.runner import Runner
from golemwz.termination import GUARD

STORAGE_FILESYSTEMS = ("ext4", "ext3", "xfs", "btrfs")
LSBLK_COLUMNS = "NAME,PATH,TYPE,PKNAME,FSTYPE,LABEL,PARTLABEL,PARTUUID,MOUNTPOINT,SIZE,MODEL"
# sfdisk aligns partition ends to 1 MiB: a gap smaller than that cannot be used.
ALIGNMENT_BYTES = 1024 * 1024
GPT_ENTRIES_BYTES = 128 * 128
E2FSCK_UNCORRECTED = 4  # e2fsck exit status bit: errors left uncorrected
STORAGE_MOUNT_OPTIONS = "nosuid,nodev"
# live-boot mounts a partition holding persistence here (golemwz.updates); it stays
# mounted while the system runs, so the wizard uses it as it is.
LIVE_PERSISTENCE_MOUNTS = "/run/live/persistence/"


def is_live_persistence(mountpoint: str | None) -> bool:
    return (mountpoint or "").startswith(LIVE_PERSISTENCE_MOUNTS)


@dataclass(frozen=True)
class BlockDevice:
    name: str
    path: str
    type: str
    parent: str | None
    fstype: str | None
    label: str | None
    partlabel: str | None
    partuuid: str | None
    mountpoint: str | None
    size: int
    model: str | None = None  # lsblk gives it for disks only

    def title(self) -> str:
        names = [n for n in (self.partlabel, self.label) if n]
        named = f" {' / '.join(dict.fromkeys(names))}" if names else ""
        return f"{self.path}{named} ({self.fstype}, {self.size / 2**30:.1f} GiB)"

    def is_golem_storage(self) -> bool:
        return (self.partuuid or "").lower() == GOLEM_STORAGE_PARTUUID


def parse_lsblk(output: str) -> list[BlockDevice]:
    """Devices from `lsblk --json --list --bytes --output LSBLK_COLUMNS`."""
    devices = []
    for entry in json.loads(output).get("blockdevices", []):
        size = entry.get("size") or 0
        devices.append(BlockDevice(
            name=entry["name"],
            path=entry.get("path") or f"/dev/{entry['name']}",
            type=entry.get("type") or "",
            parent=entry.get("pkname"),
            fstype=entry.get("fstype"),
            label=entry.get("label"),
            partlabel=entry.get("partlabel"),
            partuuid=(entry.get("partuuid") or "").lower() or None,
            mountpoint=entry.get("mountpoint"),
            size=int(size),
            model=(entry.get("model") or "").strip() or None,
        ))
    return devices


def read_block_devices(runner: Runner) -> list[BlockDevice]:
    result = runner.run(["lsblk", "--json", "--list", "--bytes", "--output", LSBLK_COLUMNS])
    return parse_lsblk(result.stdout)


def find_partlabel(devices: list[BlockDevice], partlabel: str) -> BlockDevice | None:
    return next((d for d in devices if d.type == "part" and d.partlabel == partlabel), None)


def find_partuuid(devices: list[BlockDevice], partuuid: str) -> BlockDevice | None:
    return next((d for d in devices if d.partuuid == partuuid.lower()), None)


def find_path(devices: list[BlockDevice], path: str) -> BlockDevice | None:
    """By device path: unlike a PARTUUID, unique when two identical sticks are plugged."""
    return next((d for d in devices if d.path == path), None)


def own_partition(devices: list[BlockDevice], partlabel: str, boot_disk: str | None,
                  reporter: Reporter, partuuid: str | None = None) -> BlockDevice | None:
    """The partition labelled `partlabel` (or with PARTUUID `partuuid`) on the disk
    booted from (see bootdisk).

    Another stick of the same image has the same label: its partition is never
    taken for ours. When the boot disk is unknown, a single match is used; several
    are ambiguous and none is used."""
    matches = [d for d in devices if d.type == "part" and (
        d.partlabel == partlabel or (partuuid is not None and d.partuuid == partuuid))]
    if boot_disk is not None:
        own = [d for d in matches if d.parent == boot_disk]
        for other in (d for d in matches if d.parent != boot_disk):
            reporter.detail(f"'{partlabel}' on {other.path} is not on the disk booted from "
                            f"(/dev/{boot_disk}): not used")
        return own[0] if own else None
    if len(matches) > 1:
        reporter.warn(f"{len(matches)} '{partlabel}' partitions ("
                      + ", ".join(d.path for d in matches) + ") and the disk booted from is "
                      "unknown: none is used; unplug every stick but the one booted from")
        return None
    return matches[0] if matches else None


def storage_candidates(devices: list[BlockDevice], own_mount: Path,
                       boot_disk: str | None = None,
                       reporter: Reporter | None = None) -> list[BlockDevice]:
    """Linux filesystems that may hold the provider's data, the boot disk's `Golem
    storage` first, then the boot disk's other partitions, then other disks'.

    The configuration names a partition by PARTUUID, so of partitions sharing one
    (identical sticks) only the boot disk's is offered; when none of them is on the
    boot disk, none is offered, since a saved choice could not tell them apart."""
    candidates = [
        d for d in devices
        if d.type == "part" and d.fstype in STORAGE_FILESYSTEMS and d.partuuid
        and d.partlabel != ROOT_PARTLABEL
        and (d.mountpoint in (None, str(own_mount))  # never offer /, /boot...
             or is_live_persistence(d.mountpoint))
    ]
    distinct = []
    for candidate in candidates:
        twins = [d for d in candidates if d.partuuid == candidate.partuuid]
        if len(twins) == 1 or candidate.parent == boot_disk:
            distinct.append(candidate)
        elif boot_disk not in {t.parent for t in twins} and reporter is not None:
            reporter.warn(f"{candidate.path} has the same PARTUUID as "
                          + ", ".join(t.path for t in twins if t is not candidate)
                          + " (copies of one image): not offered; unplug the other stick")
    return sorted(distinct, key=lambda d: (d.parent != boot_disk, not d.is_golem_storage(),
                                           d.path))


def disk_title(devices: list[BlockDevice], partition: BlockDevice,
               boot_disk: str | None) -> str:
    """e.g. "SanDisk Ultra, 28.7 GiB, booted from": what tells two sticks apart."""
    disk = next((d for d in devices if d.name == partition.parent), None)
    if disk is None:
        parts = [f"disk /dev/{partition.parent}"]
    else:
        parts = [disk.model or f"disk /dev/{disk.name}", f"{disk.size / 2**30:.1f} GiB"]
    if partition.parent == boot_disk:
        parts.append("booted from")
    return ", ".join(parts)


def storage_choices(candidates: list[BlockDevice], devices: list[BlockDevice],
                    boot_disk: str | None) -> list[tuple[str, str]]:
    """(PARTUUID, title) menu entries; where labels repeat, each names its disk's model
    and size, so "Golem storage" on two sticks are two distinct lines."""
    def label(d: BlockDevice) -> tuple[str | None, str | None]:
        return d.partlabel, d.label

    labels = [label(c) for c in candidates]
    choices = []
    for candidate in candidates:
        title = candidate.title()
        if labels.count(label(candidate)) > 1:
            title += f" on {disk_title(devices, candidate, boot_disk)}"
        choices.append((candidate.partuuid or "", title))
    return choices


def boot_stick_storage(candidates: list[BlockDevice],
                       boot_disk: str | None) -> BlockDevice | None:
    """`Golem storage` of the stick booted from: where an unattended run without
    storage_partition keeps its data (what golem-gpu-imager's non-interactive
    golemwz.toml, which has no storage_partition, means). When the boot disk is
    unknown, only a partition without a twin on another stick (storage_candidates
    drops twins then) can be it."""
    return next((c for c in candidates if c.is_golem_storage()
                 and (boot_disk is None or c.parent == boot_disk)), None)


def may_grow(partition: BlockDevice, boot_disk: str | None, reporter: Reporter) -> bool:
    """Only the booted stick's own `Golem storage` is grown: another stick of the same
    image (same PARTUUID) is somebody else's, chosen or not."""
    if boot_disk is None or partition.parent == boot_disk:
        return True
    reporter.warn(f"{partition.path} is not on the disk booted from (/dev/{boot_disk}): "
                  "used as it is, not grown")
    return False


@dataclass(frozen=True)
class TablePartition:
    node: str
    start: int
    size: int
    uuid: str

    @property
    def number(self) -> int:
        match = re.search(r"(\d+)$", self.node)
        if match is None:
            raise WizardError(f"cannot tell the partition number of {self.node}")
        return int(match.group(1))


@dataclass(frozen=True)
class PartitionTable:
    device: str
    label: str
    last_lba: int
    sector_size: int
    partitions: tuple[TablePartition, ...]


def parse_sfdisk(output: str) -> PartitionTable:
    table = json.loads(output)["partitiontable"]
    return PartitionTable(
        device=table["device"],
        label=table["label"],
        last_lba=int(table.get("lastlba", 0)),
        sector_size=int(table.get("sectorsize", 512)),
        partitions=tuple(
            TablePartition(p["node"], int(p["start"]), int(p["size"]), p.get("uuid", "").lower())
            for p in table.get("partitions", [])
        ),
    )


def disk_size_bytes(sysfs_root: Path, disk_name: str) -> int:
    # sysfs counts 512-byte units whatever the logical sector size.
    return int((sysfs_root / "class/block" / disk_name / "size").read_text().strip()) * 512


@dataclass(frozen=True)
class GrowPlan:
    disk: str
    partition: TablePartition
    relocate_backup_header: bool  # the image was written to a larger disk
    grow_partition: bool


def plan_grow(table: PartitionTable, disk_bytes: int, partuuid: str) -> GrowPlan:
    """What growing `partuuid` to the end of its disk takes; WizardError if unsafe."""
    if table.label != "gpt":
        raise WizardError(f"{table.device} has a {table.label} partition table, not GPT",
                          "Golem storage is grown only on the image's own GPT disk")
    target = next((p for p in table.partitions if p.uuid == partuuid.lower()), None)
    if target is None:
        raise WizardError(f"no partition with PARTUUID {partuuid} on {table.device}")
    if any(p.start > target.start for p in table.partitions):
        raise WizardError(f"{target.node} is not the last partition of {table.device}",
                          "only a last partition can grow; it was left as it is")
    sector = table.sector_size
    disk_sectors = disk_bytes // sector
    backup_area = 1 + math.ceil(GPT_ENTRIES_BYTES / sector)  # header + entries
    usable_last = disk_sectors - 1 - backup_area
    slack = ALIGNMENT_BYTES // sector
    return GrowPlan(
        disk=table.device,
        partition=target,
        relocate_backup_header=table.last_lba < usable_last,
        grow_partition=usable_last - (target.start + target.size - 1) > slack,
    )


def _is_mountpoint(runner: Runner, path: Path) -> bool:
    return runner.run(["mountpoint", "--quiet", str(path)], check=False).returncode == 0


# Below this gap the filesystem counts as filling its partition: resize2fs leaves
# a too-small last block group out (a few MiB), and a stick only slightly larger
# than the image is not worth an e2fsck -f at every boot.
RESIZE_SLACK_BYTES = 32 * 1024 * 1024
# On `Golem conf storage` (FAT, on the same stick): survives power cuts, unlike
# /var/lib on the RAM overlay. Written once, before the first change to the table.
TABLE_BACKUP_NAME = "golemwz-partition-table.sfdisk"


@dataclass(frozen=True)
class Ext4State:
    size_bytes: int | None  # block count x block size from the superblock
    clean: bool


def parse_dumpe2fs(output: str) -> Ext4State:
    """The superblock fields of `dumpe2fs -h` that say whether a resize is done."""
    fields = {}
    for line in output.splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    try:
        size: int | None = int(fields["Block count"]) * int(fields["Block size"])
    except (KeyError, ValueError):
        size = None
    return Ext4State(size_bytes=size, clean=fields.get("Filesystem state") == "clean")


def _settle(runner: Runner, reporter: Reporter) -> None:
    """Let udev finish re-reading a changed table before anyone opens the partition:
    its probe races e2fsck and resize2fs otherwise."""
    if runner.run(["udevadm", "settle", "--timeout=60"], check=False).returncode != 0:
        reporter.detail("udevadm settle timed out; going on")


def _save_table_backup(disk: str, backup_dir: Path | None, layout: SystemLayout,
                       runner: Runner, reporter: Reporter) -> None:
    if backup_dir is None:
        backup_dir = layout.state_dir
        reporter.warn(f"no {CONF_PARTLABEL} partition: the partition table backup is kept "
                      f"in {backup_dir}, which a power cut loses")
    backup = backup_dir / TABLE_BACKUP_NAME
    if backup.exists():  # after an interruption: keep the original table
        return
    dump = runner.run(["sfdisk", "--dump", disk]).stdout.encode()
    try:
        write_atomically(dump, backup)
    except OSError as error:  # a full or read-only conf partition must not stop the grow
        fallback = layout.state_dir / TABLE_BACKUP_NAME
        reporter.warn(f"cannot write {backup} ({error.strerror or error}): the partition "
                      f"table backup is kept in {fallback}, which a power cut loses")
        write_atomically(dump, fallback)
        backup = fallback
    reporter.detail(f"partition table of {disk} saved to {backup}")


def grow_golem_storage(partition: BlockDevice, layout: SystemLayout, runner: Runner,
                       reporter: Reporter, backup_dir: Path | None = None) -> None:
    """Grow `Golem storage` to the end of its disk, resuming an interrupted grow.

    No state is kept in RAM: each step is decided from the disk itself (the GPT for
    the two table steps, the superblock's size against the partition's for the
    filesystem), so a power cut at any step leads the next boot through the rest,
    and a grown stick costs two reads per boot. Each step is a critical section:
    SIGTERM waits for it (see termination). `backup_dir` (the conf partition) keeps
    the original table.
    """
    held = is_live_persistence(partition.mountpoint)  # only ever after a grow: updates.py
    if partition.mountpoint and not held:
        reporter.warn(f"{partition.path} is mounted on {partition.mountpoint}; not growing it now")
        return
    if partition.fstype not in ("ext4", "ext3", "ext2"):
        reporter.warn(f"{partition.path} holds {partition.fstype}, not ext4; not growing it")
        return
    disk = f"/dev/{partition.parent}"
    table = parse_sfdisk(runner.run(["sfdisk", "--json", disk]).stdout)
    try:
        plan = plan_grow(table, disk_size_bytes(layout.sysfs_root, partition.parent or ""),
                         GOLEM_STORAGE_PARTUUID)
    except WizardError as unsafe:
        reporter.warn(f"not growing {GOLEM_STORAGE_PARTLABEL}: {unsafe.line()}")
        return
    table_changed = plan.relocate_backup_header or plan.grow_partition
    name = f"{GOLEM_STORAGE_PARTLABEL} ({partition.path})"
    if held:  # mounted: no e2fsck, no resize2fs; the table is only read
        if table_changed:
            reporter.warn(f"{name} holds this boot's package updates "
                          f"({partition.mountpoint}); not growing it now")
        else:
            reporter.step(f"{name} already reaches the end of {disk}; it holds the "
                          "package updates")
        return
    if table_changed:
        _save_table_backup(disk, backup_dir, layout, runner, reporter)
    # --lock: udev (and anyone else) keeps off the disk while sfdisk writes it.
    if plan.relocate_backup_header:
        with GUARD.critical("moving the backup GPT to the end of the disk"):
            runner.run(["sfdisk", "--lock", "--relocate", "gpt-bak-std", disk])
            _settle(runner, reporter)
    if plan.grow_partition:
        with GUARD.critical(f"growing partition {plan.partition.number} of {disk}"):
            # ",+" keeps the start and takes all the space up to the end of the disk.
            runner.run(["sfdisk", "--lock", "--no-reread", "-N", str(plan.partition.number),
                        disk], input=b",+\n")
            runner.run(["partx", "--update", "--nr", str(plan.partition.number), disk])
            _settle(runner, reporter)
    resized = _fit_filesystem(partition.path, runner, reporter)
    if table_changed:
        reporter.step(f"grew {name} to the end of {disk}")
    elif resized:
        reporter.step(f"{name}: finished an interrupted grow, filesystem resized to the end "
                      f"of {disk}")
    else:
        reporter.step(f"{name} already reaches the end of {disk}; its filesystem fills it")


def _fit_filesystem(device: str, runner: Runner, reporter: Reporter) -> bool:
    """e2fsck + resize2fs when the superblock is smaller than the partition (or not
    clean, or unreadable); True when it ran."""
    state = parse_dumpe2fs(runner.run(["dumpe2fs", "-h", device], check=False).stdout)
    part_bytes = _int_or_none(runner.run(["blockdev", "--getsize64", device],
                                         check=False).stdout)
    if (state.clean and state.size_bytes is not None and part_bytes is not None
            and part_bytes - state.size_bytes < RESIZE_SLACK_BYTES):
        return False
    reporter.detail(f"{device}: filesystem {state.size_bytes} bytes "
                    f"({'clean' if state.clean else 'not clean'}), partition {part_bytes}")
    with GUARD.critical(f"checking and resizing the filesystem on {device}"):
        fsck = runner.run(["e2fsck", "-f", "-p", device], check=False)
        if fsck.returncode >= E2FSCK_UNCORRECTED:
            raise WizardError(
                f"e2fsck found errors it could not fix on {device} (status {fsck.returncode})",
                f"boot with NO AUTOSTART and run: sudo e2fsck {device}")
        runner.run(["resize2fs", device])
    return True


def _int_or_none(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def mount_storage(partition: BlockDevice, layout: SystemLayout, runner: Runner,
                  reporter: Reporter) -> None:
    """Mount the partition and bind its golem-gpu-live directory onto ~golem/.local."""
    mount_dir = layout.storage_mount_dir
    mount_dir.mkdir(parents=True, exist_ok=True)
    if not _is_mountpoint(runner, mount_dir):
        # Data only: a setuid file or device node on a disk from elsewhere gains nothing.
        # The bind mount below inherits these flags.
        runner.run(["mount", "-o", STORAGE_MOUNT_OPTIONS, partition.path, str(mount_dir)])
    data_dir = mount_dir / STORAGE_SUBDIR
    data_dir.mkdir(exist_ok=True)
    runner.run(["chown", f"{GOLEM_USER}:{GOLEM_USER}", str(data_dir)])
    layout.local_dir.mkdir(parents=True, exist_ok=True)
    if not _is_mountpoint(runner, layout.local_dir):
        runner.run(["mount", "--bind", str(data_dir), str(layout.local_dir)])
    reporter.step(f"storage configured: {partition.title()} on {layout.local_dir}")
