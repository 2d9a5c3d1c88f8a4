"""Build the USB disk image without mounting anything.

Each filesystem is made in its own image file (mtools for FAT, `mkfs.ext4 -d`
for ext4), the partition table is written by sfdisk straight onto the image
file, and the partition images are copied into place at their offsets with
holes preserved, so a mostly empty disk stays mostly unallocated.

BIOS boot needs no loop device either: GRUB's boot.img (MBR code) and the
i386-pc core.img (in the BIOS boot partition) only need two sector addresses
patched in, which is all `grub-bios-setup` does for a GPT disk with a BIOS
boot partition.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from builder.errors import BuildError
from builder.runner import Runner
from disk.layout import MIB, SECTOR_BYTES, DiskPlan, PartitionIds, PartitionSpec

# mtools refuses images whose geometry it finds odd unless told not to check.
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}
EXT4_BLOCK = 4096

# Offsets in GRUB's i386-pc boot.img (include/grub/i386/pc/boot.h).
BOOT_KERNEL_SECTOR = 0x5C  # u64: LBA of the first sector of core.img
BOOT_DRIVE = 0x64  # u8: 0xff = use the drive the BIOS passed in DL
BOOT_DRIVE_CHECK = 0x66  # a 2-byte jmp grub-bios-setup turns into two NOPs
MBR_KEEP_START = 0x1B8  # disk signature and partition table: kept from the disk
MBR_KEEP_END = 0x1FE
# diskboot.img (the first sector of core.img) ends with a blocklist entry:
# u64 start sector, u16 sector count, u16 load segment.
BLOCKLIST_OFFSET = SECTOR_BYTES - 12


def fat_directories(destinations: list[str]) -> list[str]:
    """Every directory (parents first) that must exist for the given file paths."""
    dirs: list[str] = []
    for dest in destinations:
        for parent in reversed(PurePosixPath(dest).parents):
            text = str(parent)
            if text not in ("/", ".") and text not in dirs:
                dirs.append(text)
    return dirs


def clamp_times(root: Path, epoch: int) -> None:
    """Give `root` and everything below it the time `epoch` (atime and mtime, links not
    followed): filesystem builders copy these times into the image."""
    paths = [*root.rglob("*"), root] if root.is_dir() else [root]
    # Deepest first: listing a directory (rglob) moves its atime, so each is set after
    # everything below it has been listed.
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def make_fat_image(runner: Runner, image: Path, spec: PartitionSpec, volume_id: str,
                   size_bytes: int, files: Mapping[str, Path], epoch: int) -> None:
    """Create a FAT filesystem image holding `files` (destination path -> source), every
    entry dated `epoch` (mtools takes SOURCE_DATE_EPOCH when not told to keep times)."""
    if image.exists():
        image.unlink()  # mkfs.vfat -C refuses to overwrite
    # --invariant pins the time-based fields so the image is reproducible; it
    # also sets a fixed volume id, so -i must come after it to win.
    argv: list[str | os.PathLike[str]] = ["mkfs.vfat", "-C", "--invariant", "-i", volume_id]
    if spec.fat_bits:
        argv += ["-F", str(spec.fat_bits)]
    if spec.fs_label:
        argv += ["-n", spec.fs_label]
    argv += [image, str(size_bytes // 1024)]
    runner.run(argv)
    env = {**MTOOLS_ENV, "SOURCE_DATE_EPOCH": str(epoch)}
    for directory in fat_directories(list(files)):
        runner.run(["mmd", "-i", image, f"::{directory}"], env=env)
    for dest, source in files.items():
        runner.run(["mcopy", "-i", image, source, f"::{dest}"], env=env)


def fat_image_bytes(files: Mapping[str, Path], slack_mib: int = 2) -> int:
    """A FAT size (whole MiB) with room for `files` plus the FAT tables and some slack."""
    content = sum(math.ceil(p.stat().st_size / 4096) * 4096 for p in files.values())
    return (math.ceil(content / MIB) + slack_mib) * MIB


def make_ext4_image(runner: Runner, image: Path, spec: PartitionSpec, ids: PartitionIds,
                    size_bytes: int, content: Path | None, epoch: int) -> None:
    """Create an ext4 image of size_bytes, populated from `content` if given; the
    superblock (E2FSPROGS_FAKE_TIME) and every inode are dated `epoch`. The content's
    own times are not used and not touched: it may hold hard links into other stages'
    cache entries, read concurrently (a read moves a file's atime, which mke2fs copies)."""
    with open(image, "wb") as handle:
        handle.truncate(size_bytes)
    argv: list[str | os.PathLike[str]] = [
        "mkfs.ext4", "-q", "-F",
        # Without -T/-b mke2fs picks the "small" type (1 KiB blocks) for small
        # images, which would stay with "Golem storage" after the wizard grows it.
        "-T", "default", "-b", str(EXT4_BLOCK),
        "-m", "0",  # no root-reserved blocks on removable media
        "-U", ids.fs_uuid,
        "-E", f"root_owner=0:0,hash_seed={ids.fs_uuid}",
    ]
    if spec.fs_label:
        argv += ["-L", spec.fs_label]
    names: list[str] = []
    if content is not None:
        names = ["/"] + sorted("/" + str(p.relative_to(content)) for p in content.rglob("*"))
        argv += ["-d", content]
    argv += [image, f"{size_bytes // 1024}k"]
    runner.run(argv, env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    if names:
        set_inode_times(runner, image, names, epoch)


def set_inode_times(runner: Runner, image: Path, names: list[str], epoch: int) -> None:
    """mke2fs copies each source file's atime, mtime and ctime (no tool can set a
    ctime on the source): date every populated inode `epoch` afterwards (debugfs keeps
    the checksums right)."""
    script = image.with_name(f".{image.name}.debugfs")
    script.write_text("".join(f'sif "{name}" {field} @{epoch}\n'
                              for name in names for field in ("atime", "mtime", "ctime")))
    try:
        runner.run(["debugfs", "-w", "-f", str(script), str(image)])
    finally:
        script.unlink(missing_ok=True)


def ext4_content_bytes(tree: Path) -> int:
    """Estimate the bytes an ext4 filesystem needs to hold `tree`.

    Data rounded to blocks, a block per directory, then fixed room for the
    journal and metadata plus 3% for group descriptors, bitmaps and inode
    tables (which grow with the filesystem size).
    """
    data = EXT4_BLOCK  # the root directory
    for root, dirs, files in os.walk(tree):
        data += EXT4_BLOCK * len(dirs)
        for name in files:
            size = os.lstat(os.path.join(root, name)).st_size
            data += math.ceil(size / EXT4_BLOCK) * EXT4_BLOCK
    return int(data * 1.03) + 24 * MIB


def copy_sparse_into(source: Path, target: Path, offset: int) -> None:
    """Copy source into target at offset, writing only the source's data extents.

    Holes in the source stay holes in the target (which must already have its
    final size, e.g. from truncate), so empty space costs no disk blocks.
    """
    size = source.stat().st_size
    with open(source, "rb") as src, open(target, "r+b") as dst:
        src_fd, dst_fd = src.fileno(), dst.fileno()
        position = 0
        while position < size:
            try:
                data_start = os.lseek(src_fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            data_end = os.lseek(src_fd, data_start, os.SEEK_HOLE)
            remaining = data_end - data_start
            src_pos, dst_pos = data_start, offset + data_start
            while remaining > 0:
                copied = os.copy_file_range(src_fd, dst_fd, remaining, src_pos, dst_pos)
                if copied == 0:
                    raise BuildError(f"short copy of {source} into {target}",
                                     "check free space under WORK_DIR")
                remaining -= copied
                src_pos += copied
                dst_pos += copied
            position = data_end


def patch_boot_sector(boot_img: bytes, disk_mbr: bytes, core_lba: int) -> bytes:
    """GRUB's boot.img made ready for this disk, as grub-bios-setup would write it.

    Keeps the disk's own signature and (protective) partition table, points the
    MBR code at core.img and, like grub-bios-setup for a hard disk, disables
    the drive-number check for BIOSes that pass a wrong boot drive.
    """
    if len(boot_img) != SECTOR_BYTES or len(disk_mbr) != SECTOR_BYTES:
        raise BuildError("GRUB boot.img or the disk's MBR is not one sector",
                         "reinstall grub-pc-bin")
    sector = bytearray(boot_img)
    sector[MBR_KEEP_START:MBR_KEEP_END] = disk_mbr[MBR_KEEP_START:MBR_KEEP_END]
    struct.pack_into("<Q", sector, BOOT_KERNEL_SECTOR, core_lba)
    sector[BOOT_DRIVE] = 0xFF
    sector[BOOT_DRIVE_CHECK:BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    return bytes(sector)


def patch_core_image(core_img: bytes, core_lba: int) -> bytes:
    """core.img with its blocklist pointing at its own sectors after the first.

    The BIOS boot partition holds core.img contiguously, so one blocklist entry
    (start = the sector after diskboot, count = the rest) describes it.
    """
    sectors = math.ceil(len(core_img) / SECTOR_BYTES)
    if sectors < 2 or sectors - 1 > 0xFFFF:
        raise BuildError(f"GRUB core.img has an unexpected size ({len(core_img)} bytes)",
                         "rebuild the bootloader stage")
    image = bytearray(core_img.ljust(sectors * SECTOR_BYTES, b"\0"))
    _, _, segment = struct.unpack_from("<QHH", image, BLOCKLIST_OFFSET)
    struct.pack_into("<QHH", image, BLOCKLIST_OFFSET, core_lba + 1, sectors - 1, segment)
    return bytes(image)


def install_grub_bios(disk: Path, plan: DiskPlan, boot_img: bytes, core_img: bytes,
                      bios_key: str = "bios") -> None:
    """Write core.img into the BIOS boot partition and boot.img into the MBR."""
    bios = plan.part(bios_key)
    if len(core_img) > bios.size_bytes:
        raise BuildError(f"GRUB core.img ({len(core_img)} bytes) does not fit the "
                         f"{bios.size_bytes}-byte BIOS boot partition",
                         "grow it in disk/layout.toml")
    with open(disk, "r+b") as handle:
        mbr = handle.read(SECTOR_BYTES)
        handle.seek(bios.offset_bytes)
        handle.write(patch_core_image(core_img, bios.start_sector))
        handle.seek(0)
        handle.write(patch_boot_sector(boot_img, mbr, bios.start_sector))


def assemble_disk(runner: Runner, plan: DiskPlan, disk: Path,
                  partition_images: Mapping[str, Path]) -> None:
    """Create the sparse disk image, partition it and copy the filesystems in."""
    if disk.exists():
        disk.unlink()
    with open(disk, "wb") as handle:
        handle.truncate(plan.size_bytes)
    runner.run(["sfdisk", "--no-reread", "--no-tell-kernel", "--quiet", disk],
               input=plan.sfdisk_script().encode())
    for key, image in partition_images.items():
        placed = plan.part(key)
        if image.stat().st_size > placed.size_bytes:
            raise BuildError(f"filesystem image for {placed.spec.name!r} is larger than "
                             "its partition", "this is a bug in the size estimate")
        copy_sparse_into(image, disk, placed.offset_bytes)
