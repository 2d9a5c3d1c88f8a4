"""Stage 4: the live medium's content: kernel, initrd and the squashfs root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.errors import BuildError
from builder.stage import Stage, StageContext
from disk.assemble import clamp_times

# Not needed inside the compressed root: the kernel and initrd sit beside it.
EXCLUDES = ("boot/vmlinuz*", "boot/initrd.img*", "vmlinuz*", "initrd.img*")


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


class SquashfsStage(Stage):
    name = "squashfs"
    version = 2
    tools = ("mksquashfs",)
    description = "compress the rootfs (zstd) and extract kernel and initrd"
    depends = ("overlay",)
    config_keys = ("source_date_epoch",)
    code = ("disk.assemble",)

    def run(self, ctx: StageContext) -> None:
        root = ctx.inputs["overlay"] / "rootfs"
        live = ctx.output / "live"
        live.mkdir()
        kernel, initrd = kernel_and_initrd(root)
        shutil.copyfile(kernel, live / "vmlinuz")
        shutil.copyfile(initrd, live / "initrd.img")
        ctx.progress("mksquashfs (zstd)")
        ctx.runner.run([
            "mksquashfs", str(root), str(live / "filesystem.squashfs"),
            "-comp", "zstd", "-noappend", "-no-progress", "-quiet",
            "-processors", str(os.cpu_count() or 1),
            # Every inode and the superblock dated SOURCE_DATE_EPOCH: reproducible.
            "-mkfs-time", str(ctx.config.source_date_epoch),
            "-all-time", str(ctx.config.source_date_epoch),
            "-wildcards", *[arg for pattern in EXCLUDES for arg in ("-e", pattern)],
        ])
        size = (live / "filesystem.squashfs").stat().st_size
        ctx.progress(f"filesystem.squashfs is {size / 2**20:.0f} MiB")
        (live / "filesystem.size").write_text(f"{size}\n")
        clamp_times(live, ctx.config.source_date_epoch)  # the ISO and USB image copy them
