"""The bootloader, iso and usb stages against a RecordingRunner: what they run,
what they write, and what their cache keys depend on. No root, no real tools."""

from __future__ import annotations

import dataclasses
import shutil
import struct
from contextlib import ExitStack
from pathlib import Path

import pytest

import stages.bootloader as bootloader
import stages.usb as usb_stage
from builder.config import BuildConfig, make_config
from builder.errors import BuildError
from builder.stage import Stage, StageContext
from disk.assemble import BLOCKLIST_OFFSET
from disk.layout import LAYOUT_FILE, SECTOR_BYTES, derive_ids, load_layout
from stages.bootloader import BootloaderStage, kernel_cmdline, render_grub_cfg
from stages.iso import IsoStage, volume_id, xorriso_argv
from stages.secure_boot import DEBIAN_CA, MICROSOFT_UEFI_CA
from stages.usb import EXAMPLE_CONF, UsbImageStage
from tests.fakes import RecordingRunner

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FAKE_BOOT_IMG = b"\xeb\x63" + b"B" * (SECTOR_BYTES - 2)


@pytest.fixture
def config(tmp_path: Path) -> BuildConfig:
    """gpu-node at version 1.2.3 in a project copy with its own example conf file."""
    root = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "rootfs/profiles", root / "rootfs/profiles")
    shutil.copytree(PROJECT_ROOT / "rootfs/boot", root / "rootfs/boot")
    shutil.copytree(PROJECT_ROOT / "disk", root / "disk")
    (root / EXAMPLE_CONF).parent.mkdir(parents=True)
    (root / EXAMPLE_CONF).write_text("# accepted_terms = true\n")
    return make_config(root, "gpu-node", "1.2.3", tmp_path / "tmp", tmp_path / "work")


@pytest.fixture
def host_boot_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-ins for the host's shim, signed GRUB and GRUB i386-pc files."""
    host = tmp_path / "host"
    grub_pc = host / "i386-pc"
    grub_pc.mkdir(parents=True)
    for path in bootloader.bios_input_files():
        (grub_pc / path.name).write_bytes(FAKE_BOOT_IMG if path.name == "boot.img" else b"x")
    files = {}
    for name in ("shim", "mm", "gcd"):
        files[name] = host / f"{name}.efi.signed"
        files[name].write_bytes(name.encode() * 100)
    monkeypatch.setattr(bootloader, "GRUB_PC_DIR", grub_pc)
    # Stand-in shims carry no certificates; sbverify runs through the recording runner.
    anchors = {MICROSOFT_UEFI_CA: "MS-PEM", DEBIAN_CA: "DEBIAN-PEM"}
    monkeypatch.setattr(bootloader, "trust_anchors", lambda shim: anchors)
    monkeypatch.setattr(usb_stage, "trust_anchors", lambda shim: anchors)
    monkeypatch.setattr(bootloader, "SHIM", files["shim"])
    monkeypatch.setattr(bootloader, "MOK_MANAGER", files["mm"])
    monkeypatch.setattr(bootloader, "SIGNED_GRUB", files["gcd"])
    monkeypatch.setattr(bootloader, "ESP_FILES", {
        "EFI/BOOT/BOOTX64.EFI": files["shim"], "EFI/BOOT/grubx64.efi": files["gcd"],
        "EFI/BOOT/mmx64.efi": files["mm"]})
    return host


def fake_core_image() -> bytes:
    """Three sectors shaped like GRUB's core.img (diskboot blocklist at its end)."""
    core = bytearray(SECTOR_BYTES * 3)
    core[:4] = b"CORE"
    struct.pack_into("<QHH", core, BLOCKLIST_OFFSET, 2, 0, 0x820)
    return bytes(core)


def tool_fakes() -> RecordingRunner:
    """A runner whose mkfs.vfat and grub-mkimage leave the files the real ones would."""

    def mkfs_vfat(argv: tuple[str, ...]) -> None:
        with open(argv[-2], "wb") as handle:
            handle.truncate(int(argv[-1]) * 1024)

    def grub_mkimage(argv: tuple[str, ...]) -> None:
        Path(argv[argv.index("--output") + 1]).write_bytes(fake_core_image())

    return RecordingRunner(side_effects={("mkfs.vfat",): mkfs_vfat,
                                         ("grub-mkimage",): grub_mkimage})


def run_stage(stage: Stage, config: BuildConfig, output: Path, runner: RecordingRunner,
              inputs: dict[str, Path] | None = None) -> None:
    output.mkdir(parents=True)
    with ExitStack() as stack:
        stage.run(StageContext(config, output, inputs or {}, runner, stack,
                               output.parent / f"{stage.name}.log", lambda _: None))


@pytest.fixture
def squashfs_out(tmp_path: Path) -> Path:
    out = tmp_path / "squashfs-out"
    (out / "live").mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        (out / "live" / name).write_bytes(name.encode() * 1000)
    return out


@pytest.fixture
def bootloader_out(tmp_path: Path, config: BuildConfig, host_boot_files: Path) -> Path:
    out = tmp_path / "bootloader-out"
    run_stage(BootloaderStage(), config, out, tool_fakes())
    return out


@pytest.fixture
def media_inputs(squashfs_out: Path, bootloader_out: Path) -> dict[str, Path]:
    """The dependency outputs the iso and usb stages read."""
    return {"squashfs": squashfs_out, "bootloader": bootloader_out}


# --- the menu ------------------------------------------------------------------------


def test_kernel_cmdline_is_live_boot_profile_args_and_serial(config: BuildConfig) -> None:
    assert kernel_cmdline(config) == " ".join(
        ["boot=live", *config.profile.kernel_cmdline, "console=tty0", "console=ttyS0,115200n8"])
    assert "intel_iommu=on" in kernel_cmdline(config).split()


def test_grub_cfg_has_default_and_no_autostart_entries(config: BuildConfig) -> None:
    cfg = render_grub_cfg(config)
    entries = [line for line in cfg.splitlines() if line.startswith("menuentry")]
    assert len(entries) == 3  # the third: without updates (tests/test_grub_updates.py)
    assert "NO AUTOSTART" not in entries[0] and "NO AUTOSTART" in entries[1]
    linux = [line.split() for line in cfg.splitlines() if line.strip().startswith("linux ")]
    assert linux[0][1] == linux[1][1] == linux[2][1] == "/live/vmlinuz"
    assert " ".join(linux[0][2:]).startswith(kernel_cmdline(config) + " persistence ")
    assert " ".join(linux[1][2:]) == " ".join(linux[0][2:]) + " skip_autostart"
    assert " ".join(linux[2][2:]) == kernel_cmdline(config)
    assert cfg.count("initrd /live/initrd.img") == 3


def test_grub_cfg_puts_the_menu_on_serial_with_a_short_timeout(config: BuildConfig) -> None:
    lines = [line.strip() for line in render_grub_cfg(config).splitlines()]
    assert "if serial --unit=0 --speed=115200; then" in lines
    assert "terminal_input console serial" in lines
    assert "terminal_output console serial" in lines
    assert "set default=0" in lines
    assert "set timeout=5" in lines


# --- bootloader stage ----------------------------------------------------------------


def test_bootloader_depends_on_config_only(config: BuildConfig) -> None:
    stage = BootloaderStage()
    assert stage.depends == ()
    assert {"profile.kernel_cmdline", "version", "seed"} <= set(stage.config_keys)
    for key in stage.config_keys:
        config.value(key)  # every key exists
    files = stage.input_files(config)
    assert config.project_root / "rootfs/boot/grub.cfg.j2" in files
    assert config.project_root / LAYOUT_FILE in files


def test_bootloader_writes_media_files_and_signed_efi_chain(bootloader_out: Path,
                                                           config: BuildConfig,
                                                           host_boot_files: Path) -> None:
    assert (bootloader_out / "media/boot/grub/grub.cfg").read_text() == render_grub_cfg(config)
    assert "1.2.3" in (bootloader_out / "media/.disk/info").read_text()
    esp = bootloader_out / "esp/EFI/BOOT"
    assert (esp / "BOOTX64.EFI").read_bytes() == (host_boot_files / "shim.efi.signed").read_bytes()
    assert (esp / "grubx64.efi").read_bytes() == (host_boot_files / "gcd.efi.signed").read_bytes()
    assert (bootloader_out / "bios/boot.img").read_bytes() == FAKE_BOOT_IMG


def test_bootloader_usb_configs_find_the_root_fs_by_its_seeded_uuid(bootloader_out: Path,
                                                                    config: BuildConfig) -> None:
    root_uuid = derive_ids(load_layout(), config.seed).partitions["root"].blkid_uuid
    for name in ("usb/esp-grub.cfg", "bios/core.cfg"):
        text = (bootloader_out / name).read_text()
        assert f"search --no-floppy --fs-uuid --set=root {root_uuid}" in text
        assert "set prefix=($root)/boot/grub" in text
    # Signed GRUB reads its menu from EFI/BOOT unless the ESP config sources it.
    assert "source $prefix/grub.cfg" in (bootloader_out / "usb/esp-grub.cfg").read_text()
    # The BIOS core's config goes through GRUB's rescue parser: no comments.
    assert "#" not in (bootloader_out / "bios/core.cfg").read_text()


def test_bootloader_commands(config: BuildConfig, host_boot_files: Path,
                             tmp_path: Path) -> None:
    runner = tool_fakes()
    out = tmp_path / "out"
    run_stage(BootloaderStage(), config, out, runner)
    programs = runner.programs()
    # the ESP files' signatures are checked, then again as copied out of efi.img
    assert programs[:4] == ["sbverify", "sbverify", "sbverify", "mkfs.vfat"]
    assert programs[-2:] == ["grub-mkimage", "grub-mkimage"]
    verified = [Path(argv[-1]).name for argv in runner.argvs if argv[0] == "sbverify"]
    assert verified == ["BOOTX64.EFI", "grubx64.efi", "mmx64.efi"] * 2
    mcopies = [argv[-1] for argv in runner.argvs if argv[0] == "mcopy"]
    assert sorted(m for m in mcopies if m.startswith("::")) == [
        "::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/grubx64.efi", "::/EFI/BOOT/mmx64.efi"]
    usb_core, eltorito = (a for a in runner.argvs if a[0] == "grub-mkimage")
    assert "--format=i386-pc" in usb_core
    assert usb_core[usb_core.index("--config") + 1] == str(out / "bios/core.cfg")
    assert "--format=i386-pc-eltorito" in eltorito and "--config" not in eltorito
    for argv in (usb_core, eltorito):
        assert {"part_gpt", "ext2", "iso9660", "serial", "linux", "normal"} <= set(argv)


def test_bootloader_without_host_files_names_the_packages(config: BuildConfig, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootloader, "SHIM", tmp_path / "absent.efi")
    with pytest.raises(BuildError, match="shim-signed"):
        run_stage(BootloaderStage(), config, tmp_path / "out", tool_fakes())


def test_version_change_changes_the_menu(config: BuildConfig) -> None:
    edited = dataclasses.replace(config, version="1.2.4")
    assert render_grub_cfg(edited) != render_grub_cfg(config)
    assert "squashfs" not in BootloaderStage().depends


# --- iso stage -----------------------------------------------------------------------


def test_iso_stage_shape(config: BuildConfig) -> None:
    stage = IsoStage()
    assert stage.final and stage.depends == ("squashfs", "bootloader")
    assert stage.published(config) == ["golem-gpu-live-1.2.3.iso"]
    assert volume_id(config) == "GOLEM_LIVE_1_2_3"


def test_xorriso_argv_makes_a_bios_and_uefi_hybrid(config: BuildConfig, tmp_path: Path) -> None:
    squash, boot = tmp_path / "sq", tmp_path / "bl"
    argv = [str(a) for a in xorriso_argv(config, squash, boot, tmp_path / "x.iso")]
    assert argv[:3] == ["xorriso", "-as", "mkisofs"]
    assert argv[argv.index("-eltorito-boot") + 1] == "boot/grub/i386-pc/eltorito.img"
    assert argv[argv.index("--grub2-mbr") + 1] == str(boot / "bios/boot_hybrid.img")
    assert "--grub2-boot-info" in argv and "-boot-info-table" in argv
    assert argv.index("-eltorito-alt-boot") < argv.index("-e")
    assert argv[argv.index("-e") + 1] == "boot/grub/efi.img"
    assert "-efi-boot-part" in argv and "--efi-boot-image" in argv
    grafts = argv[argv.index("-graft-points") + 1:]
    assert f"/live={squash}/live" in grafts
    assert f"/boot/grub/grub.cfg={boot}/media/boot/grub/grub.cfg" in grafts
    assert f"/.disk/info={boot}/media/.disk/info" in grafts
    assert f"/boot/grub/efi.img={boot}/efi.img" in grafts


def test_iso_stage_runs_xorriso_into_its_output(config: BuildConfig,
                                                media_inputs: dict[str, Path],
                                                tmp_path: Path) -> None:
    runner = RecordingRunner()
    out = tmp_path / "iso-out"
    run_stage(IsoStage(), config, out, runner, media_inputs)
    (argv,) = runner.argvs
    assert argv[argv.index("-output") + 1] == str(out / "golem-gpu-live-1.2.3.iso")


def test_iso_stage_without_a_kernel_says_which_stage_to_rebuild(
        config: BuildConfig, media_inputs: dict[str, Path], tmp_path: Path) -> None:
    (media_inputs["squashfs"] / "live/vmlinuz").unlink()
    with pytest.raises(BuildError, match="live/vmlinuz"):
        run_stage(IsoStage(), config, tmp_path / "o", RecordingRunner(), media_inputs)


# --- usb stage -----------------------------------------------------------------------


def test_usb_stage_shape(config: BuildConfig) -> None:
    stage = UsbImageStage()
    assert stage.final and stage.depends == ("squashfs", "bootloader")
    assert stage.published(config) == ["golem-gpu-live-1.2.3.img"]
    assert config.project_root / EXAMPLE_CONF in stage.input_files(config)
    assert config.project_root / LAYOUT_FILE in stage.input_files(config)


def test_usb_stage_assembles_the_image(config: BuildConfig, media_inputs: dict[str, Path],
                                       tmp_path: Path) -> None:
    runner = tool_fakes()
    out = tmp_path / "usb-out"
    run_stage(UsbImageStage(), config, out, runner, media_inputs)
    assert [p.name for p in out.iterdir()] == ["golem-gpu-live-1.2.3.img"]
    image = out / "golem-gpu-live-1.2.3.img"
    assert image.stat().st_blocks * 512 < image.stat().st_size  # sparse
    assert image.read_bytes()[:2] == FAKE_BOOT_IMG[:2]  # GRUB boot.img in the MBR

    programs = runner.programs()
    assert programs.count("mkfs.vfat") == 2  # ESP, conf
    assert programs.count("mkfs.ext4") == 2 and programs[-1] == "sfdisk"
    copies = {argv[-1]: argv[-2] for argv in runner.argvs if argv[0] == "mcopy"}
    assert copies["::/golemwz-example.toml"] == str(config.project_root / EXAMPLE_CONF)
    assert copies["::/boot/grub/grub.cfg"] == str(
        media_inputs["bootloader"] / "usb/esp-grub.cfg")
    root_mkfs = next(a for a in runner.argvs if a[0] == "mkfs.ext4" and "-d" in a)
    root_ids = derive_ids(load_layout(), config.seed).partitions["root"]
    assert root_mkfs[root_mkfs.index("-U") + 1] == root_ids.fs_uuid


def test_usb_stage_without_the_example_conf_fails_clearly(
        config: BuildConfig, media_inputs: dict[str, Path], tmp_path: Path) -> None:
    (config.project_root / EXAMPLE_CONF).unlink()
    with pytest.raises(BuildError, match="golemwz-example.toml"):
        run_stage(UsbImageStage(), config, tmp_path / "o", tool_fakes(), media_inputs)
