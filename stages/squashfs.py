"""Stage 4: the live medium's content as two squashfs layers, kernel and initrd.

live-boot mounts the images of /live in the order `filesystem.module` lists them, each
later one on top (live-boot, lib/live/boot/9990-overlay.sh, setup_unionfs, 1:20230131):

    filesystem.squashfs   the installed packages (stage squashfs-base): big, and rebuilt
                          only when the packages change; dated by the archive's Release,
                          so a new commit alone does not recompress it
    overlay.squashfs      what the overlay stage changed (stage squashfs): small, so an
                          overlay edit recompresses only this

The overlay stage's rootfs is a hard-linked copy of the packages rootfs and it writes
every file as a fresh inode, so the top layer is the entries whose inode differs and
whose content or attributes differ too (a packages entry rebuilt under the same key, its
first copy evicted, shares no inode with a cached overlay entry: compared by content, the
layer stays what the overlay changed), plus overlayfs whiteouts (character devices 0/0)
for what it removed. Times do not count: mksquashfs dates every inode alike.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BuildError
from builder.stage import Stage, StageContext
from disk.assemble import clamp_times
from stages.shared import ARCHIVE_EPOCH_FILE

# Not needed inside the compressed root: the kernel and initrd sit beside it.
EXCLUDES = ("boot/vmlinuz*", "boot/initrd.img*", "vmlinuz*", "initrd.img*")
BASE_IMAGE = "filesystem.squashfs"
TOP_IMAGE = "overlay.squashfs"
MODULE_FILE = "filesystem.module"  # live-boot's list of images, bottom first


def newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.name) if paths else None


def kernel_and_initrd(root: Path) -> tuple[Path, Path]:
    kernel = newest(sorted((root / "boot").glob("vmlinuz-*")))
    if kernel is None:
        raise BuildError("the rootfs has no kernel in /boot",
                         "add linux-image-amd64 to the profile's packages")
    release = kernel.name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{release}"
    if not initrd.exists():
        raise BuildError(f"the rootfs has no initrd for kernel {release}",
                         "add live-boot and initramfs-tools to the profile's packages")
    return kernel, initrd


def mksquashfs_argv(source: Path, image: Path, epoch: int,
                    extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "mksquashfs", str(source), str(image),
        "-comp", "zstd", "-noappend", "-no-progress", "-quiet",
        "-processors", str(os.cpu_count() or 1),
        # Every inode and the superblock dated `epoch`: reproducible.
        "-mkfs-time", str(epoch), "-all-time", str(epoch),
        *extra,
        "-wildcards", *[arg for pattern in EXCLUDES for arg in ("-e", pattern)],
    ]


@dataclass
class LayerDiff:
    """What the top layer must hold for `upper` to show over `lower` (paths relative)."""

    entries: list[str] = field(default_factory=list)  # new or changed, not directories
    dirs: list[str] = field(default_factory=list)  # new, or changed mode/owner
    removed: list[str] = field(default_factory=list)  # whiteouts


def _same_dir_attrs(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid)


def unchanged(low: Path, up: Path) -> bool:
    """The same inode, or the same type, mode, owner and content (times aside)."""
    a, b = os.lstat(low), os.lstat(up)
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(low) == os.readlink(up)
    if stat.S_ISREG(a.st_mode):
        return a.st_size == b.st_size and filecmp.cmp(low, up, shallow=False)
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev
    return True  # fifos and sockets: nothing more to compare


def layer_diff(lower: Path, upper: Path) -> LayerDiff:
    """Compare two trees where unchanged entries mostly share inodes (a `cp -a --link`
    copy); entries whose inodes differ are compared by content."""
    diff = LayerDiff()
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(upper / rel) as scan:
            ups = {e.name: e for e in scan}
        try:
            with os.scandir(lower / rel) as scan:
                lows = {e.name: e for e in scan}
        except (FileNotFoundError, NotADirectoryError):
            lows = {}
        for name in sorted(set(lows) - set(ups)):
            diff.removed.append(os.path.join(rel, name))
        for name, entry in sorted(ups.items()):
            path = os.path.join(rel, name)
            low = lows.get(name)
            if entry.is_dir(follow_symlinks=False):
                if low is None or not low.is_dir(follow_symlinks=False):
                    diff.dirs.append(path)  # new: everything below is new too
                elif not _same_dir_attrs(entry.stat(follow_symlinks=False),
                                         low.stat(follow_symlinks=False)):
                    diff.dirs.append(path)
                pending.append(path)
            elif low is None or (low.inode() != entry.inode()
                                 and not unchanged(lower / path, upper / path)):
                diff.entries.append(path)
    for found in (diff.entries, diff.dirs, diff.removed):
        found.sort()
    return diff


def _pseudo_name(rel: str) -> str:
    if any(c in rel for c in "\n\\\""):
        raise BuildError(f"cannot mark {rel!r} removed in the overlay layer",
                         "rename the file in the overlay")
    return rel.replace(" ", "\\ ")


def stage_top_layer(lower: Path, upper: Path, tree: Path, pseudo: Path) -> LayerDiff:
    """Lay out the top layer in `tree` (hard links into `upper`) and write the whiteouts
    as mksquashfs pseudo definitions into `pseudo` (no mknod: no root needed)."""
    diff = layer_diff(lower, upper)
    tree.mkdir(parents=True, exist_ok=True)

    def make_dir(rel: str) -> None:
        target = tree / rel
        if rel and not target.is_dir():
            make_dir(os.path.dirname(rel))
            target.mkdir()
        info = (upper / rel).stat()
        os.chmod(target, stat.S_IMODE(info.st_mode))
        if os.geteuid() == 0:
            os.chown(target, info.st_uid, info.st_gid)

    make_dir("")
    for rel in diff.dirs:
        make_dir(rel)
    for rel in diff.entries:
        make_dir(os.path.dirname(rel))
        os.link(upper / rel, tree / rel, follow_symlinks=False)
    lines = []
    for rel in diff.removed:
        make_dir(os.path.dirname(rel))
        lines.append(f"{_pseudo_name(rel)} c 0 0 0 0 0\n")
    pseudo.write_text("".join(lines))
    return diff


def archive_epoch(packages_out: Path, fallback: int) -> int:
    try:
        return int((packages_out / ARCHIVE_EPOCH_FILE).read_text().strip())
    except (OSError, ValueError):
        return fallback


class BaseSquashfsStage(Stage):
    name = "squashfs-base"
    version = 1
    tools = ("mksquashfs",)
    description = "compress the installed packages (zstd), extract kernel and initrd"
    depends = ("packages",)
    code = ("disk.assemble",)

    def run(self, ctx: StageContext) -> None:
        packages_out = ctx.inputs["packages"]
        root = packages_out / "rootfs"
        live = ctx.output / "live"
        live.mkdir()
        kernel, initrd = kernel_and_initrd(root)
        shutil.copyfile(kernel, live / "vmlinuz")
        shutil.copyfile(initrd, live / "initrd.img")
        # The archive's date, in the packages stage's key already: a commit alone does
        # not recompress 300 MB. Without it (an old entry) the build's epoch.
        epoch = archive_epoch(packages_out, ctx.config.source_date_epoch)
        ctx.progress(f"mksquashfs (zstd) of the installed packages, dated {epoch}")
        ctx.runner.run(mksquashfs_argv(root, live / BASE_IMAGE, epoch))
        size = (live / BASE_IMAGE).stat().st_size
        ctx.progress(f"{BASE_IMAGE} is {size / 2**20:.0f} MiB")
        clamp_times(live, epoch)  # the ISO and USB image copy them


class SquashfsStage(Stage):
    name = "squashfs"
    version = 3  # 3: two layers (squashfs-base below, the overlay's changes on top)
    tools = ("mksquashfs",)
    description = "the overlay's changes as a squashfs layer; the live medium's files"
    depends = ("packages", "squashfs-base", "overlay")
    config_keys = ("source_date_epoch",)
    code = ("disk.assemble",)

    def run(self, ctx: StageContext) -> None:
        base = ctx.inputs["squashfs-base"] / "live"
        upper = ctx.inputs["overlay"] / "rootfs"
        live = ctx.output / "live"
        live.mkdir()
        epoch = ctx.config.source_date_epoch
        lower_root = ctx.inputs["packages"] / "rootfs"  # what the overlay started from
        kernel, initrd = kernel_and_initrd(upper)
        for path in (kernel, initrd):
            if not unchanged(lower_root / path.relative_to(upper), path):
                raise BuildError(f"the overlay changes {path.relative_to(upper)}",
                                 "the kernel and initrd come from packages: drop the file "
                                 "from the overlay")
        ctx.progress("finding what the overlay changed")
        scratch = ctx.output / ".scratch"
        ctx.stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        pseudo = ctx.output / ".scratch-pseudo"
        ctx.stack.callback(pseudo.unlink, missing_ok=True)
        diff = stage_top_layer(lower_root, upper, scratch, pseudo)
        ctx.progress(f"{len(diff.entries)} files, {len(diff.dirs)} directories changed, "
                     f"{len(diff.removed)} removed")
        ctx.runner.run(mksquashfs_argv(scratch, live / TOP_IMAGE, epoch,
                                       ("-pf", str(pseudo))))
        shutil.rmtree(scratch)
        pseudo.unlink()
        # The big layer and the kernel by hard link: no 300 MB copy on an overlay edit, and
        # never written to. The link count does not reach the images: xorriso -rational-rock
        # and mke2fs -d gave identical bytes for nlink 1 and 2 (checked in session 4).
        for name in ("vmlinuz", "initrd.img", BASE_IMAGE):
            os.link(base / name, live / name)
        (live / MODULE_FILE).write_text(f"{BASE_IMAGE}\n{TOP_IMAGE}\n")
        size = sum((live / n).stat().st_size for n in (BASE_IMAGE, TOP_IMAGE))
        (live / "filesystem.size").write_text(f"{size}\n")
        for name in (TOP_IMAGE, MODULE_FILE, "filesystem.size"):
            clamp_times(live / name, epoch)
        # Last: every file written above moved the directory's time, which the ISO and
        # the USB image record (two builds differed by it alone).
        os.utime(live, (epoch, epoch))
