"""Where the boot time goes, for docs/benchmarks.md: one boot of the USB image as a person
starts it (OVMF, TCG, one CPU), timed by the host's clock at each milestone of the serial
console and at the wizard's first screen (read by OCR, as a person sees it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from boot_test.qemu import BootOptions
from boot_test.screen import contains
from boot_test.session import Session, booted

# (phase that ends here, text on the serial console that ends it), in boot order.
MILESTONES = (
    ("firmware, shim and GRUB", "Linux version"),
    ("kernel until the initramfs runs", "Run /init as init process"),
    # TOMOYO prints this when /sbin/init is executed: the initramfs has switched root
    ("initramfs: live-boot finds the stick, mounts the squashfs layers",
     "Not activating Mandatory Access Control"),
    ("systemd starting (loaded from the squashfs)", "running in system mode"),
    ("systemd units before the wizard", "Starting golemwz.service"),
)
FIRST_SCREEN = ("wizard's first screen drawn", "Do you accept these terms of use?")
POLL_SECONDS = 1.0

Phase = tuple[str, float | None]  # (phase, seconds since QEMU started; None: not seen)


def milestones_seen(text: str, seen: dict[str, float], now: float) -> None:
    """Record `now` for each milestone that appears in `text` for the first time."""
    for _phase, marker in MILESTONES:
        if marker not in seen and marker in text:
            seen[marker] = now


def phases(seen: dict[str, float], screen_at: float | None) -> list[Phase]:
    rows: list[Phase] = [(phase, seen.get(marker)) for phase, marker in MILESTONES]
    return [*rows, (FIRST_SCREEN[0], screen_at)]


def watch_boot(session: Session, timeout: float,
               clock: Callable[[], float] = time.monotonic) -> list[Phase]:
    started = clock()
    seen: dict[str, float] = {}
    last_marker = MILESTONES[-1][1]
    while clock() - started < timeout and last_marker not in seen:
        if session.drain(POLL_SECONDS) == "exited":
            break
        milestones_seen(session.serial_text(), seen, clock() - started)
    screen_at = None
    if last_marker in seen:
        remaining = max(timeout - (clock() - started), 0.0)
        text = session.wait_screen("first-screen", [FIRST_SCREEN[1]], remaining)
        if contains(text, FIRST_SCREEN[1]):
            screen_at = clock() - started
    return phases(seen, screen_at)


def boot_to_wizard(image: Path, temp: Path, timeout: float = 900.0) -> list[Phase]:
    """Boot `image` once and time each milestone up to the wizard's first screen."""
    temp.mkdir(parents=True, exist_ok=True)
    options = BootOptions(image=image, media="usb", firmware="uefi", timeout=None,
                          log_path=temp / "boot.log")
    with booted(options, temp, temp) as session:
        return watch_boot(session, timeout)


def render_boot(rows: Sequence[Phase], log: Path) -> list[str]:
    """The boot section: each phase's length and when it ended."""
    lines = ["", "## Boot to the wizard's first screen (USB image, OVMF, TCG, 1 CPU)", "",
             "Host clock at each milestone of the serial console; the last one is the "
             f"screen read by OCR every few seconds. Console log: `{log}`.", "",
             "| phase | seconds | ends at |", "| --- | --- | --- |"]
    previous: float | None = 0.0
    for phase, at in rows:
        length = "-" if at is None or previous is None else f"{at - previous:.1f}"
        lines.append(f"| {phase} | {length} | {'-' if at is None else f'{at:.1f} s'} |")
        previous = at
    return lines
