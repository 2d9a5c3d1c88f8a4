"""The real TUI on tty1 at boot, through the `dialog` program (python3-dialog)."""

from __future__ import annotations

from collections.abc import Sequence

import dialog

from golemwz.ui import CheckChoice, Choice

BACKTITLE = "GOLEM GPU live - provider wizard"


class DialogUI:
    def __init__(self) -> None:
        self.dialog = dialog.Dialog(dialog="dialog", autowidgetsize=True)
        self.dialog.set_background_title(BACKTITLE)
        self.gauge_open = False

    def info(self, title: str, text: str) -> None:
        # --no-collapse: the final screen indents the password and aligns its lines.
        self.dialog.infobox(text, title=title, no_collapse=True)

    def message(self, title: str, text: str) -> None:
        self.dialog.msgbox(text, title=title)

    def confirm(self, title: str, text: str) -> bool:
        return bool(self.dialog.yesno(text, title=title) == self.dialog.OK)

    def ask_text(self, title: str, text: str, default: str = "") -> str | None:
        code, value = self.dialog.inputbox(text, init=default, title=title)
        return str(value) if code == self.dialog.OK else None

    def choose_one(self, title: str, text: str, choices: Sequence[Choice]) -> str | None:
        code, tag = self.dialog.menu(text, choices=list(choices), title=title)
        return str(tag) if code == self.dialog.OK else None

    def choose_many(self, title: str, text: str,
                    choices: Sequence[CheckChoice]) -> list[str] | None:
        code, tags = self.dialog.checklist(text, choices=list(choices), title=title)
        return [str(t) for t in tags] if code == self.dialog.OK else None

    def progress(self, title: str, text: str, percent: int) -> None:
        if not self.gauge_open:
            self.dialog.gauge_start(text, percent=percent, title=title)
            self.gauge_open = True
        else:
            self.dialog.gauge_update(percent, text, update_text=True)
        if percent >= 100:
            self.dialog.gauge_stop()
            self.gauge_open = False
