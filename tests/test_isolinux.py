"""image.bios_loader = "isolinux": the bootloader stage's isolinux directory and menu,
the ISO's xorriso command for it, and the grub default left exactly as it was. No root,
no real tools (the boots: tests/integration/test_isolinux_boot.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import stages.isolinux as isolinux
from builder.config import BuildConfig, make_config
from builder.errors import BuildError
from builder.pipeline import make_plan
from disk.layout import seeded_uuid
from stages.bootloader import (
    MENU_TIMEOUT_SECONDS,
    BootloaderStage,
    render_grub_cfg,
    render_isolinux_cfg,
)
from stages.iso import IsoStage, xorriso_argv
from stages.usb import UsbImageStage
from tests.fakes import RecordingRunner
from tests.test_bootmedia import (  # noqa: F401 (fixtures)
    FAKE_BOOT_IMG,
    config,
    host_boot_files,
    run_stage,
    squashfs_out,
    tool_fakes,
)

ISOLINUX_PROFILE = 'extends = "gpu-node"\n[image]\nbios_loader = "isolinux"\n'


@pytest.fixture
def isolinux_config(config: BuildConfig) -> BuildConfig:  # noqa: F811
    """gpu-node-isolinux at 1.2.3: gpu-node with isolinux as the ISO's BIOS loader."""
    root = config.project_root
    (root / "rootfs/profiles/gpu-node-isolinux.toml").write_text(ISOLINUX_PROFILE)
    return make_config(root, "gpu-node-isolinux", "1.2.3", config.tmp_dir, config.work_dir)


@pytest.fixture
def host_isolinux_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-ins for the isolinux and syslinux-common files, each holding its own name."""
    host = tmp_path / "host-isolinux"
    modules = host / "modules/bios"
    modules.mkdir(parents=True)
    for name in isolinux.MODULES:
        (modules / name).write_bytes(name.encode())
    for name in ("isolinux.bin", "isohdpfx.bin"):
        (host / name).write_bytes(name.encode())
    monkeypatch.setattr(isolinux, "HOST_ISOLINUX_BIN", host / "isolinux.bin")
    monkeypatch.setattr(isolinux, "HOST_ISOHYBRID_MBR", host / "isohdpfx.bin")
    monkeypatch.setattr(isolinux, "SYSLINUX_BIOS_MODULES", modules)
    return host


def grub_entries(cfg: str) -> dict[str, str]:
    """title -> kernel arguments of each menuentry of a rendered grub.cfg."""
    entries, title = {}, ""
    for line in cfg.splitlines():
        if line.startswith("menuentry"):
            title = line.split('"')[1]
        elif line.strip().startswith("linux "):
            entries[title] = line.split(None, 2)[2]
    return entries


def isolinux_labels(cfg: str) -> dict[str, dict[str, str]]:
    """label -> its directives (upper-cased names) of a rendered isolinux.cfg."""
    labels: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in cfg.splitlines():
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        directive, value = words[0].upper(), words[1] if len(words) > 1 else ""
        if directive == "LABEL":
            current = labels.setdefault(value, {})
        elif current is not None:
            if directive == "MENU":  # MENU LABEL text
                sub, value = value.split(None, 1)
                directive = f"MENU {sub.upper()}"
            current[directive] = value
    return labels


# --- the menu ------------------------------------------------------------------------


def test_isolinux_cfg_has_grubs_entries_with_the_same_command_lines(
        isolinux_config: BuildConfig) -> None:
    grub = grub_entries(render_grub_cfg(isolinux_config))
    labels = isolinux_labels(render_isolinux_cfg(isolinux_config))
    assert list(labels) == ["golem-default", "golem-no-autostart", "golem-pristine"]
    assert [label["MENU LABEL"] for label in labels.values()] == list(grub)
    for label, (title, args) in zip(labels.values(), grub.items(), strict=True):
        assert label["APPEND"] == args, title
        assert label["LINUX"] == "/live/vmlinuz" and label["INITRD"] == "/live/initrd.img"
    default = labels["golem-default"]["APPEND"]
    no_autostart = labels["golem-no-autostart"]["APPEND"]
    assert "persistence" in default.split() and "skip_autostart" not in default.split()
    assert no_autostart == default + " skip_autostart"


def test_isolinux_cfg_starts_the_default_entry_after_grubs_timeout_with_serial_first(
        isolinux_config: BuildConfig) -> None:
    lines = [line.strip() for line in render_isolinux_cfg(isolinux_config).splitlines()]
    assert lines[0] == "SERIAL 0 115200"  # first, so the banner and menu reach serial
    assert "DEFAULT golem-default" in lines
    assert f"TIMEOUT {MENU_TIMEOUT_SECONDS * 10}" in lines  # tenths of a second
    modules = [line.split()[1] for line in lines if line.startswith("UI ")]
    assert modules == ["menu.c32"] and set(modules) <= set(isolinux.MODULES)


# --- the bootloader stage ----------------------------------------------------------------


def test_the_bootloader_key_follows_the_choice(config: BuildConfig,  # noqa: F811
                                               isolinux_config: BuildConfig) -> None:
    stage = BootloaderStage()
    assert "profile.bios_loader" in stage.config_keys
    assert "profile.bios_loader" in IsoStage.config_keys
    template = config.project_root / isolinux.ISOLINUX_CFG_TEMPLATE
    assert template not in stage.input_files(config)
    files = stage.input_files(isolinux_config)
    assert template in files and set(isolinux.host_files()) <= set(files)
    # the same profile with only the loader changed gets other bootloader and iso entries
    switched = dataclasses.replace(config, profile=dataclasses.replace(
        config.profile, bios_loader="isolinux"))
    keys = [{s.stage.name: s.key for s in make_plan(c, [stage, IsoStage()], offline=True).steps
             if s.stage.name in ("bootloader", "iso")} for c in (config, switched)]
    assert keys[0]["bootloader"] != keys[1]["bootloader"]
    assert keys[0]["iso"] != keys[1]["iso"]


def test_bootloader_writes_the_isolinux_directory_beside_grubs_files(
        isolinux_config: BuildConfig, host_boot_files: Path,  # noqa: F811
        host_isolinux_files: Path, tmp_path: Path) -> None:
    runner, out = tool_fakes(), tmp_path / "out"
    run_stage(BootloaderStage(), isolinux_config, out, runner)
    directory = out / "isolinux"
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["isolinux.bin", "isolinux.cfg", *isolinux.MODULES])
    for name in ("isolinux.bin", *isolinux.MODULES):
        assert (directory / name).read_bytes() == name.encode()  # the host's file
    assert (directory / "isolinux.cfg").read_text() == render_isolinux_cfg(isolinux_config)
    assert (out / "bios/isohdpfx.bin").read_bytes() == b"isohdpfx.bin"
    # GRUB's files stay: UEFI boots GRUB, and the USB image boots GRUB under BIOS too
    assert (out / "media/boot/grub/grub.cfg").read_text() == render_grub_cfg(isolinux_config)
    for name in ("boot.img", "core.img", "eltorito.img", "boot_hybrid.img"):
        assert (out / "bios" / name).is_file(), name
    assert (out / "efi.img").is_file()
    # copying files runs no command: the same commands as for grub
    grub_runner = tool_fakes()
    grub_config = make_config(isolinux_config.project_root, "gpu-node", "1.2.3",
                              isolinux_config.tmp_dir, isolinux_config.work_dir)
    run_stage(BootloaderStage(), grub_config, tmp_path / "grub-out", grub_runner)
    assert runner.programs() == grub_runner.programs()
    assert not (tmp_path / "grub-out/isolinux").exists()
    assert not (tmp_path / "grub-out/bios/isohdpfx.bin").exists()


def test_a_missing_isolinux_file_is_one_line_naming_its_package(
        isolinux_config: BuildConfig, config: BuildConfig,  # noqa: F811
        host_boot_files: Path, host_isolinux_files: Path,  # noqa: F811
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    BootloaderStage().preflight(isolinux_config)  # all there
    monkeypatch.setattr(isolinux, "HOST_ISOLINUX_BIN", tmp_path / "absent/isolinux.bin")
    BootloaderStage().preflight(config)  # grub needs no isolinux
    for check in (lambda: BootloaderStage().preflight(isolinux_config),
                  lambda: run_stage(BootloaderStage(), isolinux_config, tmp_path / "o",
                                    tool_fakes())):
        with pytest.raises(BuildError) as err:
            check()
        line = str(err.value)
        assert "isolinux.bin is missing" in line and "apt-get install isolinux " in line
        assert "\n" not in line
    monkeypatch.setattr(isolinux, "SYSLINUX_BIOS_MODULES", tmp_path / "absent")
    monkeypatch.setattr(isolinux, "HOST_ISOLINUX_BIN", host_isolinux_files / "isolinux.bin")
    with pytest.raises(BuildError, match="ldlinux.c32 is missing .* apt-get install "
                                         "syslinux-common"):
        BootloaderStage().preflight(isolinux_config)


# --- the iso stage -------------------------------------------------------------------


def test_grub_iso_argv_is_unchanged(config: BuildConfig, tmp_path: Path) -> None:  # noqa: F811
    squash, boot, iso = tmp_path / "sq", tmp_path / "bl", tmp_path / "x.iso"
    assert [str(a) for a in xorriso_argv(config, squash, boot, iso)] == [
        "xorriso", "-as", "mkisofs", "-output", str(iso), "-volid", "GOLEM_LIVE_1_2_3",
        "-iso-level", "3", "-rational-rock", "-joliet", "-joliet-long", "-follow-links",
        "-eltorito-boot", "boot/grub/i386-pc/eltorito.img",
        "-eltorito-catalog", "boot/grub/boot.cat",
        "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
        "--grub2-boot-info", "--grub2-mbr", f"{boot}/bios/boot_hybrid.img",
        "-eltorito-alt-boot", "-e", "boot/grub/efi.img", "-no-emul-boot",
        "-efi-boot-part", "--efi-boot-image", "--protective-msdos-label",
        "--gpt_disk_guid", seeded_uuid("gpu-node/1.2.3", "iso/gpt"),
        "-graft-points", f"/live={squash}/live",
        f"/boot/grub/grub.cfg={boot}/media/boot/grub/grub.cfg",
        f"/.disk/info={boot}/media/.disk/info",
        f"/boot/grub/i386-pc/eltorito.img={boot}/bios/eltorito.img",
        f"/boot/grub/efi.img={boot}/efi.img"]


def test_isolinux_iso_argv_boots_isolinux_bin_with_an_isohybrid_mbr(
        isolinux_config: BuildConfig, config: BuildConfig, tmp_path: Path) -> None:  # noqa: F811
    squash, boot, iso = tmp_path / "sq", tmp_path / "bl", tmp_path / "x.iso"
    argv = [str(a) for a in xorriso_argv(isolinux_config, squash, boot, iso)]
    grub = [str(a) for a in xorriso_argv(config, squash, boot, iso)]
    common = grub.index("-eltorito-boot")  # output, volume id, Rock Ridge, Joliet
    assert argv[:common] == grub[:common]
    assert argv[common:common + 9] == [
        "-eltorito-boot", "isolinux/isolinux.bin", "-eltorito-catalog", "isolinux/boot.cat",
        "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
        "-isohybrid-mbr"]
    assert argv[argv.index("-isohybrid-mbr") + 1] == f"{boot}/bios/isohdpfx.bin"
    efi = argv.index("-eltorito-alt-boot")
    assert argv[efi:efi + 5] == ["-eltorito-alt-boot", "-e", "boot/grub/efi.img",
                                 "-no-emul-boot", "-isohybrid-gpt-basdat"]
    assert argv[argv.index("--gpt_disk_guid") + 1] == seeded_uuid(isolinux_config.seed,
                                                                  "iso/gpt")
    for grub_only in ("--grub2-mbr", "--grub2-boot-info", "-efi-boot-part",
                      "--protective-msdos-label"):
        assert grub_only not in argv
    grafts = argv[argv.index("-graft-points") + 1:]
    assert grafts == [f"/live={squash}/live",
                      f"/boot/grub/grub.cfg={boot}/media/boot/grub/grub.cfg",
                      f"/.disk/info={boot}/media/.disk/info",
                      f"/isolinux={boot}/isolinux",
                      f"/boot/grub/efi.img={boot}/efi.img"]


def test_iso_stage_runs_the_isolinux_argv_with_source_date_epoch(
        isolinux_config: BuildConfig, host_boot_files: Path,  # noqa: F811
        host_isolinux_files: Path, squashfs_out: Path, tmp_path: Path) -> None:  # noqa: F811
    boot_out = tmp_path / "bootloader-out"
    run_stage(BootloaderStage(), isolinux_config, boot_out, tool_fakes())
    runner, out = RecordingRunner(), tmp_path / "iso-out"
    inputs = {"squashfs": squashfs_out, "bootloader": boot_out}
    run_stage(IsoStage(), isolinux_config, out, runner, inputs)
    (call,) = runner.calls
    iso = out / "golem-gpu-live-1.2.3.iso"
    assert list(call.argv) == [str(a) for a in xorriso_argv(isolinux_config, squashfs_out,
                                                            boot_out, iso)]
    assert call.env == {"SOURCE_DATE_EPOCH": str(isolinux_config.source_date_epoch)}


def test_the_usb_image_boots_grub_whatever_the_iso_loader(
        isolinux_config: BuildConfig, host_boot_files: Path,  # noqa: F811
        host_isolinux_files: Path, squashfs_out: Path, tmp_path: Path) -> None:  # noqa: F811
    boot_out = tmp_path / "bootloader-out"
    run_stage(BootloaderStage(), isolinux_config, boot_out, tool_fakes())
    out = tmp_path / "usb-out"
    runner = tool_fakes()
    run_stage(UsbImageStage(), isolinux_config, out, runner,
              {"squashfs": squashfs_out, "bootloader": boot_out})
    image = (out / "golem-gpu-live-1.2.3.img").read_bytes()
    assert image[:2] == FAKE_BOOT_IMG[:2]  # GRUB's boot.img in the MBR
    copied = " ".join(" ".join(argv) for argv in runner.argvs)
    assert "isolinux" not in copied.replace(str(tmp_path), "")
