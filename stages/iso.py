"""The hybrid ISO: golem-gpu-live-VERSION.iso, bootable from CD and from a stick.

BIOS: GRUB's i386-pc El Torito core, and boot_hybrid.img as the MBR so the
same file dd'ed to a stick boots too. UEFI: the El Torito alternative image
efi.img (FAT with shim and Debian's signed GRUB), also exposed as a GPT
partition for firmware that boots the ISO from a stick. Signed GRUB finds the
ISO's root through /.disk/info and reads /boot/grub/grub.cfg (see the
bootloader stage).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from builder.config import BuildConfig
from builder.stage import Stage, StageContext
from disk.layout import seeded_uuid
from stages.shared import require_live_files

ELTORITO_PATH = "boot/grub/i386-pc/eltorito.img"
EFI_IMAGE_PATH = "boot/grub/efi.img"


def volume_id(config: BuildConfig) -> str:
    """ISO 9660 volume ids allow 32 upper-case letters, digits and underscores."""
    text = re.sub(r"[^A-Z0-9_]", "_", f"GOLEM_LIVE_{config.version}".upper())
    return text[:32]


def xorriso_argv(config: BuildConfig, squashfs_out: Path, boot_out: Path,
                 iso: Path) -> list[str | os.PathLike[str]]:
    """xorriso's mkisofs emulation, laid out from the stage inputs by graft points
    (nothing is copied into a staging tree)."""
    grafts = {
        "/live": squashfs_out / "live",
        "/boot/grub/grub.cfg": boot_out / "media/boot/grub/grub.cfg",
        "/.disk/info": boot_out / "media/.disk/info",
        f"/{ELTORITO_PATH}": boot_out / "bios/eltorito.img",
        f"/{EFI_IMAGE_PATH}": boot_out / "efi.img",
    }
    return [
        "xorriso", "-as", "mkisofs",
        "-output", iso,
        "-volid", volume_id(config),
        "-iso-level", "3",  # the squashfs may be larger than 4 GiB
        "-rational-rock", "-joliet", "-joliet-long",
        "-follow-links",  # store what a symlinked input points to, not the link
        # BIOS: El Torito no-emulation GRUB core; as a disk, boot_hybrid.img.
        "-eltorito-boot", ELTORITO_PATH, "-eltorito-catalog", "boot/grub/boot.cat",
        "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
        "--grub2-boot-info", "--grub2-mbr", boot_out / "bios/boot_hybrid.img",
        # UEFI: El Torito EFI image, also a GPT partition when dd'ed to a stick
        # (as grub-mkrescue does; -isohybrid-gpt-basdat needs an isolinux MBR).
        "-eltorito-alt-boot", "-e", EFI_IMAGE_PATH, "-no-emul-boot",
        "-efi-boot-part", "--efi-boot-image", "--protective-msdos-label",
        "--gpt_disk_guid", seeded_uuid(config.seed, "iso/gpt"),  # partition GUIDs follow
        "-graft-points",
        *[f"{target}={source}" for target, source in grafts.items()],
    ]


class IsoStage(Stage):
    name = "iso"
    version = 2
    depends = ("squashfs", "bootloader")
    config_keys = ("image_name", "version", "seed", "source_date_epoch")
    final = True
    code = ("stages.shared",)
    description = "hybrid ISO (BIOS and UEFI, CD and USB)"

    def published(self, config: BuildConfig) -> list[str]:
        return [config.image_file("iso")]

    def run(self, ctx: StageContext) -> None:
        squashfs_out, boot_out = ctx.inputs["squashfs"], ctx.inputs["bootloader"]
        require_live_files(squashfs_out)
        iso = ctx.output / ctx.config.image_file("iso")
        ctx.progress("writing the ISO with xorriso")
        # xorriso dates the volume and every file from SOURCE_DATE_EPOCH when it is set.
        ctx.runner.run(xorriso_argv(ctx.config, squashfs_out, boot_out, iso),
                       env={"SOURCE_DATE_EPOCH": str(ctx.config.source_date_epoch)})
