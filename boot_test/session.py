"""A booted QEMU guest driven as a person at its monitor would, for screen tests.

The serial console is drained into a log all the time (a full pipe would stall
the guest) and searched for step lines; the keyboard and the screen go through
QMP (boot_test.qmp); the screen is read back by OCR (boot_test.screen), and
where the guest has the test's SSH key, exactly from /dev/vcsuN over SSH.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from boot_test.qemu import (
    BootOptions,
    ConsoleWatcher,
    ProcessConsole,
    check_host,
    qemu_argv,
    stop_process,
    strip_ansi,
    watch_console,
)
from boot_test.qmp import Qmp
from boot_test.screen import contains, ocr

SCREEN_POLL_SECONDS = 5.0
SSH_UNREACHABLE = 255
# The text of VT N, row by row, as the guest's root sees it: /dev/vcsaN starts with
# rows and columns, /dev/vcsuN holds one UTF-32 character per cell.
VCS_SCRIPT = """sudo python3 -c '
import sys
n = sys.argv[1]
rows, cols = open("/dev/vcsa" + n, "rb").read(2)
text = open("/dev/vcsu" + n, "rb").read().decode("utf-32-le")
print("\\n".join(text[r * cols:(r + 1) * cols].rstrip() for r in range(rows)))
' """


@dataclass
class Session:
    proc: subprocess.Popen[bytes]
    log: BinaryIO
    log_path: Path
    qmp_socket: Path
    screens_dir: Path
    ssh_port: int | None = None
    ssh_key: Path | None = None
    screens: dict[str, str] = field(default_factory=dict)  # name -> text read
    _qmp: Qmp | None = None

    @property
    def console(self) -> ProcessConsole:
        return ProcessConsole(self.proc)

    def serial_text(self) -> str:
        self.log.flush()
        return strip_ansi(self.log_path.read_text(errors="replace"))

    def drain(self, seconds: float) -> str:
        """Read the serial console for `seconds`: "exited" once QEMU is gone."""
        return watch_console(self.console, ConsoleWatcher(None), seconds, self.log)

    def wait_serial(self, text: str, timeout: float,
                    watcher: ConsoleWatcher | None = None) -> bool:
        if text in self.serial_text():
            return True
        watcher = watcher or ConsoleWatcher(text)
        return watch_console(self.console, watcher, timeout, self.log) == "matched"

    @property
    def qmp(self) -> Qmp:
        if self._qmp is None:
            self._qmp = Qmp(self.qmp_socket)
        return self._qmp

    def keys(self, *keys: str, pause: float = 1.0) -> None:
        """Each argument one key or a chord ("alt+f2"), with time for the guest to react."""
        for key in keys:
            self.qmp.send_key(*key.split("+"))
            self.drain(pause)

    def read_screen(self, name: str) -> str:
        dump = self.qmp.screendump(self.screens_dir / f"{name}.ppm")
        text = ocr(dump)
        (self.screens_dir / f"{name}.txt").write_text(text)
        self.screens[name] = text
        return text

    def wait_screen(self, name: str, phrases: Sequence[str], timeout: float) -> str:
        """Read the screen until it shows every phrase; the last text read either way."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.read_screen(name)
            if all(contains(text, phrase) for phrase in phrases):
                return text
            if time.monotonic() > deadline:
                return text
            self.drain(SCREEN_POLL_SECONDS)

    def ssh(self, script: str, attempts: int = 5) -> str:
        """Run `script` as golem over SSH (the key from the first-boot TOML)."""
        if self.ssh_port is None or self.ssh_key is None:
            raise RuntimeError("this guest was booted without SSH access")
        argv = ["ssh", "-i", str(self.ssh_key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR", "golem@127.0.0.1", script]
        for _attempt in range(attempts):  # sshd may still be generating its host keys
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, text=True)
            while proc.poll() is None:
                self.drain(1.0)
            out, err = proc.communicate()
            if proc.returncode != SSH_UNREACHABLE:
                break
            self.drain(5.0)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh into the guest: {err.strip()}")
        return out

    def vt_text(self, vt: int) -> str:
        return self.ssh(VCS_SCRIPT + str(vt))

    def power_off(self, timeout: float) -> bool:
        """The ACPI power button; True once QEMU has exited."""
        self.qmp.powerdown()
        if self.drain(timeout) != "exited":
            return False
        self.proc.wait(30)
        return True


@contextmanager
def booted(options: BootOptions, temp: Path, screens_dir: Path, *,
           ssh_port: int | None = None, ssh_key: Path | None = None) -> Iterator[Session]:
    """QEMU started with a QMP socket (and a forwarded SSH port); stopped at the end."""
    qmp_socket = temp / "qmp.sock"
    extra = ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
    if ssh_port is not None:
        extra += ["-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"]
    else:
        extra += ["-nic", "user,model=virtio-net-pci"]
    options = dataclasses.replace(options, extra_args=(*options.extra_args, *extra))
    check_host(options)
    with ExitStack() as stack:
        vars_copy = None
        if options.firmware == "uefi":
            vars_copy = temp / "OVMF_VARS.fd"
            shutil.copyfile(options.firmware_files()[1], vars_copy)
        argv = qemu_argv(options, vars_copy)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(stop_process, proc)
        log_path = options.console_log()
        log = stack.enter_context(open(log_path, "wb"))
        log.write(f"# {' '.join(argv)}\n".encode())
        session = Session(proc, log, log_path, qmp_socket, screens_dir, ssh_port, ssh_key)
        try:
            yield session
        finally:
            if session._qmp is not None:
                session._qmp.close()
