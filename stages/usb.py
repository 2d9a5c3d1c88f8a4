"""The GPT USB image: golem-gpu-live-VERSION.img, bootable under BIOS and UEFI.

Partitions (disk/layout.toml): EFI System (shim + signed GRUB and a
grub.cfg stub that finds the root filesystem by UUID), BIOS boot partition
(GRUB i386-pc core.img), Golem conf storage (golemwz-example.toml), Golem root
filesystem (the live medium: /live, /boot/grub/grub.cfg, /.disk/info) and
Golem storage (small empty ext4 with the fixed PARTUUID).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.config import BuildConfig
from builder.errors import BuildError
from builder.stage import Stage, StageContext
from disk.assemble import (
    MTOOLS_ENV,
    assemble_disk,
    ext4_content_bytes,
    install_grub_bios,
    make_ext4_image,
    make_fat_image,
)
from disk.layout import LAYOUT_FILE, MIB, load_layout, plan_disk
from stages.secure_boot import trust_anchors, verify_fat_image
from stages.shared import require_live_files

EXAMPLE_CONF = Path("rootfs/overlay/common/usr/share/golemwz/golemwz-example.toml")
ESP_EFI_FILES = ("BOOTX64.EFI", "grubx64.efi", "mmx64.efi")
EXAMPLE_IN_OVERLAY = Path("usr/share/golemwz/golemwz-example.toml")


def example_conf(config: BuildConfig) -> Path:
    """The profile's own example (the last of its overlays that has one, as that is the
    file its image holds), else common's."""
    for name in reversed(config.profile.overlays):
        candidate = Path("rootfs/overlay") / name / EXAMPLE_IN_OVERLAY
        if (config.project_root / candidate).exists():
            return candidate
    return EXAMPLE_CONF


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link when source and target share a filesystem (no copy of the squashfs)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def stage_live_medium(squashfs_out: Path, bootloader_out: Path, tree: Path) -> None:
    """Lay out the root filesystem's content in `tree` (for mkfs.ext4 -d)."""
    require_live_files(squashfs_out)
    for source in sorted((squashfs_out / "live").iterdir()):
        link_or_copy(source, tree / "live" / source.name)
    link_or_copy(bootloader_out / "media/boot/grub/grub.cfg", tree / "boot/grub/grub.cfg")
    link_or_copy(bootloader_out / "media/.disk/info", tree / ".disk/info")


class UsbImageStage(Stage):
    name = "usb"
    code = ("disk.assemble", "disk.layout", "stages.shared", "stages.secure_boot")
    version = 2
    depends = ("squashfs", "bootloader")
    config_keys = ("image_name", "seed", "source_date_epoch")
    tools = ("mkfs.vfat", "mmd", "mcopy", "mkfs.ext4", "debugfs", "sfdisk", "sbverify")
    final = True
    description = "GPT USB disk image"

    def input_files(self, config: BuildConfig) -> list[Path]:
        return [config.project_root / LAYOUT_FILE, config.project_root / example_conf(config)]

    def published(self, config: BuildConfig) -> list[str]:
        return [config.image_file("usb")]

    def run(self, ctx: StageContext) -> None:
        config = ctx.config
        squashfs_out, boot_out = ctx.inputs["squashfs"], ctx.inputs["bootloader"]
        example = config.project_root / example_conf(config)
        if not example.exists():
            raise BuildError(f"{example_conf(config)} is missing", "restore it from git")
        layout = load_layout(config.project_root / LAYOUT_FILE)

        # Scratch inside the stage's own temp output: a killed build leaves it
        # where the cache's sweep of unfinished entries removes it.
        scratch = ctx.output / ".scratch"
        scratch.mkdir()
        ctx.stack.callback(shutil.rmtree, scratch, ignore_errors=True)

        ctx.progress("staging the live medium")
        tree = scratch / "root"
        stage_live_medium(squashfs_out, boot_out, tree)
        plan = plan_disk(layout, config.seed, {"root": ext4_content_bytes(tree)})
        images = {key: scratch / f"{key}.img" for key in ("esp", "conf", "root", "storage")}

        def fat(key: str, files: dict[str, Path]) -> None:
            part = plan.part(key)
            ctx.progress(f"making {part.spec.name}")
            make_fat_image(ctx.runner, images[key], part.spec, part.ids.fs_uuid,
                           part.size_bytes, files, config.source_date_epoch)

        def ext4(key: str, content: Path | None) -> None:
            part = plan.part(key)
            ctx.progress(f"making {part.spec.name} ({part.size_bytes // MIB} MiB)")
            make_ext4_image(ctx.runner, images[key], part.spec, part.ids, part.size_bytes,
                            content, config.source_date_epoch)

        esp_files = {f"/EFI/BOOT/{n}": boot_out / "esp/EFI/BOOT" / n for n in ESP_EFI_FILES}
        esp_files["/boot/grub/grub.cfg"] = boot_out / "usb/esp-grub.cfg"
        fat("esp", esp_files)
        ctx.progress("checking the ESP's Secure Boot signatures")
        verify_fat_image(ctx.runner, images["esp"], "/EFI/BOOT",
                         trust_anchors(boot_out / "esp/EFI/BOOT/BOOTX64.EFI"), MTOOLS_ENV)
        fat("conf", {"/golemwz-example.toml": example})
        ext4("root", tree)
        ext4("storage", None)

        ctx.progress("partitioning and assembling the disk image")
        disk = ctx.output / config.image_file("usb")
        assemble_disk(ctx.runner, plan, disk, images)
        install_grub_bios(disk, plan, (boot_out / "bios/boot.img").read_bytes(),
                          (boot_out / "bios/core.img").read_bytes())
        # Removed now, not left to the stack's callback: a cache entry holds only the image.
        shutil.rmtree(scratch)
