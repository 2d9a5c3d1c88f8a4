"""The one runner for external commands: argv in, everything logged, one-line failures."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.errors import BuildError, CommandFailed
from builder.runner import SubprocessRunner
from tests.fakes import RecordingRunner

PY = sys.executable


def test_each_command_and_its_output_go_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "stage.log"
    echoed: list[str] = []
    runner = SubprocessRunner(log, echo=echoed.append)
    result = runner.run([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    text = log.read_text()
    assert text.startswith(f"$ {PY} -c ")
    assert "out\n" in text and "err\n" in text and "# exit 0 after" in text
    assert result.returncode == 0 and result.stdout == ""  # not captured: the log has it
    assert echoed and echoed[0].startswith(PY)


def test_captured_stdout_is_returned_and_stderr_still_logged(tmp_path: Path) -> None:
    runner = SubprocessRunner(tmp_path / "log")
    result = runner.run([PY, "-c", "import sys; print('answer'); print('noise', file=sys.stderr)"],
                        capture=True)
    assert result.stdout == "answer\n"
    assert "noise" in (tmp_path / "log").read_text()


def test_input_reaches_stdin(tmp_path: Path) -> None:
    runner = SubprocessRunner(tmp_path / "log")
    result = runner.run([PY, "-c", "import sys; print(sys.stdin.read().upper())"],
                        input=b"secret words", capture=True)
    assert result.stdout.strip() == "SECRET WORDS"


def test_the_environment_is_minimal_plus_what_is_asked(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAKY", "1")
    runner = SubprocessRunner(tmp_path / "log")
    out = runner.run([PY, "-c", "import os; print(sorted(os.environ))"], env={"EXTRA": "2"},
                     capture=True).stdout
    assert "LEAKY" not in out and "'EXTRA'" in out and "'LC_ALL'" in out


def test_a_failure_is_one_line_with_the_last_output_and_the_log(tmp_path: Path) -> None:
    runner = SubprocessRunner(tmp_path / "log")
    with pytest.raises(CommandFailed) as err:
        runner.run([PY, "-c", "import sys; print('first'); print('the reason'); sys.exit(3)"])
    assert err.value.returncode == 3
    assert "the reason" in str(err.value) and str(tmp_path / "log") in str(err.value)
    assert "\n" not in str(err.value)
    unchecked = runner.run([PY, "-c", "raise SystemExit(4)"], check=False)
    assert unchecked.returncode == 4


def test_a_missing_tool_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="'no-such-tool-xyz' is not installed.*make deps"):
        SubprocessRunner(tmp_path / "log").run(["no-such-tool-xyz", "--help"])


def test_an_interrupt_stops_the_whole_process_group(tmp_path: Path) -> None:
    # The command starts a grandchild that would outlive a plain kill of the leader.
    pidfile = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
              "time.sleep(60)\n")
    runner = SubprocessRunner(tmp_path / "log")

    def interrupt_when_started() -> None:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        # A signal, as Ctrl-C would send: it interrupts the runner's blocking read.
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        runner.run([PY, "-c", script])
    grandchild = int(pidfile.read_text())
    for _ in range(100):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the grandchild survived the interrupt")
    assert "# interrupted" in (tmp_path / "log").read_text()


def test_the_recording_fake_answers_by_longest_prefix() -> None:
    fake = RecordingRunner(responses={("apt-get",): (0, "a"), ("apt-get", "update"): (1, "")})
    assert fake.run(["apt-get", "install"]).stdout == "a"
    with pytest.raises(CommandFailed):
        fake.run(["apt-get", "update"])
    assert fake.argvs == [("apt-get", "install"), ("apt-get", "update")]
