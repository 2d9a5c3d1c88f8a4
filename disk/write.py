"""Writing an image to a stick: refuse every unsafe target, write, sync, read back.

The checks are pure functions over a system root (`sys/class/block`, `proc/self/
mountinfo`, `proc/swaps`), so tests run them on trees they build as well as on
real loop devices. A target is refused when it is not a whole disk (a partition),
is read-only, is mounted (itself or a partition), carries the running system's
root or swap, or is smaller than the image.

Images: `.img`, `.img.xz` (decompressed while streaming), and either with a
`.bmap` beside it (bmaptool's format): then only the mapped block ranges are
written and each range's sha256 is checked while reading back.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.errors import BuildError

CHUNK = 4 << 20
SECTOR = 512


@dataclass(frozen=True)
class BlockDevice:
    name: str  # sda, loop3, nvme0n1
    number: str  # "MAJOR:MINOR"
    size_bytes: int
    read_only: bool
    is_partition: bool
    model: str
    partitions: tuple[str, ...]  # names of its partitions
    holders: tuple[str, ...]  # dm/md devices stacked on it or its partitions


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def block_device(root: Path, device: Path) -> BlockDevice:
    """What sysfs says of `device` (a /dev path) under the system root `root`."""
    name = device.name
    sys_dir = root / "sys/class/block" / name
    if not sys_dir.exists():
        raise BuildError(f"{device} is not a block device",
                         "name a whole disk such as /dev/sdX (see lsblk)")
    partitions = tuple(sorted(p.name for p in sys_dir.iterdir()
                              if (p / "partition").exists()))
    holders = [h.name for h in (sys_dir / "holders").glob("*")]
    for part in partitions:
        holders += [h.name for h in (sys_dir / part / "holders").glob("*")]
    model = _read(sys_dir / "device/model") or _read(sys_dir / "loop/backing_file")
    return BlockDevice(
        name=name,
        number=_read(sys_dir / "dev"),
        size_bytes=int(_read(sys_dir / "size", "0")) * SECTOR,
        read_only=_read(sys_dir / "ro", "0") == "1",
        is_partition=(sys_dir / "partition").exists(),
        model=model or "unknown model",
        partitions=partitions,
        holders=tuple(sorted(holders)),
    )


def _numbers(root: Path, names: tuple[str, ...]) -> set[str]:
    return {_read(root / "sys/class/block" / n / "dev") for n in names} - {""}


def _mounted_numbers(root: Path) -> dict[str, str]:
    """MAJOR:MINOR -> mount point, for every mount of the system."""
    mounted: dict[str, str] = {}
    for line in _read(root / "proc/self/mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 4:
            mounted.setdefault(fields[2], fields[4])
    return mounted


def _swap_names(root: Path) -> set[str]:
    lines = _read(root / "proc/swaps").splitlines()[1:]
    return {Path(line.split()[0]).name for line in lines if line.split()}


def refusal(root: Path, target: BlockDevice, image_bytes: int) -> str | None:
    """Why `target` must not be written, in one line, or None when it is safe."""
    dev = f"/dev/{target.name}"
    if target.is_partition:
        return f"{dev} is a partition; write the image to the whole disk it belongs to"
    if target.read_only:
        return f"{dev} is read-only (a write-protect switch?)"
    ours = {target.number} | _numbers(root, target.partitions)
    mounts = _mounted_numbers(root)
    if "/" in [mounts[n] for n in ours if n in mounts]:
        return f"{dev} holds the running system's root filesystem"
    if _swap_names(root) & {target.name, *target.partitions}:
        return f"{dev} holds the running system's swap"
    busy = sorted(mounts[n] for n in ours if n in mounts)
    if busy:
        return f"{dev} is mounted at {', '.join(busy)}; unmount it first (umount)"
    if target.holders:
        return f"{dev} is in use by {', '.join(target.holders)} (LVM, RAID or dm-crypt)"
    if target.size_bytes < image_bytes:
        return (f"{dev} holds {target.size_bytes / 2**30:.1f} GiB, the image needs "
                f"{image_bytes / 2**30:.1f} GiB; use a larger stick")
    return None


# --- the image: raw, xz, with or without a block map ------------------------------


@dataclass(frozen=True)
class BlockMap:
    image_bytes: int
    block_size: int
    ranges: tuple[tuple[int, int, str], ...]  # (first block, last block, sha256 or "")


def parse_bmap(text: str) -> BlockMap:
    try:
        root = ElementTree.fromstring(text)
        block_size = int((root.findtext("BlockSize") or "").strip())
        image_bytes = int((root.findtext("ImageSize") or "").strip())
        checksum_type = (root.findtext("ChecksumType") or "sha256").strip()
        if checksum_type != "sha256":
            raise ValueError(f"checksum type {checksum_type} (only sha256 is supported)")
        ranges = []
        for element in root.iter("Range"):
            span = (element.text or "").strip()
            match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", span)
            if not match:
                raise ValueError(f"bad range {span!r}")
            first = int(match.group(1))
            last = int(match.group(2) or first)
            ranges.append((first, last, element.get("chksum", "")))
    except (ElementTree.ParseError, ValueError) as err:
        raise BuildError(f"the block map is not a valid bmap file: {err}",
                         "regenerate it: bmaptool create IMAGE > IMAGE.bmap") from None
    if block_size <= 0 or any(last * block_size >= image_bytes + block_size
                              for _, last, _ in ranges):
        raise BuildError("the block map does not fit its image size",
                         "regenerate it: bmaptool create IMAGE > IMAGE.bmap")
    return BlockMap(image_bytes, block_size, tuple(ranges))


def xz_uncompressed_size(path: Path, run_xz: Callable[[Path], str]) -> int:
    """From `xz --robot --list` (the index holds it; no decompression)."""
    for line in run_xz(path).splitlines():
        fields = line.split("\t")
        if fields[0] == "totals" and len(fields) > 4:
            return int(fields[4])
    raise BuildError(f"{path} is not a valid .xz file", "download the image again")


@dataclass(frozen=True)
class Image:
    path: Path
    size_bytes: int  # uncompressed
    compressed: bool
    bmap: BlockMap | None

    def open(self) -> BinaryIO:
        if self.compressed:
            return lzma.open(self.path, "rb")  # type: ignore[return-value]
        return open(self.path, "rb")

    def extents(self) -> list[tuple[int, int, str]]:
        """Byte ranges to write: (offset, length, expected sha256 or "")."""
        if self.bmap is None:
            return [(0, self.size_bytes, "")]
        size = self.bmap.block_size
        return [(first * size, min((last + 1) * size, self.size_bytes) - first * size, digest)
                for first, last, digest in self.bmap.ranges]


def open_image(path: Path, bmap_path: Path | None,
               run_xz: Callable[[Path], str]) -> Image:
    if not path.is_file():
        raise BuildError(f"no image at {path}", "build it first (make image) or fix the path")
    compressed = path.name.endswith(".xz")
    if not compressed and not path.name.endswith(".img"):
        raise BuildError(f"{path.name} is neither an .img nor an .img.xz",
                         "write the USB image (golem-gpu-live-VERSION.img[.xz])")
    size = xz_uncompressed_size(path, run_xz) if compressed else path.stat().st_size
    if bmap_path is None:  # bmaptool's names: NAME.img.bmap or NAME.bmap
        raw = path.name.removesuffix(".xz")
        beside = [path.with_name(raw + ".bmap"), path.with_name(raw.removesuffix(".img") + ".bmap")]
        bmap_path = next((b for b in beside if b.is_file()), None)
    bmap = None
    if bmap_path is not None:
        try:
            bmap = parse_bmap(bmap_path.read_text())
        except OSError as err:
            raise BuildError(f"cannot read the block map {bmap_path}: {err.strerror}",
                             "fix the path or leave --bmap out") from None
        if bmap.image_bytes != size:
            raise BuildError(f"the block map {bmap_path.name} is for a {bmap.image_bytes}-byte "
                             f"image, {path.name} has {size} bytes",
                             "use the .bmap made with this image")
    return Image(path, size, compressed, bmap)


# --- writing and reading back -----------------------------------------------------


def _chunks(source: BinaryIO, offset: int, length: int, sequential: bool) -> Iterator[bytes]:
    if not sequential:
        source.seek(offset)
    remaining = length
    while remaining:
        block = source.read(min(CHUNK, remaining))
        if not block:
            raise BuildError("the image ended early (truncated download?)",
                             "download or build the image again")
        remaining -= len(block)
        yield block


def write_image(image: Image, device: Path, progress: Callable[[int], None]) -> list[str]:
    """Write every extent, fsync; return the sha256 of each extent as written."""
    digests = []
    with image.open() as source, open(device, "r+b", buffering=0) as target:
        position = 0
        for offset, length, _ in image.extents():
            if image.compressed:  # xz streams only forward: skip the holes by reading
                for _ in _chunks(source, position, offset - position, True):
                    pass
            digest = hashlib.sha256()
            target.seek(offset)
            for block in _chunks(source, offset, length, image.compressed):
                target.write(block)
                digest.update(block)
                progress(len(block))
            position = offset + length
            digests.append(digest.hexdigest())
        os.fsync(target.fileno())
    return digests


def verify_device(image: Image, device: Path, written: list[str],
                  progress: Callable[[int], None]) -> None:
    """Read every extent back from the device (after dropping its cache) and compare."""
    with open(device, "rb") as target:
        try:
            os.posix_fadvise(target.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # not every device supports it; the comparison still runs
        for (offset, length, expected), wrote in zip(image.extents(), written, strict=True):
            digest = hashlib.sha256()
            for block in _chunks(target, offset, length, False):
                digest.update(block)
                progress(len(block))
            got = digest.hexdigest()
            if expected and wrote != expected:
                raise BuildError(f"the image differs from its block map at byte {offset}",
                                 "the image or its .bmap is damaged; download both again")
            if got != wrote:
                raise BuildError(f"reading {device} back gave different data at byte {offset}",
                                 "the stick may be failing; try another one")
