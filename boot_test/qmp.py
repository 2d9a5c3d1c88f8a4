"""A small QMP client: the keyboard, the screen and the power button of a QEMU guest.

QEMU started with `-qmp unix:PATH,server=on,wait=off` accepts one client at a
time on PATH. Keys go in as QKeyCode names (`ret`, `a`, `shift`...) through
`send-key`, exactly as from a PS/2 keyboard; `screendump` writes what the VGA
card shows as a PPM file (see boot_test.screen for reading it as text).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

# Characters typed without shift, by QKeyCode; shifted ones below.
PLAIN_KEYS = {
    **{c: c for c in "abcdefghijklmnopqrstuvwxyz0123456789"},
    " ": "spc", "\n": "ret", "\t": "tab", "-": "minus", "=": "equal", ".": "dot",
    ",": "comma", "/": "slash", ";": "semicolon", "'": "apostrophe", "[": "bracket_left",
    "]": "bracket_right", "\\": "backslash", "`": "grave_accent",
}
SHIFTED_KEYS = {
    **{c.upper(): c for c in "abcdefghijklmnopqrstuvwxyz"},
    "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8",
    "(": "9", ")": "0", "_": "minus", "+": "equal", ">": "dot", "<": "comma", "?": "slash",
    ":": "semicolon", '"': "apostrophe", "{": "bracket_left", "}": "bracket_right",
    "|": "backslash", "~": "grave_accent",
}


class QmpError(RuntimeError):
    pass


def keys_for_text(text: str) -> list[list[str]]:
    """The key chords (pressed together) that type `text` on a US keyboard."""
    chords = []
    for char in text:
        if char in PLAIN_KEYS:
            chords.append([PLAIN_KEYS[char]])
        elif char in SHIFTED_KEYS:
            chords.append(["shift", SHIFTED_KEYS[char]])
        else:
            raise ValueError(f"no key types {char!r} on a US keyboard")
    return chords


def send_key_arguments(keys: Sequence[str], hold_ms: int) -> dict[str, Any]:
    return {"keys": [{"type": "qcode", "data": key} for key in keys], "hold-time": hold_ms}


class Qmp:
    """One connection; commands are answered in order, events in between are kept."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:  # QEMU creates the socket a moment after it starts
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(str(socket_path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.reader = self.sock.makefile("rb")
        self.events: list[dict[str, Any]] = []
        greeting = self._message()
        if "QMP" not in greeting:
            raise QmpError(f"not a QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def _message(self) -> dict[str, Any]:
        line = self.reader.readline()
        if not line:
            raise QmpError("QEMU closed the QMP connection")
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            reply = self._message()
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            elif "return" in reply:
                return reply["return"]

    def send_key(self, *keys: str, hold_ms: int = 100) -> None:
        """Press `keys` together (a chord such as ctrl alt f2), then release them."""
        self.execute("send-key", send_key_arguments(keys, hold_ms))

    def press(self, keys: Iterable[str], pause: float = 0.3) -> None:
        """Single keys one after the other, with time for the guest to react."""
        for key in keys:
            self.send_key(key)
            time.sleep(pause)

    def type_text(self, text: str, pause: float = 0.05) -> None:
        for chord in keys_for_text(text):
            self.send_key(*chord)
            time.sleep(pause)

    def screendump(self, path: Path) -> Path:
        """What the screen shows now, as a PPM image at `path`."""
        self.execute("screendump", {"filename": str(path)})
        return path

    def powerdown(self) -> None:
        """The ACPI power button: systemd shuts the guest down cleanly."""
        self.execute("system_powerdown")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
