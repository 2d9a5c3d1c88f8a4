"""Runs the wizard with the real dialog TUI on a fake machine (used by test_dialog_tmux).

Usage: python tmux_driver.py ROOT RESULT_JSON
The TUI is real; the machine (sysfs, commands, files) is the tests' fake, so
nothing on the host is touched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1] / "rootfs/wizard"), str(HERE)]

from golemwz.cli import main  # noqa: E402
from golemwz.dialog_ui import DialogUI  # noqa: E402
from wizard_fakes import FakeMachine  # noqa: E402


def run(root: Path, result_path: Path) -> None:
    machine = FakeMachine(root)
    services = machine.services(DialogUI())  # type: ignore[arg-type]
    status = main([], services)
    saved = machine.layout.saved_config
    result_path.write_text(json.dumps({
        "status": status,
        "saved": saved.read_text() if saved.exists() else None,
        "argvs": machine.runner.argvs,
        "console": machine.console_lines(),
    }))


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
