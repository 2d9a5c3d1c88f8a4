"""The wizard as a person meets it at the screen (issue 8), in QEMU under OVMF.

The keyboard is QMP `send-key`; the screen is read back from QMP `screendump` by
OCR (boot_test.screen), since without a first-boot TOML the guest has no SSH
key. The screendump is what the VGA card shows, i.e. the active VT. Each screen
read is kept next to the test's logs (NAME.ppm, NAME.txt).

- no first-boot TOML: the terms dialog is on screen with no key pressed; switching
  to tty2 and back leaves it there (logind's autovt getty took tty6 over before);
  terms, storage and the password are answered by keys on that VT; the final
  error screen (QEMU has no GPU) stays until a key; then tty1 shows the autologin
  and a motd naming the error. No getty is started on tty1 meanwhile.
- NO AUTOSTART: tty1 shows the autologin, the wizard never runs; this is also the
  suite's NO AUTOSTART boot under OVMF (skip_autostart on the kernel command line).
- The unattended first-boot TOML is the first boot of test_wizard_boot.py, which
  reads tty1 exactly (/dev/vcsu1 over SSH) and by OCR: one boot serves both.

The gpu-node image has no GOLEM packages, so the wizard asks no GLM questions
here (it skips those steps); the dialog tmux test walks them.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import pytest

from boot_test.qemu import NO_AUTOSTART_ENTRY, BootOptions, ConsoleWatcher, select_menu_entry
from boot_test.screen import contains
from boot_test.session import Session, booted
from tests.conftest import MEASUREMENTS, BuiltImage

pytestmark = [pytest.mark.root, pytest.mark.boot]

BOOT_TIMEOUT = 600.0  # power-on to the first dialog under TCG on a busy machine
STEP_TIMEOUT = 240.0  # one dialog to the next (the network wait is the longest)
HOLD_CHECK_SECONDS = 30.0  # the final screen must still be there after this
POWEROFF_TIMEOUT = 120.0
GROWTH = 2**30
WAITING_FOR_KEY = "golemwz: the final screen stays on tty1 until a key is pressed"


def run(*argv: str) -> None:
    import subprocess

    result = subprocess.run(list(argv), capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr.strip()}"


def stick_copy(image: Path, directory: Path, growth: int = 0) -> Path:
    copy = directory / "stick.img"
    run("cp", "--sparse=always", str(image), str(copy))
    if growth:
        os.truncate(copy, copy.stat().st_size + growth)  # a larger stick
    return copy


def expect_screen(session: Session, name: str, phrases: list[str],
                  timeout: float = STEP_TIMEOUT) -> str:
    text = session.wait_screen(name, phrases, timeout)
    missing = [p for p in phrases if not contains(text, p)]
    assert not missing, f"screen {name}: {missing} not shown; OCR read:\n{text}\n" \
                        f"serial console ended with:\n{session.serial_text()[-3000:]}"
    return text


def no_getty_on_tty1(serial: str) -> None:
    for unit in ("getty@tty1", "autovt@tty1", "golem-login.service"):
        assert f"Started {unit}" not in serial, f"{unit} started on the wizard's VT"


def test_no_first_boot_file_the_wizard_is_on_screen_and_walked_by_keys(
        gpu_node_image: BuiltImage, tmp_path: Path) -> None:
    started = time.monotonic()
    image = stick_copy(gpu_node_image.img, tmp_path, GROWTH)
    options = BootOptions(image=image, media="usb", firmware="uefi", snapshot=False,
                          log_path=tmp_path / "serial.log")
    with tempfile.TemporaryDirectory(prefix="golem-screen-") as temp, \
            booted(options, Path(temp), tmp_path) as session:
        assert session.wait_serial("golemwz: kernel messages go to tty12", BOOT_TIMEOUT), \
            session.serial_text()[-3000:]
        # No key pressed yet: the terms dialog is what the screen shows.
        expect_screen(session, "1-terms", ["GOLEM GPU live - provider wizard", "Terms of use",
                                           "Do you accept these terms of use?"])
        # Another VT and back (as someone trying Ctrl-Alt-F2 would): still the wizard.
        session.keys("alt+f2")
        expect_screen(session, "2-tty2", ["login:"])
        session.keys("alt+f1")
        expect_screen(session, "3-back-on-tty1", ["Do you accept these terms of use?"])
        session.keys("ret")  # Yes
        expect_screen(session, "4-storage", ["Where should the provider keep its data?",
                                             "Golem storage"])
        session.keys("ret")  # the first entry: Golem storage
        expect_screen(session, "5-password", ["The password of user", "Write it down now"])
        session.keys("ret")
        final = expect_screen(session, "6-final", [
            "GOLEM provider wizard: FAILED", "Error: no compatible GPU",
            "Fix: install an NVIDIA card", "generated at this boot", "Reach it: ssh golem@",
            "Press any key when you have read this"])
        assert session.wait_serial(WAITING_FOR_KEY, STEP_TIMEOUT)
        # It stays: nothing takes tty1 until a key is pressed.
        session.drain(HOLD_CHECK_SECONDS)
        expect_screen(session, "7-final-still", ["GOLEM provider wizard: FAILED",
                                                 "Press any key when you have read this"],
                      timeout=0)
        serial = session.serial_text()
        no_getty_on_tty1(serial)
        assert "golemwz: a key was pressed" not in serial
        session.keys("spc")
        after = expect_screen(session, "8-autologin", [
            "login: golem (automatic login)", "The GOLEM provider wizard failed at this boot",
            "no compatible GPU"])
        assert not contains(after, "generated at this boot")  # the password is gone
        serial = session.serial_text()
        assert session.power_off(POWEROFF_TIMEOUT), "the guest did not power off"
    MEASUREMENTS["wizard screen walk, no TOML (USB, OVMF, TCG, power-on to off)"] = \
        f"{time.monotonic() - started:.0f}s, {len(session.screens)} screens read"
    assert "golemwz: a key was pressed on tty1" in serial
    assert serial.index(WAITING_FOR_KEY) < serial.index("golemwz: a key was pressed on tty1")
    # The grown partition is reported with its new size, not the image's 0.1 GiB.
    grown = re.search(r"golemwz: storage configured: /dev/sda5 Golem storage.*\(ext4, "
                      r"(\d+\.\d) GiB\)", serial)
    assert grown and float(grown.group(1)) >= 1.0, serial[-3000:]
    assert "golemwz: grew Golem storage" in serial
    assert contains(final, "storage /dev/sda5 Golem storage")
    print("\n".join(f"--- {name}\n{text}" for name, text in session.screens.items()))


def test_no_autostart_shows_the_tty1_autologin_and_no_wizard(
        gpu_node_image: BuiltImage, tmp_path: Path) -> None:
    started = time.monotonic()
    options = BootOptions(image=gpu_node_image.img, media="usb", firmware="uefi",
                          log_path=tmp_path / "serial.log")
    with tempfile.TemporaryDirectory(prefix="golem-screen-") as temp, \
            booted(options, Path(temp), tmp_path) as session:
        chosen = ConsoleWatcher("NO AUTOSTART, wizard and provider skipped",
                                [select_menu_entry(NO_AUTOSTART_ENTRY)])
        assert session.wait_serial("NO AUTOSTART, wizard and provider skipped", BOOT_TIMEOUT,
                                   chosen), session.serial_text()[-3000:]
        screen = expect_screen(session, "autologin", ["login: golem (automatic login)",
                                                      "Re-run the wizard: sudo golemwz"])
        assert not contains(screen, "provider wizard")
        serial = session.serial_text()
        assert session.power_off(POWEROFF_TIMEOUT), "the guest did not power off"
    MEASUREMENTS["NO AUTOSTART screen (USB, OVMF, TCG, power-on to off)"] = \
        f"{time.monotonic() - started:.0f}s"
    assert "golemwz:" not in serial
    # What test_boot_media checks of NO AUTOSTART under SeaBIOS, here under OVMF.
    cmdline = re.search(r"Command line: (.*)", serial)
    assert cmdline and "skip_autostart" in cmdline.group(1).split(), serial[-3000:]
    assert "Starting golemwz.service" not in serial
    assert "golem-autologin.service" in serial
    print(f"--- autologin\n{screen}")
