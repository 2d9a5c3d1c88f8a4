"""The USB layout as data: load layout.toml, derive identifiers, place partitions.

Identifiers are never random: the GPT disk GUID, every PARTUUID (except the
fixed one of "Golem storage") and every filesystem UUID derive from the build
seed, so one profile and version always yield byte-identical partition tables
and the bootloader can name the root filesystem before the image exists.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import BuildError

LAYOUT_FILE = Path("disk") / "layout.toml"  # relative to the project root
LAYOUT_PATH = Path(__file__).with_name("layout.toml")  # this checkout's copy
SECTOR_BYTES = 512
MIB = 1024 * 1024
FILESYSTEMS = ("vfat", "ext4", "none")
# A namespace of our own so seeded UUIDs cannot collide with other uuid5 users.
SEED_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/golemfactory/golem-gpu-live")


@dataclass(frozen=True)
class PartitionSpec:
    key: str  # short handle used by the code ("esp", "root", ...)
    name: str  # the GPT PARTLABEL
    type_guid: str
    filesystem: str
    fs_label: str = ""
    size_mib: int | None = None  # None: sized from content
    margin_mib: int = 0
    fat_bits: int | None = None
    partuuid: str | None = None  # fixed PARTUUID; None: derived from the seed


@dataclass(frozen=True)
class Layout:
    alignment_mib: int
    partitions: tuple[PartitionSpec, ...]

    def spec(self, key: str) -> PartitionSpec:
        for part in self.partitions:
            if part.key == key:
                return part
        raise KeyError(f"layout has no partition {key!r}")


def _spec_from_table(table: dict[str, Any]) -> PartitionSpec:
    size = table.get("size_mib")
    if size is None and table.get("size") != "content":
        raise ValueError(f"partition {table.get('name')!r} needs size_mib or size = \"content\"")
    if table["filesystem"] not in FILESYSTEMS:
        raise ValueError(f"partition {table['name']!r}: filesystem must be one of {FILESYSTEMS}")
    partuuid = table.get("partuuid")
    return PartitionSpec(
        key=str(table["key"]),
        name=str(table["name"]),
        type_guid=str(uuid.UUID(table["type"])).upper(),
        filesystem=str(table["filesystem"]),
        fs_label=str(table.get("fs_label", "")),
        size_mib=int(size) if size is not None else None,
        margin_mib=int(table.get("margin_mib", 0)),
        fat_bits=int(table["fat_bits"]) if "fat_bits" in table else None,
        partuuid=str(uuid.UUID(partuuid)) if partuuid else None,
    )


def load_layout(path: Path = LAYOUT_PATH) -> Layout:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
        parts = tuple(_spec_from_table(t) for t in data["partition"])
        layout = Layout(alignment_mib=int(data["disk"]["alignment_mib"]), partitions=parts)
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as err:
        raise BuildError(f"partition layout {path} is invalid: {err}",
                         "compare with the layout.toml in git") from None
    for attr in ("key", "name"):
        values = [getattr(p, attr) for p in parts]
        if len(set(values)) != len(values):
            raise BuildError(f"partition layout {path} repeats a partition {attr}",
                             f"give every partition its own {attr}")
    return layout


def seeded_uuid(seed: str, purpose: str) -> str:
    return str(uuid.uuid5(SEED_NAMESPACE, f"{seed}\0{purpose}"))


def fat_volume_id(seed: str, purpose: str) -> str:
    """The 32-bit FAT serial as 8 hex digits (mkfs.vfat -i); blkid shows it as XXXX-XXXX."""
    return hashlib.sha256(f"{seed}\0{purpose}".encode()).hexdigest()[:8].upper()


@dataclass(frozen=True)
class PartitionIds:
    partuuid: str
    fs_uuid: str  # ext4: a UUID; vfat: the 8-hex-digit volume id; none: ""

    @property
    def blkid_uuid(self) -> str:
        """The filesystem UUID as blkid and GRUB's `search --fs-uuid` spell it."""
        if len(self.fs_uuid) == 8:
            return f"{self.fs_uuid[:4]}-{self.fs_uuid[4:]}"
        return self.fs_uuid


@dataclass(frozen=True)
class DiskIds:
    disk_guid: str
    partitions: Mapping[str, PartitionIds]


def derive_ids(layout: Layout, seed: str) -> DiskIds:
    ids: dict[str, PartitionIds] = {}
    for part in layout.partitions:
        partuuid = part.partuuid or seeded_uuid(seed, f"partuuid/{part.key}")
        if part.filesystem == "vfat":
            fs_uuid = fat_volume_id(seed, f"fs/{part.key}")
        elif part.filesystem == "ext4":
            fs_uuid = seeded_uuid(seed, f"fs/{part.key}")
        else:
            fs_uuid = ""
        ids[part.key] = PartitionIds(partuuid=partuuid, fs_uuid=fs_uuid)
    return DiskIds(disk_guid=seeded_uuid(seed, "disk"), partitions=ids)


@dataclass(frozen=True)
class PlacedPartition:
    spec: PartitionSpec
    ids: PartitionIds
    start_sector: int
    size_sectors: int

    @property
    def offset_bytes(self) -> int:
        return self.start_sector * SECTOR_BYTES

    @property
    def size_bytes(self) -> int:
        return self.size_sectors * SECTOR_BYTES


@dataclass(frozen=True)
class DiskPlan:
    disk_guid: str
    partitions: tuple[PlacedPartition, ...]
    size_bytes: int

    def part(self, key: str) -> PlacedPartition:
        for placed in self.partitions:
            if placed.spec.key == key:
                return placed
        raise KeyError(f"disk plan has no partition {key!r}")

    def sfdisk_script(self) -> str:
        first = self.partitions[0].start_sector
        lines = [
            "label: gpt",
            f"label-id: {self.disk_guid.upper()}",
            "unit: sectors",
            f"first-lba: {first}",
            f"sector-size: {SECTOR_BYTES}",
            "",
        ]
        for placed in self.partitions:
            lines.append(
                f"start={placed.start_sector}, size={placed.size_sectors}, "
                f"type={placed.spec.type_guid}, uuid={placed.ids.partuuid.upper()}, "
                f'name="{placed.spec.name}"')
        return "\n".join(lines) + "\n"


def partition_mib(spec: PartitionSpec, content_bytes: Mapping[str, int]) -> int:
    if spec.size_mib is not None:
        return spec.size_mib
    if spec.key not in content_bytes:
        raise BuildError(f"partition {spec.name!r} is sized from its content, but none was given",
                         "pass its content size to plan_disk")
    return math.ceil(content_bytes[spec.key] / MIB) + spec.margin_mib


def plan_disk(layout: Layout, seed: str, content_bytes: Mapping[str, int]) -> DiskPlan:
    """Place the partitions back to back on alignment boundaries.

    content_bytes gives, for partitions sized from content, the bytes their
    filesystem needs (an estimate including filesystem overhead).
    """
    ids = derive_ids(layout, seed)
    align = layout.alignment_mib * MIB // SECTOR_BYTES
    sector = align  # the primary GPT lives in the first alignment unit
    placed: list[PlacedPartition] = []
    for spec in layout.partitions:
        mib = partition_mib(spec, content_bytes)
        size = math.ceil(mib * MIB / SECTOR_BYTES / align) * align
        placed.append(PlacedPartition(spec, ids.partitions[spec.key], sector, size))
        sector += size
    # One more alignment unit at the end for the backup GPT.
    total_sectors = sector + align
    return DiskPlan(ids.disk_guid, tuple(placed), total_sectors * SECTOR_BYTES)
