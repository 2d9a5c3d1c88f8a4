"""The real runner's logging and the plain-text fallback UI."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from golemwz.errors import CommandFailed, WizardError
from golemwz.report import Reporter
from golemwz.runner import SubprocessRunner
from golemwz.ui import PlainUI

ECHO_STDIN = "import sys; data = sys.stdin.read(); print(len(data)); sys.exit(int(sys.argv[1]))"


def test_runner_logs_argv_and_output_but_never_stdin(tmp_path: Path) -> None:
    log = tmp_path / "golemwz.log"
    runner = SubprocessRunner(Reporter(log, stream=io.StringIO()))
    result = runner.run([sys.executable, "-c", ECHO_STDIN, "0"], input=b"golem:s3cret\n")
    assert result.stdout == "13\n"
    text = log.read_text()
    assert "$ " + sys.executable in text and "# exit 0" in text
    assert "s3cret" not in text


def test_runner_failure_names_the_command(tmp_path: Path) -> None:
    runner = SubprocessRunner(Reporter(None, stream=io.StringIO()))
    with pytest.raises(CommandFailed, match="command failed with status 3"):
        runner.run([sys.executable, "-c", ECHO_STDIN, "3"], input=b"")
    assert runner.run([sys.executable, "-c", ECHO_STDIN, "3"], input=b"",
                      check=False).returncode == 3


def test_missing_tool_is_one_clear_error() -> None:
    runner = SubprocessRunner(Reporter(None, stream=io.StringIO()))
    with pytest.raises(WizardError, match="required tool 'no-such-tool' is not installed"):
        runner.run(["no-such-tool"])


def test_plain_ui_answers_from_typed_lines() -> None:
    typed = iter(["y", "", "2", "9", "1 2"])
    out = io.StringIO()
    ui = PlainUI(lambda _prompt: next(typed), out)
    assert ui.confirm("Terms", "Accept?") is True
    assert ui.ask_text("Price", "GLM per hour", "0.25") == "0.25"
    assert ui.choose_one("Storage", "Where?", [("a", "disk A"), ("b", "disk B")]) == "b"
    assert ui.choose_one("Storage", "Where?", [("a", "disk A")]) is None
    assert ui.choose_many("GPU", "Which?", [("x", "GPU X", True), ("y", "GPU Y", False)]) \
        == ["x", "y"]
    assert "2) disk B" in out.getvalue()
