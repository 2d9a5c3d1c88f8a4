"""What the wizard needs from a user interface, and a plain-text fallback.

The real TUI (dialog_ui.DialogUI) and the tests' scripted fake implement the
same Protocol, so the wizard never knows which one it talks to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TextIO

Choice = tuple[str, str]  # (tag, description)
CheckChoice = tuple[str, str, bool]  # (tag, description, checked)


class UI(Protocol):
    def info(self, title: str, text: str) -> None:
        """Show text and carry on without waiting."""

    def message(self, title: str, text: str) -> None:
        """Show text and wait until the user has read it."""

    def confirm(self, title: str, text: str) -> bool: ...

    def ask_text(self, title: str, text: str, default: str = "") -> str | None:
        """The typed text, or None if the user cancelled."""

    def choose_one(self, title: str, text: str, choices: Sequence[Choice]) -> str | None: ...

    def choose_many(self, title: str, text: str,
                    choices: Sequence[CheckChoice]) -> list[str] | None: ...

    def progress(self, title: str, text: str, percent: int) -> None:
        """Move a progress gauge; 100 closes it."""


class PlainUI:
    """Line-by-line questions for terminals where dialog cannot run."""

    def __init__(self, read_line: Callable[[str], str], out: TextIO) -> None:
        self.read_line = read_line
        self.out = out

    def _print(self, title: str, text: str) -> None:
        self.out.write(f"\n== {title} ==\n{text}\n")
        self.out.flush()

    def info(self, title: str, text: str) -> None:
        self._print(title, text)

    def message(self, title: str, text: str) -> None:
        self._print(title, text)
        self.read_line("Press Enter to continue ")

    def confirm(self, title: str, text: str) -> bool:
        self._print(title, text)
        return self.read_line("[y/N] ").strip().lower() in ("y", "yes")

    def ask_text(self, title: str, text: str, default: str = "") -> str | None:
        self._print(title, text)
        answer = self.read_line(f"[{default}] " if default else "> ").strip()
        return answer or default

    def choose_one(self, title: str, text: str, choices: Sequence[Choice]) -> str | None:
        self._print(title, text)
        for number, (_tag, description) in enumerate(choices, 1):
            self.out.write(f"  {number}) {description}\n")
        answer = self.read_line("number> ").strip()
        if answer.isdigit() and 1 <= int(answer) <= len(choices):
            return choices[int(answer) - 1][0]
        return None

    def choose_many(self, title: str, text: str,
                    choices: Sequence[CheckChoice]) -> list[str] | None:
        self._print(title, text)
        for number, (_tag, description, checked) in enumerate(choices, 1):
            self.out.write(f"  {number}) [{'x' if checked else ' '}] {description}\n")
        answer = self.read_line("numbers separated by spaces (empty: as marked)> ").split()
        if not answer:
            return [tag for tag, _description, checked in choices if checked]
        if not all(a.isdigit() and 1 <= int(a) <= len(choices) for a in answer):
            return None
        return [choices[int(a) - 1][0] for a in answer]

    def progress(self, title: str, text: str, percent: int) -> None:
        self.out.write(f"{title}: {text} {percent}%\n")
        self.out.flush()
