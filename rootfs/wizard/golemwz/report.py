"""Progress lines for people and for the boot test.

Every step is summarised in one line prefixed `golemwz:`. It goes to stderr (the
journal when run by systemd), to the log file ~golem/golemwz.log and, with
--log-to-console, to the system console: systemd does not copy a unit's output
to the serial console, and the boot test reads only that.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import TextIO

PREFIX = "golemwz: "
SYSTEM_CONSOLE = Path("/dev/console")


class Reporter:
    def __init__(
        self,
        log_path: Path | None,
        *,
        console_path: Path | None = None,
        stream: TextIO | None = None,
        debug: bool = False,
    ) -> None:
        self.log_path = log_path
        self.console_path = console_path
        self.stream = stream if stream is not None else sys.stderr
        self.debug_enabled = debug

    def step(self, summary: str) -> None:
        """A step's outcome: everywhere, including the console when asked for."""
        line = PREFIX + summary
        self._to_log(line)
        self._to_stream(line)
        self._to_console(line)

    def warn(self, summary: str) -> None:
        self.step("warning: " + summary)

    def detail(self, text: str) -> None:
        """Command lines and outputs: the log only (and stderr with --debug)."""
        self._to_log(text)
        if self.debug_enabled:
            self._to_stream(text)

    def _to_stream(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not stop the wizard

    def _to_log(self, line: str) -> None:
        if self.log_path is None:
            return
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        try:
            with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
                for part in line.splitlines() or [""]:
                    log.write(f"{stamp} {part}\n")
        except OSError:
            pass  # e.g. the home directory is read-only: keep going, stderr still has it

    def _to_console(self, line: str) -> None:
        if self.console_path is None:
            return
        try:
            with open(self.console_path, "a", encoding="utf-8", errors="replace") as console:
                console.write(line + "\r\n")
        except OSError:
            pass  # no console device (container, tests): the other sinks still have it
