"""The hybrid ISO: golem-gpu-live-VERSION.iso, bootable from CD and from a stick.

BIOS: GRUB's i386-pc El Torito core, and boot_hybrid.img as the MBR so the
same file dd'ed to a stick boots too. UEFI: the El Torito alternative image
efi.img (FAT with shim and Debian's signed GRUB), also exposed as a GPT
partition for firmware that boots the ISO from a stick. Signed GRUB finds the
ISO's root through /.disk/info and reads /boot/grub/grub.cfg (see the
bootloader stage).

A profile with image.bios_loader = "isolinux" gets syslinux's isolinux.bin as the BIOS
El Torito image and its isohybrid MBR instead of GRUB's, as Debian's own ISOs do; UEFI
is the same efi.img, then a GPT partition by -isohybrid-gpt-basdat.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from builder.config import BuildConfig
from builder.stage import Stage, StageContext
from disk.layout import seeded_uuid
from stages.isolinux import ISOHYBRID_MBR, ISOLINUX_DIR
from stages.shared import require_live_files

ELTORITO_PATH = "boot/grub/i386-pc/eltorito.img"
EFI_IMAGE_PATH = "boot/grub/efi.img"
ISOLINUX_BIN_PATH = f"{ISOLINUX_DIR}/isolinux.bin"


def volume_id(config: BuildConfig) -> str:
    """ISO 9660 volume ids allow 32 upper-case letters, digits and underscores."""
    text = re.sub(r"[^A-Z0-9_]", "_", f"GOLEM_LIVE_{config.version}".upper())
    return text[:32]


def xorriso_argv(config: BuildConfig, squashfs_out: Path, boot_out: Path,
                 iso: Path) -> list[str | os.PathLike[str]]:
    """xorriso's mkisofs emulation, laid out from the stage inputs by graft points
    (nothing is copied into a staging tree)."""
    if config.profile.bios_loader == "isolinux":
        return _isolinux_argv(config, squashfs_out, boot_out, iso)
    grafts = {
        **_common_grafts(squashfs_out, boot_out),
        f"/{ELTORITO_PATH}": boot_out / "bios/eltorito.img",
        f"/{EFI_IMAGE_PATH}": boot_out / "efi.img",
    }
    return [
        *_common_options(config, iso),
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


def _isolinux_argv(config: BuildConfig, squashfs_out: Path, boot_out: Path,
                   iso: Path) -> list[str | os.PathLike[str]]:
    """The same medium with isolinux as the BIOS loader (xorriso_argv's other branch)."""
    grafts = {
        **_common_grafts(squashfs_out, boot_out),
        f"/{ISOLINUX_DIR}": boot_out / ISOLINUX_DIR,
        f"/{EFI_IMAGE_PATH}": boot_out / "efi.img",
    }
    return [
        *_common_options(config, iso),
        # BIOS: El Torito no-emulation isolinux.bin (it needs the boot info table);
        # as a disk, the isohybrid MBR starts it.
        "-eltorito-boot", ISOLINUX_BIN_PATH, "-eltorito-catalog", f"{ISOLINUX_DIR}/boot.cat",
        "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
        "-isohybrid-mbr", boot_out / ISOHYBRID_MBR,
        # UEFI: the El Torito EFI image, a GPT partition when dd'ed to a stick.
        "-eltorito-alt-boot", "-e", EFI_IMAGE_PATH, "-no-emul-boot", "-isohybrid-gpt-basdat",
        "--gpt_disk_guid", seeded_uuid(config.seed, "iso/gpt"),  # partition GUIDs follow
        "-graft-points",
        *[f"{target}={source}" for target, source in grafts.items()],
    ]


def _common_options(config: BuildConfig, iso: Path) -> list[str | os.PathLike[str]]:
    return [
        "xorriso", "-as", "mkisofs",
        "-output", iso,
        "-volid", volume_id(config),
        "-iso-level", "3",  # the squashfs may be larger than 4 GiB
        "-rational-rock", "-joliet", "-joliet-long",
        "-follow-links",  # store what a symlinked input points to, not the link
    ]


def _common_grafts(squashfs_out: Path, boot_out: Path) -> dict[str, Path]:
    """The live medium and UEFI GRUB's menu, whichever loader BIOS starts."""
    return {
        "/live": squashfs_out / "live",
        "/boot/grub/grub.cfg": boot_out / "media/boot/grub/grub.cfg",
        "/.disk/info": boot_out / "media/.disk/info",
    }


class IsoStage(Stage):
    name = "iso"
    version = 2
    depends = ("squashfs", "bootloader")
    config_keys = ("image_name", "version", "seed", "source_date_epoch", "profile.bios_loader")
    final = True
    code = ("stages.shared", "stages.isolinux")
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
