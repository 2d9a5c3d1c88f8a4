"""Boot a built ISO or USB image in QEMU and watch its serial console.

`qemu_argv` is a pure function of the options (tests check it without QEMU);
`watch_console` drives any object with read/write, so the expect, timeout and
key-sending logic is tested against a fake console; `boot` ties both to a real
QEMU process and always stops it and removes its temp files, also when
interrupted.

Selecting a GRUB menu entry: GRUB draws its menu on the serial port too, so a
ConsoleAction waits for the menu header ("GNU GRUB") and types GRUB's
single-byte menu keys: "v" moves down one entry, Enter boots it. Single bytes
matter under OVMF, where firmware and GRUB may both read the serial port and
an escape sequence (the arrow keys) could be split between them.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from builder.config import image_file_name
from builder.errors import BuildError

Media = Literal["iso", "usb"]
Firmware = Literal["bios", "uefi"]
MEDIA: tuple[Media, ...] = ("iso", "usb")
FIRMWARES: tuple[Firmware, ...] = ("bios", "uefi")

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot: firmware that enforces it (needs SMM) and variables with
# Microsoft's keys enrolled, as on a typical PC; shim is signed by Microsoft.
OVMF_SECBOOT_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")

GRUB_MENU_HEADER = "GNU GRUB"
GRUB_KEY_DOWN = b"v"
GRUB_KEY_BOOT = b"\r"
# CSI sequences (cursor moves, colours), charset selections and other
# two-byte escapes that GRUB's terminfo output and the kernel emit.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[@-Z\\-_]")
# Past this much unmatched console text, only the tail is kept for matching.
KEEP_TEXT = 16 * 1024


@dataclass(frozen=True)
class ConsoleAction:
    """When `trigger` appears on the console, type `keys` (once)."""

    trigger: str
    keys: bytes


def select_menu_entry(index: int) -> ConsoleAction:
    """Boot the GRUB menu entry at `index` (0 is the default entry)."""
    return ConsoleAction(GRUB_MENU_HEADER, GRUB_KEY_DOWN * index + GRUB_KEY_BOOT)


NO_AUTOSTART_ENTRY = 1  # position of "NO AUTOSTART" in rootfs/boot/grub.cfg.j2


def image_path(work_dir: Path, version: str, media: Media) -> Path:
    """Where the build publishes the image of `media` for a version."""
    return work_dir / image_file_name(version, media)


@dataclass(frozen=True)
class BootOptions:
    image: Path
    media: Media = "usb"
    firmware: Firmware = "uefi"
    timeout: float | None = 600.0  # seconds; None: no limit
    expect: str | None = None  # text on the console that means success
    kvm: bool = False
    memory_mib: int = 2048
    cpus: int = 1
    log_path: Path | None = None  # default: next to the image
    actions: tuple[ConsoleAction, ...] = ()
    # Serial console on the caller's terminal (type into the guest; Ctrl-A x quits)
    # instead of a pipe that boot() watches. Only without expect and actions.
    interactive: bool = False
    secure_boot: bool = False  # UEFI only
    snapshot: bool = True  # False: the guest's writes reach the image file
    extra_args: tuple[str, ...] = ()  # appended to the QEMU command line (e.g. a NIC)
    qemu: str = "qemu-system-x86_64"
    ovmf_code: Path = OVMF_CODE
    ovmf_vars: Path = OVMF_VARS  # a template: boot() hands QEMU a copy
    ovmf_secboot_code: Path = OVMF_SECBOOT_CODE
    ovmf_secboot_vars: Path = OVMF_MS_VARS

    def firmware_files(self) -> tuple[Path, Path]:
        """OVMF's code and variables template for this boot."""
        if self.secure_boot:
            return self.ovmf_secboot_code, self.ovmf_secboot_vars
        return self.ovmf_code, self.ovmf_vars

    def console_log(self) -> Path:
        if self.log_path is not None:
            return self.log_path
        return self.image.parent / f"{self.image.stem}.boot-{self.media}-{self.firmware}.log"


@dataclass(frozen=True)
class BootResult:
    returncode: int  # 0: expected text seen (or clean exit without expect); 1: not
    reason: str
    seconds: float
    log_path: Path


def _drive_value(path: Path) -> str:
    # QEMU option values use "," as separator; a literal comma is doubled.
    return os.fspath(path).replace(",", ",,")


def qemu_argv(options: BootOptions, ovmf_vars_copy: Path | None = None) -> list[str]:
    """The QEMU command line. For UEFI, ovmf_vars_copy is the writable VARS copy."""
    machine = "q35,smm=on" if options.secure_boot else "q35"
    argv = [options.qemu, "-machine", machine, "-m", str(options.memory_mib),
            "-smp", str(options.cpus)]
    argv += ["-accel", "kvm", "-cpu", "host"] if options.kvm else ["-accel", "tcg"]
    argv += ["-nodefaults", "-no-reboot", "-display", "none", "-vga", "std",
             "-device", "virtio-rng-pci"]
    if options.firmware == "uefi":
        if ovmf_vars_copy is None:
            raise ValueError("UEFI boots need a writable copy of the OVMF variables")
        code, _ = options.firmware_files()
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_drive_value(code)}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={_drive_value(ovmf_vars_copy)}"]
        if options.secure_boot:
            # Only SMM code may write the variable store, else Secure Boot is moot.
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    image = _drive_value(options.image)
    if options.media == "usb":
        # A USB stick, as users boot it; snapshot=on leaves the image untouched.
        snapshot = "on" if options.snapshot else "off"
        argv += ["-device", "qemu-xhci,id=xhci",
                 "-drive", f"if=none,id=stick,format=raw,snapshot={snapshot},file={image}",
                 "-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]
    else:
        argv += ["-drive", f"if=none,id=cdrom,media=cdrom,format=raw,readonly=on,file={image}",
                 "-device", "ide-cd,drive=cdrom,bootindex=0"]
    if options.interactive:
        log = _drive_value(options.console_log())
        argv += ["-chardev", f"stdio,id=console,mux=on,logfile={log}",
                 "-serial", "chardev:console", "-mon", "chardev=console"]
    else:
        argv += ["-serial", "stdio", "-monitor", "none"]
    return argv + list(options.extra_args)


class Console(Protocol):
    def read(self, timeout: float) -> bytes | None:
        """Bytes the guest wrote (b"" if none within timeout); None once QEMU is gone."""
        ...

    def write(self, data: bytes) -> None: ...


def strip_ansi(text: str) -> str:
    return ANSI_ESCAPE.sub("", text).replace("\r", "")


@dataclass
class ConsoleWatcher:
    """Matches console output against the pending actions, then against expect.

    Actions fire in order, each once; expect is looked for only in output
    after the last action, so it cannot match text from before a menu choice.
    """

    expect: str | None
    actions: list[ConsoleAction] = field(default_factory=list)
    matched: bool = False
    _raw: bytes = b""

    def feed(self, data: bytes) -> bytes:
        """Take new console output; return the keys to type now (maybe b"")."""
        self._raw += data
        keys = b""
        while self.actions:
            text = strip_ansi(self._raw.decode("utf-8", "replace"))
            if self.actions[0].trigger not in text:
                break
            keys += self.actions.pop(0).keys
            self._raw = b""
        if not self.actions and self.expect is not None and not self.matched:
            text = strip_ansi(self._raw.decode("utf-8", "replace"))
            self.matched = self.expect in text
        if len(self._raw) > 2 * KEEP_TEXT:
            self._raw = self._raw[-KEEP_TEXT:]
        return keys


def watch_console(console: Console, watcher: ConsoleWatcher, timeout: float | None,
                  log: BinaryIO, clock: Callable[[], float] = time.monotonic,
                  echo: Callable[[bytes], None] | None = None,
                  cancelled: Callable[[], bool] = lambda: False) -> str:
    """Read the console until expect matches ("matched"), time runs out
    ("timeout"), QEMU exits ("exited") or the caller gives up ("cancelled", checked
    every second). Everything read goes to `log`."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        if cancelled():
            return "cancelled"
        wait = 1.0
        if deadline is not None:
            remaining = deadline - clock()
            if remaining <= 0:
                return "timeout"
            wait = min(wait, remaining)
        data = console.read(wait)
        if data is None:
            return "exited"
        if not data:
            continue
        log.write(data)
        log.flush()
        if echo:
            echo(data)
        keys = watcher.feed(data)
        if keys:
            console.write(keys)
        if watcher.matched:
            return "matched"


class ProcessConsole:
    """The serial console of a QEMU started with `-serial stdio` and pipes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stdin is not None
        self._out = proc.stdout.fileno()
        self._in = proc.stdin

    def read(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self._out], [], [], timeout)
        if not ready:
            return b""
        data = os.read(self._out, 65536)
        return data or None

    def write(self, data: bytes) -> None:
        try:
            self._in.write(data)
            self._in.flush()
        except BrokenPipeError:
            pass  # QEMU is gone; the next read reports it


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_host(options: BootOptions) -> None:
    if shutil.which(options.qemu) is None:
        raise BuildError(f"{options.qemu} is not installed", "apt install qemu-system-x86")
    # A file, or a block device holding an image (a written stick, a loop device).
    if not (options.image.is_file() or options.image.is_block_device()):
        raise BuildError(f"image {options.image} does not exist",
                         "build it first: make root image")
    if options.secure_boot and options.firmware != "uefi":
        raise BuildError("Secure Boot needs UEFI firmware", "use --firmware uefi")
    if options.firmware == "uefi":
        for path in options.firmware_files():
            if not path.is_file():
                raise BuildError(f"UEFI firmware file {path} is missing", "apt install ovmf")
    if options.interactive and (options.expect or options.actions):
        raise BuildError("an interactive boot cannot also watch for text",
                         "drop --expect, or boot non-interactively")


def boot(options: BootOptions, echo: Callable[[bytes], None] | None = None,
         cancelled: Callable[[], bool] = lambda: False) -> BootResult:
    """Boot the image; with expect, return 0 once it appears and 1 on timeout (or
    when `cancelled()` turns true: another thread stops this boot)."""
    check_host(options)
    started = time.monotonic()
    log_path = options.console_log()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="golem-boot-")))
        vars_copy = None
        if options.firmware == "uefi":
            vars_copy = temp / "OVMF_VARS.fd"  # OVMF writes its variables; keep ours pristine
            shutil.copyfile(options.firmware_files()[1], vars_copy)
        argv = qemu_argv(options, vars_copy)
        if options.interactive:
            return _boot_interactive(argv, options, stack, started, log_path)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(stop_process, proc)
        watcher = ConsoleWatcher(options.expect, list(options.actions))
        with open(log_path, "wb") as log:
            log.write(f"# {' '.join(argv)}\n".encode())
            outcome = watch_console(ProcessConsole(proc), watcher, options.timeout, log,
                                    echo=echo, cancelled=cancelled)
        seconds = time.monotonic() - started
        if outcome == "matched":
            return BootResult(0, f"saw {options.expect!r}", seconds, log_path)
        if outcome == "cancelled":
            return BootResult(1, "cancelled", seconds, log_path)
        if outcome == "timeout":
            what = f"{options.expect!r} did not appear" if options.expect else "still running"
            return BootResult(1, f"timeout after {options.timeout:.0f}s: {what}", seconds,
                              log_path)
        code = proc.wait()
        ok = code == 0 and options.expect is None
        return BootResult(0 if ok else 1, f"QEMU exited with status {code}", seconds, log_path)
    raise AssertionError("unreachable")


def _boot_interactive(argv: Sequence[str], options: BootOptions, stack: ExitStack,
                      started: float, log_path: Path) -> BootResult:
    proc = subprocess.Popen(list(argv))
    stack.callback(stop_process, proc)
    try:
        code = proc.wait(options.timeout)
    except subprocess.TimeoutExpired:
        return BootResult(1, f"timeout after {options.timeout:.0f}s",
                          time.monotonic() - started, log_path)
    return BootResult(0 if code == 0 else 1, f"QEMU exited with status {code}",
                      time.monotonic() - started, log_path)
