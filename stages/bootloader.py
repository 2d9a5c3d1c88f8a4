"""The bootloader files of both media, from the config alone.

Nothing here reads the root filesystem, so a rootfs edit never rebuilds it.
Output (read by the iso and usb stages):

    media/boot/grub/grub.cfg   the menu, at /boot/grub/grub.cfg of the live medium
    media/.disk/info           the marker Debian's signed GRUB searches for
    esp/EFI/BOOT/...           shim as BOOTX64.EFI, signed GRUB as grubx64.efi, MokManager
    efi.img                    a FAT image of esp/ (the ISO's El Torito UEFI image)
    usb/esp-grub.cfg           /boot/grub/grub.cfg of the USB ESP: finds the root fs by UUID
    bios/core.img              GRUB i386-pc core for the USB BIOS boot partition
    bios/core.cfg              the config built into core.img: finds the root fs by UUID
    bios/boot.img              GRUB's MBR code (patched in place by the usb stage)
    bios/eltorito.img          GRUB i386-pc El Torito core for the ISO
    bios/boot_hybrid.img       the ISO's MBR for booting it from a stick
    isolinux/, bios/isohdpfx.bin  only with image.bios_loader = "isolinux": the ISO's
                               BIOS loader and its MBR instead (stages/isolinux.py)

How each boot path finds grub.cfg:
- UEFI (ISO and USB): firmware starts EFI/BOOT/BOOTX64.EFI (shim), which
  starts grubx64.efi beside it (Debian's signed gcdx64.efi). Its built-in
  config: if $prefix (/boot/grub on the device GRUB came from) does not exist,
  `search --file /.disk/info` sets $root and $prefix=($root)/boot/grub; then it
  sources $prefix/grub.cfg.
  ISO: efi.img has no /boot, so /.disk/info finds the ISO 9660 tree.
  USB: the ESP does have /boot/grub/grub.cfg (usb/esp-grub.cfg): it finds the
  root filesystem by its seed-derived UUID, so another Golem or Debian medium
  plugged in is never picked, and sources that filesystem's grub.cfg.
- BIOS, USB: MBR boot.img loads core.img from the BIOS boot partition; its
  built-in bios/core.cfg does the same UUID search, then GRUB's normal mode
  reads $prefix/grub.cfg.
- BIOS, ISO: El Torito loads eltorito.img (from a CD), or boot_hybrid.img in
  the MBR loads it (from a stick); its prefix /boot/grub is on the boot device.
  With isolinux: El Torito loads isolinux/isolinux.bin (from a CD), or isohdpfx.bin
  in the MBR does (from a stick); it reads isolinux.cfg from its own directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from builder.config import BuildConfig
from builder.errors import BuildError
from builder.stage import Stage, StageContext
from disk.assemble import MTOOLS_ENV, clamp_times, fat_image_bytes, make_fat_image
from disk.layout import (
    LAYOUT_FILE,
    PartitionSpec,
    derive_ids,
    fat_volume_id,
    load_layout,
)
from stages.isolinux import (
    ISOLINUX_CFG_TEMPLATE,
    copy_loader_files,
    host_files,
    require_host_files,
)
from stages.secure_boot import OVMF_MS_VARS, trust_anchors, verify_fat_image, verify_signed
from stages.shared import render_template

GRUB_CFG_TEMPLATE = Path("rootfs") / "boot" / "grub.cfg.j2"
GRUB_PC_DIR = Path("/usr/lib/grub/i386-pc")
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
MOK_MANAGER = Path("/usr/lib/shim/mmx64.efi.signed")
SIGNED_GRUB = Path("/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed")
HOST_PACKAGES_HINT = ("install the host's boot packages: apt install grub-pc-bin "
                      "grub-efi-amd64-signed shim-signed mtools dosfstools")

SERIAL_CONSOLE = ("console=tty0", "console=ttyS0,115200n8")
MENU_TIMEOUT_SECONDS = 5
GRUB_PREFIX = "/boot/grub"
# Modules built into the BIOS cores: everything grub.cfg and the stub use, so
# no module directory has to be shipped on the media.
BIOS_MODULES = (
    "biosdisk", "part_gpt", "part_msdos", "ext2", "fat", "iso9660",
    "search", "search_fs_uuid", "search_fs_file", "configfile", "normal",
    "linux", "gzio", "echo", "test", "serial", "terminal", "terminfo",
    "minicmd", "ls", "cat", "halt", "reboot",
)
# The ESP files: shim is what firmware starts (Microsoft-signed), it verifies
# and starts grubx64.efi from its own directory (Debian-signed).
ESP_FILES = {
    "EFI/BOOT/BOOTX64.EFI": SHIM,
    "EFI/BOOT/grubx64.efi": SIGNED_GRUB,
    "EFI/BOOT/mmx64.efi": MOK_MANAGER,
}
EFI_IMAGE_SPEC = PartitionSpec(key="efi-img", name="ISO EFI image", type_guid="",
                               filesystem="vfat", fs_label="GOLEM-EFI")


def kernel_cmdline(config: BuildConfig) -> str:
    return " ".join(("boot=live", *config.profile.kernel_cmdline, *SERIAL_CONSOLE))


def menu_title(config: BuildConfig) -> str:
    return f"Golem GPU Live {config.version}"


def live_updates_args(config: BuildConfig) -> str:
    """live-boot's persistence of package updates, keyed by the image name (see
    grub.cfg.j2; golemwz.updates reads these arguments back)."""
    return ("persistence quickusbmodules persistence-storage=directory "
            f"persistence-path=/golem-live-updates persistence-label={config.image_name}")


def menu_values(config: BuildConfig) -> dict[str, object]:
    """What both menu templates (GRUB's, isolinux's) are rendered with."""
    return {"image_name": config.image_name, "profile": config.profile.name,
            "title": menu_title(config), "cmdline": kernel_cmdline(config),
            "updates": live_updates_args(config), "timeout": MENU_TIMEOUT_SECONDS}


def render_grub_cfg(config: BuildConfig) -> str:
    return render_template(config.project_root / GRUB_CFG_TEMPLATE, menu_values(config))


def render_isolinux_cfg(config: BuildConfig) -> str:
    return render_template(config.project_root / ISOLINUX_CFG_TEMPLATE, menu_values(config))


def uses_isolinux(config: BuildConfig) -> bool:
    return config.profile.bios_loader == "isolinux"


def disk_info(config: BuildConfig) -> str:
    """/.disk/info: one line naming the medium, as on Debian's own media."""
    return f'Golem GPU Live {config.version} "{config.profile.name}" - amd64\n'


SERIAL_SETUP = ("serial --unit=0 --speed=115200\n"
                "terminal_input console serial\n"
                "terminal_output console serial\n")


def find_usb_root(root_fs_uuid: str) -> str:
    """GRUB commands that make the stick's root filesystem $root and its /boot/grub $prefix."""
    return (f"search --no-floppy --fs-uuid --set=root {root_fs_uuid}\n"
            "set prefix=($root)/boot/grub\n")


def usb_esp_grub_cfg(root_fs_uuid: str) -> str:
    """/boot/grub/grub.cfg of the USB ESP, sourced by the signed GRUB's built-in config.

    Signed GRUB then starts normal mode with the config of the directory it was
    loaded from (EFI/BOOT), not $prefix, so the menu must be sourced here.
    """
    return ("# The live medium of this stick, found by its filesystem UUID\n"
            + find_usb_root(root_fs_uuid)
            + "source $prefix/grub.cfg\n")


def bios_core_config(root_fs_uuid: str) -> str:
    """The config built into the USB BIOS core.img.

    GRUB runs it with its minimal rescue parser: plain commands only, and no
    comments (a quote inside one would swallow the following lines). Normal
    mode then reads $prefix/grub.cfg. Serial first, so a failure shows there.
    """
    return SERIAL_SETUP + find_usb_root(root_fs_uuid)


def bios_input_files() -> list[Path]:
    names = ["boot.img", "boot_hybrid.img", "diskboot.img", "cdboot.img", "kernel.img",
             "lzma_decompress.img", "moddep.lst"]
    return [GRUB_PC_DIR / n for n in names] + [GRUB_PC_DIR / f"{m}.mod" for m in BIOS_MODULES]


class BootloaderStage(Stage):
    name = "bootloader"
    code = ("disk.assemble", "disk.layout", "stages.shared", "stages.secure_boot",
            "stages.isolinux")
    tools = ("grub-mkimage", "mkfs.vfat", "mmd", "mcopy", "sbverify")
    version = 2
    depends = ()
    config_keys = ("profile.name", "profile.kernel_cmdline", "profile.bios_loader", "version",
                   "image_name", "seed", "source_date_epoch")
    description = "GRUB menu, signed shim + GRUB for UEFI, GRUB cores for BIOS"

    def input_files(self, config: BuildConfig) -> list[Path]:
        # Host files count too: a shim or GRUB security update must rebuild the media.
        files = [config.project_root / GRUB_CFG_TEMPLATE, config.project_root / LAYOUT_FILE,
                 SHIM, MOK_MANAGER, SIGNED_GRUB, OVMF_MS_VARS, *bios_input_files()]
        if uses_isolinux(config):
            files += [config.project_root / ISOLINUX_CFG_TEMPLATE, *host_files()]
        return files

    def preflight(self, config: BuildConfig) -> None:
        # Before the long stages run: isolinux is not installed by every older `make deps`.
        if uses_isolinux(config):
            require_host_files()

    def run(self, ctx: StageContext) -> None:
        config, out = ctx.config, ctx.output
        missing = [p for p in (SHIM, MOK_MANAGER, SIGNED_GRUB, *bios_input_files())
                   if not p.exists()]
        if missing:
            raise BuildError(f"host file {missing[0]} is missing", HOST_PACKAGES_HINT)

        ctx.progress("writing grub.cfg and /.disk/info")
        _write(out / "media/boot/grub/grub.cfg", render_grub_cfg(config))
        _write(out / "media/.disk/info", disk_info(config))
        layout = load_layout(config.project_root / LAYOUT_FILE)
        root_uuid = derive_ids(layout, config.seed).partitions["root"].blkid_uuid
        _write(out / "usb/esp-grub.cfg", usb_esp_grub_cfg(root_uuid))
        _write(out / "bios/core.cfg", bios_core_config(root_uuid))

        ctx.progress("copying signed shim and GRUB")
        for dest, source in ESP_FILES.items():
            target = out / "esp" / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        ctx.progress("checking their Secure Boot signatures (sbverify)")
        anchors = trust_anchors(SHIM)
        verify_signed(ctx.runner, {Path(d).name: out / "esp" / d for d in ESP_FILES}, anchors,
                      "the ESP files")

        ctx.progress("making efi.img")
        esp_files = {f"/{dest}": out / "esp" / dest for dest in ESP_FILES}
        make_fat_image(ctx.runner, out / "efi.img", EFI_IMAGE_SPEC,
                       fat_volume_id(config.seed, "fs/efi.img"), fat_image_bytes(esp_files),
                       esp_files, config.source_date_epoch)
        verify_fat_image(ctx.runner, out / "efi.img", "/EFI/BOOT", anchors, MTOOLS_ENV)

        ctx.progress("making GRUB BIOS cores")
        bios = out / "bios"
        for name in ("boot.img", "boot_hybrid.img"):
            shutil.copyfile(GRUB_PC_DIR / name, bios / name)
        ctx.runner.run(["grub-mkimage", "--format=i386-pc", "--directory", GRUB_PC_DIR,
                        "--prefix", GRUB_PREFIX, "--config", bios / "core.cfg",
                        "--output", bios / "core.img", *BIOS_MODULES])
        ctx.runner.run(["grub-mkimage", "--format=i386-pc-eltorito", "--directory",
                        GRUB_PC_DIR, "--prefix", GRUB_PREFIX,
                        "--output", bios / "eltorito.img", *BIOS_MODULES])
        if uses_isolinux(config):
            ctx.progress("copying isolinux and writing isolinux.cfg")
            _write(copy_loader_files(out) / "isolinux.cfg", render_isolinux_cfg(config))
        # The ISO and the USB image copy these files' times.
        clamp_times(out, config.source_date_epoch)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
