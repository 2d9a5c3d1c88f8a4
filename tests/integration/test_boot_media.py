"""Boot the ISO and the USB image in QEMU (TCG) under SeaBIOS and OVMF, to the
login prompt on ttyS0; drive the GRUB menu to NO AUTOSTART; boot with Secure
Boot enforced.

UEFI is booted with Secure Boot enforced only: the same shim, GRUB and kernel as
with Secure Boot off, plus the signature checks, so a separate plain-OVMF boot
of each medium would add CI minutes and no path. NO AUTOSTART under OVMF is the
screen test's boot (test_wizard_screen.py), which also checks the command line.

The media are the pipeline's gpu-node build (tests/conftest.py), or, with
`--live-dir DIR`, made by the bootloader, iso and usb stages from that live/ dir
(vmlinuz, initrd.img with live-boot, filesystem.squashfs).
One QEMU at a time: the tests run sequentially and each stops its QEMU.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from boot_test.qemu import (
    FIRMWARES,
    MEDIA,
    NO_AUTOSTART_ENTRY,
    BootOptions,
    BootResult,
    boot,
    select_menu_entry,
    strip_ansi,
)
from tests.conftest import MEASUREMENTS
from tests.integration.test_bootmedia_tools import build_boot_media

pytestmark = [pytest.mark.root, pytest.mark.boot]

# An upper bound for a slow shared machine (a boot takes about a minute under TCG);
# nothing asserts how long a boot took.
BOOT_TIMEOUT = 480.0
LOGIN_PROMPT = "login:"
KERNEL_CMDLINE = re.compile(r"Command line: (.*)")


@pytest.fixture(scope="session")
def boot_media(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"iso": the hybrid ISO, "usb": the GPT image}: the pipeline's gpu-node build, or
    media made from `--live-dir DIR` (a squashfs stage's live/) when that is given."""
    given = request.config.getoption("--live-dir")
    if not given:
        built = request.getfixturevalue("gpu_node_image")
        return {"iso": built.iso, "usb": built.img}
    path = Path(given)
    missing = [n for n in ("vmlinuz", "initrd.img", "filesystem.squashfs")
               if not (path / n).is_file()]
    if missing:
        pytest.fail(f"--live-dir {path} lacks {', '.join(missing)}")
    _, images = build_boot_media(path, tmp_path_factory.mktemp("boot-media"))
    for media, image in images.items():
        MEASUREMENTS[f"size {media} ({image.name})"] = (
            f"{image.stat().st_size / 2**20:.0f} MiB apparent, "
            f"{image.stat().st_blocks * 512 / 2**20:.0f} MiB allocated")
    return images


@pytest.fixture(scope="session")
def has_wizard(request: pytest.FixtureRequest) -> bool:
    """The pipeline's image carries the wizard; a bare --live-dir system does not."""
    return not request.config.getoption("--live-dir")


WIZARD_STARTING = "Starting golemwz.service"


def console_text(result: BootResult) -> str:
    return strip_ansi(result.log_path.read_bytes().decode("utf-8", "replace"))


def kernel_cmdline(result: BootResult) -> str:
    found = KERNEL_CMDLINE.search(console_text(result))
    assert found, f"no kernel command line on the console: {result.log_path}"
    return found.group(1)


def boot_to_login(image: Path, media: str, firmware: str, logs: Path, name: str,
                  **options: object) -> BootResult:
    result = boot(BootOptions(image, media=media, firmware=firmware,  # type: ignore[arg-type]
                              timeout=BOOT_TIMEOUT, expect=LOGIN_PROMPT,
                              log_path=logs / f"{name}.log", **options))  # type: ignore[arg-type]
    MEASUREMENTS[f"boot {name} to login"] = f"{result.seconds:.0f}s"
    assert result.returncode == 0, f"{result.reason}; console log: {result.log_path}"
    assert "[FAILED]" not in console_text(result), f"failed units: {result.log_path}"
    return result


def assert_default_entry(result: BootResult, has_wizard: bool) -> None:
    cmdline = kernel_cmdline(result).split()
    assert {"boot=live", "intel_iommu=on", "iommu=pt", "console=ttyS0,115200n8"} <= set(cmdline)
    assert "skip_autostart" not in cmdline  # the default entry
    if has_wizard:  # the default entry starts the wizard (on tty1)
        assert WIZARD_STARTING in console_text(result)


@pytest.mark.parametrize("media", MEDIA)
def test_boots_to_login_on_serial(boot_media: dict[str, Path], media: str,
                                  tmp_path: Path, has_wizard: bool) -> None:
    result = boot_to_login(boot_media[media], media, "bios", tmp_path, f"{media}-bios")
    assert_default_entry(result, has_wizard)


def test_no_autostart_entry_passes_skip_autostart(boot_media: dict[str, Path],
                                                  tmp_path: Path, has_wizard: bool) -> None:
    result = boot_to_login(boot_media["usb"], "usb", "bios", tmp_path,
                           "usb-bios-no-autostart",
                           actions=(select_menu_entry(NO_AUTOSTART_ENTRY),))
    assert "skip_autostart" in kernel_cmdline(result).split()
    if has_wizard:  # neither wizard nor provider; golem is logged into tty1 instead
        text = console_text(result)
        assert WIZARD_STARTING not in text
        assert "NO AUTOSTART, wizard and provider skipped" in text
        assert "golem-autologin.service" in text


@pytest.mark.parametrize("firmware", FIRMWARES)
def test_iso_boots_from_a_stick(boot_media: dict[str, Path], firmware: str,
                                tmp_path: Path) -> None:
    boot_to_login(boot_media["iso"], "usb", firmware, tmp_path, f"iso-as-usb-{firmware}")


@pytest.mark.parametrize("media", MEDIA)
def test_boots_with_secure_boot_enforced(boot_media: dict[str, Path], media: str,
                                         tmp_path: Path, has_wizard: bool) -> None:
    result = boot_to_login(boot_media[media], media, "uefi", tmp_path, f"{media}-secure-boot",
                           secure_boot=True)
    assert_default_entry(result, has_wizard)
    # The kernel reads the SecureBoot variable itself: a firmware that skipped the
    # signature checks would have it off, and this line would say "disabled".
    assert "Secure boot enabled" in console_text(result)
