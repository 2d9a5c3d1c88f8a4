"""The ISO with isolinux as its legacy-BIOS loader (`image.bios_loader = "isolinux"`)
boots under SeaBIOS as a CD and dd'ed to a stick, from isolinux's menu (not GRUB's), to
the login prompt with the default entry's kernel command line.

The profile is gpu-node plus that one setting, in a copy of the project (rootfs/, disk/).
It is built into the session gpu-node build's TMP_DIR, offline and with its
SOURCE_DATE_EPOCH, so bootstrap, packages and squashfs-base are cache hits; overlay and
squashfs run again (their key has the profile's name), then bootloader and iso (not usb:
the USB image boots GRUB whatever the choice). The two boots run side by side.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from boot_test.parallel import boot_all
from boot_test.qemu import GRUB_MENU_HEADER, BootOptions, BootResult, Media, image_path
from builder.config import PROFILE_DIR, BuildConfig, default_source_date_epoch, make_config
from stages.bootloader import menu_title, render_grub_cfg
from tests.conftest import MEASUREMENTS, PROJECT_ROOT, BuiltImage, golem_live
from tests.integration.test_boot_media import (
    BOOT_TIMEOUT,
    LOGIN_PROMPT,
    assert_default_entry,
    booted_to_login,
    console_text,
    kernel_cmdline,
)
from tests.integration.test_pipeline_build import stages_by_status

pytestmark = [pytest.mark.root, pytest.mark.boot]

PROFILE = "gpu-node-isolinux"
PROFILE_TOML = 'extends = "gpu-node"\n[image]\nbios_loader = "isolinux"\n'
VERSION = "test"
# How QEMU attaches the ISO in each boot: as a CD, and as a USB stick (the file dd'ed).
BOOTS: dict[str, Media] = {"iso-bios": "iso", "iso-as-usb-bios": "usb"}
# isolinux writes its banner to the serial port when isolinux.cfg's SERIAL line is read
# ("ISOLINUX 6.04 20200816 Copyright (C) 1994-2015 H. Peter Anvin et al"), and ldlinux
# says which kernel it loads.
ISOLINUX_BANNER = re.compile(r"ISOLINUX \d+\.\d+")
ISOLINUX_LOADING = "Loading /live/vmlinuz"
# Arguments the loader adds itself (GRUB adds BOOT_IMAGE too; isolinux also initrd=).
LOADER_ARGS = ("BOOT_IMAGE=", "initrd=")


@pytest.fixture(scope="module")
def isolinux_config(tmp_path_factory: pytest.TempPathFactory) -> BuildConfig:
    """gpu-node-isolinux in a project copy (the checkout gets no test profile)."""
    project = tmp_path_factory.mktemp("isolinux") / "project"
    for sub in ("rootfs", "disk"):
        shutil.copytree(PROJECT_ROOT / sub, project / sub, symlinks=True)
    (project / PROFILE_DIR / f"{PROFILE}.toml").write_text(PROFILE_TOML)
    work = project.parent
    return make_config(project, PROFILE, VERSION, work / "unused-tmp", work / "work")


@pytest.fixture(scope="module")
def isolinux_iso(gpu_node_image: BuiltImage, isolinux_config: BuildConfig) -> Path:
    started = time.monotonic()
    result = golem_live(
        "build", "--profile", PROFILE, "--version", VERSION, "--until", "iso", "--offline",
        "--project-root", str(isolinux_config.project_root),
        "--tmp-dir", str(gpu_node_image.tmp_dir), "--work-dir", str(isolinux_config.work_dir),
        # the session build's epoch (the last commit's): the copy is no git checkout
        "--source-date-epoch", str(default_source_date_epoch(PROJECT_ROOT)))
    assert result.returncode == 0, result.stderr[-3000:]
    MEASUREMENTS["isolinux ISO build on the session's cache"] = (
        f"{time.monotonic() - started:.1f}s, ran "
        f"{', '.join(sorted(stages_by_status(result.stderr, 'running')))}")
    return image_path(isolinux_config.work_dir, VERSION, "iso")


@pytest.fixture(scope="module")
def isolinux_boots(isolinux_iso: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, BootResult]:
    logs = tmp_path_factory.mktemp("isolinux-boot-logs")
    jobs = {name: BootOptions(isolinux_iso, media=media, firmware="bios",
                              timeout=BOOT_TIMEOUT, expect=LOGIN_PROMPT,
                              log_path=logs / f"{name}.log")
            for name, media in BOOTS.items()}
    results = boot_all(jobs)
    for name, result in results.items():
        MEASUREMENTS[f"boot isolinux {name} to login (two at a time)"] = f"{result.seconds:.0f}s"
    return results


def default_entry_args(config: BuildConfig) -> list[str]:
    """The kernel arguments of GRUB's default entry, which isolinux's must equal."""
    cfg = render_grub_cfg(config)
    return cfg.split("linux /live/vmlinuz ", 1)[1].splitlines()[0].split()


@pytest.mark.parametrize("name", BOOTS)
def test_isolinux_boots_the_default_entry_to_login(isolinux_boots: dict[str, BootResult],
                                                   isolinux_config: BuildConfig,
                                                   name: str) -> None:
    result = booted_to_login(isolinux_boots, name)
    text = console_text(result)
    where = f"console log: {result.log_path}"
    # isolinux, not GRUB, started and drew the menu (menu.c32 draws on serial too)
    assert ISOLINUX_BANNER.search(text), f"no isolinux banner; {where}"
    assert GRUB_MENU_HEADER not in text, f"GRUB's menu was drawn; {where}"
    title = menu_title(isolinux_config)
    for entry in (f"{title} - NO AUTOSTART", f"{title} - WITHOUT UPDATES"):
        assert entry in text, f"menu entry {entry!r} not drawn; {where}"
    assert ISOLINUX_LOADING in text, f"isolinux did not load the kernel; {where}"
    # the default entry, after the timeout, with exactly its command line
    assert_default_entry(result, has_wizard=True)
    booted = [arg for arg in kernel_cmdline(result).split() if not arg.startswith(LOADER_ARGS)]
    assert booted == default_entry_args(isolinux_config)
