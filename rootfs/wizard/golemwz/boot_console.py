"""The virtual terminal a person looks at when the machine boots.

golemwz.service runs the wizard on tty1, the VT the kernel shows at power-on,
so the first dialog is in front of the person without a key press (the
upstream image used tty6 and `chvt`, but logind reserves tty6 for a getty that
took the screen over). With --at-boot the wizard also:

- moves kernel messages to another VT (TIOCL_SETKMSGREDIRECT), so they cannot
  overwrite a dialog or the final screen. Unlike `dmesg --console-off` this
  leaves them on the serial console, where boot logs are read; the console
  level is lowered only if the redirect is refused;
- tells systemd (sd_notify READY=1) when the configuration is over, so the
  boot and the provider go on while the final screen waits for a key;
- holds the final screen until a key is pressed (or a deadline passes).

Manual runs (`sudo golemwz` from a shell) get a NullScreen: no waiting, no
notification, the terminal left as it is.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import socket
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from golemwz.report import Reporter
from golemwz.runner import Runner

# Kernel messages go here while tty1 is the wizard's (Alt+F12 shows them);
# logind starts gettys on tty1..tty6 only (NAutoVTs), so nothing else uses it.
KERNEL_MESSAGES_VT = 12
TIOCLINUX = 0x541C  # <asm-generic/ioctls.h>
TIOCL_SETKMSGREDIRECT = 11  # <linux/tiocl.h>: then the VT number, 0 = the shown one
# ESC [ H, ESC [ 2 J: home and erase the screen (console_codes(4)).
CLEAR_SCREEN = b"\x1b[H\x1b[2J"
KEY_READ_BYTES = 64  # an arrow or function key is an escape sequence: take it whole


class Screen(Protocol):
    @property
    def holds(self) -> bool:
        """True at boot: the final screen waits for a key, systemd is notified."""

    @property
    def name(self) -> str:
        """The terminal, as a person names it (tty1)."""

    def wait_for_key(self, timeout: float | None, on_waiting: Callable[[], None]) -> bool:
        """Wait for a key press (True) or the timeout (False); on_waiting runs once the
        keys typed earlier have been discarded, i.e. when a press starts to count."""

    def clear(self) -> None: ...

    def notify(self, state: str) -> None:
        """sd_notify(3) state lines such as READY=1, STATUS=..."""


class NullScreen:
    """A manual run: nothing is held, nobody is notified."""

    holds = False
    name = "this terminal"

    def wait_for_key(self, timeout: float | None, on_waiting: Callable[[], None]) -> bool:
        return False

    def clear(self) -> None:
        pass

    def notify(self, state: str) -> None:
        pass


def notify_systemd(state: str, socket_path: str | None) -> bool:
    """Send `state` to systemd's notification socket ($NOTIFY_SOCKET); False without one.

    The protocol is one datagram on an AF_UNIX socket; a leading '@' names an
    abstract socket. Done here rather than through systemd-notify, which
    reports for its own PID instead of the service's main process."""
    if not socket_path:
        return False
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_socket:
        notify_socket.sendto(state.encode(), address)
    return True


def console_is_a_vt(sysfs_root: Path) -> bool:
    """True when /dev/console is a virtual terminal rather than a serial port.

    sysfs lists the active consoles with /dev/console's last. The boot entries
    end with console=ttyS0, but a machine whose serial port does not register
    makes tty0 (the screen) the console: progress lines written there would
    land on the wizard's dialogs."""
    try:
        active = (sysfs_root / "class/tty/console/active").read_text().split()
    except OSError:
        return False
    return bool(active) and re.fullmatch(r"tty\d*", active[-1]) is not None


class BootScreen:
    """The wizard's own VT, which is its standard input under golemwz.service."""

    holds = True

    def __init__(self, reporter: Reporter, runner: Runner, fd: int = 0,
                 dev_root: Path = Path("/dev")) -> None:
        self.reporter = reporter
        self.runner = runner
        self.fd = fd
        self.dev_root = dev_root
        try:
            self.name = os.path.basename(os.ttyname(fd))
        except OSError:
            self.name = "the console"

    def move_kernel_messages(self, vt: int = KERNEL_MESSAGES_VT) -> None:
        """Show kernel messages on `vt` instead of the shown VT; serial keeps them."""
        try:
            # Opening allocates the VT: the kernel redirects only to an allocated one.
            target = os.open(self.dev_root / f"tty{vt}", os.O_WRONLY | os.O_NOCTTY)
            try:
                fcntl.ioctl(target, TIOCLINUX, bytes([TIOCL_SETKMSGREDIRECT, vt]))
            finally:
                os.close(target)
        except OSError as refused:
            self.reporter.detail(f"kernel messages not moved to tty{vt}: {refused}")
            # The console level then, at the price of the serial console's copy.
            self.runner.run(["dmesg", "--console-off"], check=False)
            self.reporter.step("kernel messages are no longer printed on the console")
            return
        self.reporter.step(f"kernel messages go to tty{vt} (Alt+F{vt}) and the serial "
                           f"console, not over the wizard on {self.name}")

    def wait_for_key(self, timeout: float | None, on_waiting: Callable[[], None]) -> bool:
        if not os.isatty(self.fd):
            return False
        saved = termios.tcgetattr(self.fd)
        quiet = termios.tcgetattr(self.fd)
        quiet[3] &= ~(termios.ICANON | termios.ECHO)  # one key, not a line; not echoed
        quiet[6][termios.VMIN] = 1
        quiet[6][termios.VTIME] = 0
        try:
            termios.tcsetattr(self.fd, termios.TCSANOW, quiet)
            # An Enter typed during the run must not dismiss a screen nobody read.
            termios.tcflush(self.fd, termios.TCIFLUSH)
            on_waiting()
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return False
            try:
                os.read(self.fd, KEY_READ_BYTES)
            except OSError:
                pass  # hung up (another unit took the VT): the screen is gone anyway
            return True
        finally:
            try:
                termios.tcsetattr(self.fd, termios.TCSAFLUSH, saved)
            except termios.error:
                pass

    def clear(self) -> None:
        try:
            os.write(self.fd, CLEAR_SCREEN)
        except OSError:
            pass

    def notify(self, state: str) -> None:
        try:
            notify_systemd(state, os.environ.get("NOTIFY_SOCKET"))
        except OSError as unreachable:
            self.reporter.detail(f"systemd was not notified ({state!r}): {unreachable}")
