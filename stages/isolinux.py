"""syslinux's isolinux as the ISO's legacy-BIOS loader (profile `image.bios_loader =
"isolinux"`), as live-build's and Debian's own ISOs boot. Not a stage: the bootloader
stage writes these files and the iso stage lays them out; UEFI and the USB image keep GRUB.

In the bootloader stage's output:

    isolinux/isolinux.bin   the El Torito boot image (xorriso patches its boot info table)
    isolinux/ldlinux.c32    isolinux's second half, loaded from isolinux.bin's directory
    isolinux/menu.c32       the text menu (drawn on the serial console too) and the
    isolinux/libutil.c32    library it links against
    isolinux/isolinux.cfg   the menu: GRUB's entries with the same kernel command lines
    bios/isohdpfx.bin       the isohybrid MBR: the ISO dd'ed to a stick starts isolinux.bin
"""

from __future__ import annotations

import shutil
from pathlib import Path

from builder.errors import BuildError

ISOLINUX_CFG_TEMPLATE = Path("rootfs") / "boot" / "isolinux.cfg.j2"
ISOLINUX_DIR = "isolinux"  # in the bootloader output and on the ISO
ISOHYBRID_MBR = "bios/isohdpfx.bin"  # in the bootloader output
HOST_ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
HOST_ISOHYBRID_MBR = Path("/usr/lib/ISOLINUX/isohdpfx.bin")  # for isolinux.bin's 0x00 MBR
SYSLINUX_BIOS_MODULES = Path("/usr/lib/syslinux/modules/bios")
# Every module isolinux.cfg.j2 needs: ldlinux.c32 always, menu.c32 for `UI menu.c32`,
# libutil.c32 because menu.c32 is linked against it (readelf -d: NEEDED).
MODULES = ("ldlinux.c32", "menu.c32", "libutil.c32")


def host_files() -> dict[Path, str]:
    """Every host file the isolinux media need, with the Debian package that ships it."""
    files = {HOST_ISOLINUX_BIN: "isolinux", HOST_ISOHYBRID_MBR: "isolinux"}
    files.update({SYSLINUX_BIOS_MODULES / name: "syslinux-common" for name in MODULES})
    return files


def require_host_files() -> None:
    for path, package in host_files().items():
        if not path.is_file():
            raise BuildError(f"host file {path} is missing (bios_loader = \"isolinux\")",
                             f"install it: apt-get install {package} (or `make deps`)")


def copy_loader_files(out: Path) -> Path:
    """isolinux.bin, its modules and the isohybrid MBR into the bootloader output;
    returns the isolinux directory, where the caller writes isolinux.cfg."""
    require_host_files()
    directory = out / ISOLINUX_DIR
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOST_ISOLINUX_BIN, directory / HOST_ISOLINUX_BIN.name)
    for name in MODULES:
        shutil.copyfile(SYSLINUX_BIOS_MODULES / name, directory / name)
    (out / ISOHYBRID_MBR).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOST_ISOHYBRID_MBR, out / ISOHYBRID_MBR)
    return directory
