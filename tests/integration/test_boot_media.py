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
The boots are independent, so the module boots what its selected tests need up front,
one QEMU per host core (boot_test/parallel.py), and each test checks its own boot.
One stick is written as a person following the README would: `bmaptool copy` of the
release's block map onto a (loop) block device, booted from that device.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import pytest

from boot_test.parallel import boot_all
from boot_test.qemu import (
    FIRMWARES,
    MEDIA,
    NO_AUTOSTART_ENTRY,
    BootOptions,
    BootResult,
    ConsoleAction,
    Firmware,
    Media,
    select_menu_entry,
    strip_ansi,
)
from builder.mounts import attach_loop
from builder.runner import SubprocessRunner
from release.artifacts import block_map
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


BMAPTOOL_STICK = "usb-written-by-bmaptool"


@pytest.fixture(scope="module")
def bmaptool_stick(boot_media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Path]:
    """A loop device the USB image was written to with `bmaptool copy` and the release's
    block map (release.artifacts.block_map): only the mapped blocks reach the device."""
    work = tmp_path_factory.mktemp("bmaptool-stick")
    runner = SubprocessRunner(work / "commands.log")
    image = boot_media["usb"]
    bmap = block_map(runner, image, work)
    backing = work / "stick.raw"
    with open(backing, "wb") as handle:  # a used stick: old bytes where the map has none
        handle.truncate(image.stat().st_size)
        handle.seek(image.stat().st_size // 2)
        handle.write(b"old data " * 4096)
    with ExitStack() as stack:
        device = Path(attach_loop(stack, runner, backing))
        runner.run(["bmaptool", "copy", "--bmap", str(bmap), str(image), str(device)])
        yield device


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


class BootCase(NamedTuple):
    image: str  # which of boot_media
    media: Media  # how QEMU attaches it
    firmware: Firmware
    secure_boot: bool = False
    actions: tuple[ConsoleAction, ...] = ()


# Each boot of this module, by name.
BOOTS: dict[str, BootCase] = {
    **{f"{media}-bios": BootCase(media, media, "bios") for media in MEDIA},
    "usb-bios-no-autostart": BootCase("usb", "usb", "bios",
                                      actions=(select_menu_entry(NO_AUTOSTART_ENTRY),)),
    **{f"iso-as-usb-{firmware}": BootCase("iso", "usb", firmware) for firmware in FIRMWARES},
    **{f"{media}-secure-boot": BootCase(media, media, "uefi", secure_boot=True)
       for media in MEDIA},
    BMAPTOOL_STICK: BootCase(BMAPTOOL_STICK, "usb", "bios"),
}


# Each test's boot: a name in BOOTS, formatted with the test's parameters.
BOOT_OF_TEST = {
    "test_boots_to_login_on_serial": "{media}-bios",
    "test_no_autostart_entry_passes_skip_autostart": "usb-bios-no-autostart",
    "test_iso_boots_from_a_stick": "iso-as-usb-{firmware}",
    "test_boots_with_secure_boot_enforced": "{media}-secure-boot",
    "test_a_stick_written_by_bmaptool_boots": BMAPTOOL_STICK,
}


def boot_name(item: pytest.Item) -> str:
    """The boot a test of this module checks, from its name and parameters."""
    callspec = getattr(item, "callspec", None)
    params = dict(callspec.params) if callspec else {}
    return BOOT_OF_TEST[getattr(item, "originalname", item.name)].format(**params)


@pytest.fixture(scope="module")
def boots(request: pytest.FixtureRequest, boot_media: dict[str, Path],
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, BootResult]:
    """The boots of this module's selected tests, run side by side."""
    wanted = sorted({boot_name(item) for item in request.session.items
                     if getattr(item, "module", None) is request.module})
    logs = tmp_path_factory.mktemp("boot-media-logs")
    media = dict(boot_media)
    if BMAPTOOL_STICK in wanted:
        media[BMAPTOOL_STICK] = request.getfixturevalue("bmaptool_stick")
    jobs = {name: BootOptions(media[case.image], media=case.media,
                              firmware=case.firmware, secure_boot=case.secure_boot,
                              actions=case.actions, timeout=BOOT_TIMEOUT,
                              expect=LOGIN_PROMPT, log_path=logs / f"{name}.log")
            for name, case in ((name, BOOTS[name]) for name in wanted)}
    results = boot_all(jobs)
    for name, result in results.items():
        MEASUREMENTS[f"boot {name} to login (two at a time)"] = f"{result.seconds:.0f}s"
    return results


def booted_to_login(boots: dict[str, BootResult], name: str) -> BootResult:
    result = boots[name]
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
def test_boots_to_login_on_serial(boots: dict[str, BootResult], media: str,
                                  has_wizard: bool) -> None:
    assert_default_entry(booted_to_login(boots, f"{media}-bios"), has_wizard)


def test_no_autostart_entry_passes_skip_autostart(boots: dict[str, BootResult],
                                                  has_wizard: bool) -> None:
    result = booted_to_login(boots, "usb-bios-no-autostart")
    assert "skip_autostart" in kernel_cmdline(result).split()
    if has_wizard:  # neither wizard nor provider; golem is logged into tty1 instead
        text = console_text(result)
        assert WIZARD_STARTING not in text
        assert "NO AUTOSTART, wizard and provider skipped" in text
        assert "golem-autologin.service" in text


@pytest.mark.parametrize("firmware", FIRMWARES)
def test_iso_boots_from_a_stick(boots: dict[str, BootResult], firmware: str) -> None:
    booted_to_login(boots, f"iso-as-usb-{firmware}")


@pytest.mark.parametrize("media", MEDIA)
def test_boots_with_secure_boot_enforced(boots: dict[str, BootResult], media: str,
                                         has_wizard: bool) -> None:
    result = booted_to_login(boots, f"{media}-secure-boot")
    assert_default_entry(result, has_wizard)
    # The kernel reads the SecureBoot variable itself: a firmware that skipped the
    # signature checks would have it off, and this line would say "disabled".
    assert "Secure boot enabled" in console_text(result)


def test_a_stick_written_by_bmaptool_boots(boots: dict[str, BootResult],
                                           has_wizard: bool) -> None:
    assert_default_entry(booted_to_login(boots, BMAPTOOL_STICK), has_wizard)
