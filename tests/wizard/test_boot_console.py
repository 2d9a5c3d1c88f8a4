"""boot_console against real file descriptors: a pty for the VT, a datagram socket for
systemd's notification socket, a sysfs file for the active consoles."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from golemwz import boot_console
from golemwz.boot_console import CLEAR_SCREEN, BootScreen, console_is_a_vt, notify_systemd
from wizard_fakes import RecordingRunner, quiet_reporter


@pytest.fixture
def pty() -> Iterator[tuple[int, int]]:
    """(the terminal side the wizard reads, the side a keyboard writes)."""
    controller, terminal = os.openpty()
    yield terminal, controller
    os.close(controller)
    os.close(terminal)


def screen_on(fd: int, dev_root: Path | None = None,
              runner: RecordingRunner | None = None) -> BootScreen:
    return BootScreen(quiet_reporter(), runner or RecordingRunner(), fd=fd,
                      dev_root=dev_root or Path("/nonexistent"))


def test_a_key_press_ends_the_wait_and_is_not_echoed(pty: tuple[int, int]) -> None:
    terminal, keyboard = pty
    screen = screen_on(terminal)
    waiting = threading.Event()

    def press_when_waiting() -> None:
        waiting.wait(10)
        os.write(keyboard, b"\x1b[A")  # an arrow key: one escape sequence

    presser = threading.Thread(target=press_when_waiting)
    presser.start()
    assert screen.wait_for_key(10, waiting.set) is True
    presser.join()
    os.set_blocking(keyboard, False)
    with pytest.raises(BlockingIOError):
        os.read(keyboard, 100)  # nothing echoed back onto the screen


def test_keys_typed_before_the_screen_do_not_dismiss_it(pty: tuple[int, int]) -> None:
    terminal, keyboard = pty
    os.write(keyboard, b"\r")  # an Enter pressed during the run
    time.sleep(0.1)
    started = time.monotonic()
    assert screen_on(terminal).wait_for_key(0.5, lambda: None) is False
    assert time.monotonic() - started >= 0.45


def test_the_terminal_mode_is_restored_after_the_wait(pty: tuple[int, int]) -> None:
    import termios

    terminal, _keyboard = pty
    before = termios.tcgetattr(terminal)
    screen_on(terminal).wait_for_key(0.05, lambda: None)
    assert termios.tcgetattr(terminal) == before


def test_without_a_terminal_nothing_waits(tmp_path: Path) -> None:
    with open(tmp_path / "not-a-tty", "w+b") as plain:
        called: list[bool] = []
        assert screen_on(plain.fileno()).wait_for_key(None, lambda: called.append(True)) \
            is False
        assert called == []


def test_clear_homes_and_erases(pty: tuple[int, int]) -> None:
    terminal, keyboard = pty
    screen_on(terminal).clear()
    assert os.read(keyboard, 100) == CLEAR_SCREEN


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_one_datagram_to_the_socket(tmp_path: Path, abstract: bool) -> None:
    name = f"@golemwz-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name[1:] if abstract else name)
        assert notify_systemd("READY=1\nSTATUS=done", name) is True
        assert systemd.recv(100) == b"READY=1\nSTATUS=done"


def test_notify_without_a_socket_does_nothing() -> None:
    assert notify_systemd("READY=1", None) is False
    assert notify_systemd("READY=1", "") is False


@pytest.mark.parametrize("active,expected", [
    ("tty0 ttyS0\n", False),  # the boot entries: /dev/console is the serial port
    ("ttyS0 tty0\n", True),
    ("tty0\n", True),  # no serial port registered: the console is the screen
    ("tty1\n", True),
    ("ttyUSB0\n", False),
    ("", False),
])
def test_console_is_a_vt(tmp_path: Path, active: str, expected: bool) -> None:
    (tmp_path / "class/tty/console").mkdir(parents=True)
    (tmp_path / "class/tty/console/active").write_text(active)
    assert console_is_a_vt(tmp_path) is expected


def test_console_without_sysfs_is_not_a_vt(tmp_path: Path) -> None:
    assert console_is_a_vt(tmp_path) is False


def test_kernel_messages_fall_back_to_console_off_when_no_vt_can_take_them(
        pty: tuple[int, int], tmp_path: Path) -> None:
    terminal, _keyboard = pty
    runner = RecordingRunner()
    screen_on(terminal, dev_root=tmp_path, runner=runner).move_kernel_messages()
    assert runner.argvs == [("dmesg", "--console-off")]


def test_kernel_messages_are_redirected_with_tioclinux(
        pty: tuple[int, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal, _keyboard = pty
    (tmp_path / "tty12").touch()
    calls: list[tuple[int, bytes]] = []
    monkeypatch.setattr(boot_console.fcntl, "ioctl",
                        lambda fd, request, arg: calls.append((request, arg)))
    runner = RecordingRunner()
    screen_on(terminal, dev_root=tmp_path, runner=runner).move_kernel_messages()
    assert calls == [(0x541C, bytes([11, 12]))]
    assert runner.argvs == []  # the console level is left alone: serial keeps them
