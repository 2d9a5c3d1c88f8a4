"""boot_all: independent boots side by side, results by name, and a failure that stops
the rest. run_side_by_side: a failed job fails alone, a deadline or an interrupt stops
the QEMUs."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import boot_test.parallel
from boot_test.parallel import BootGuard, boot_all, run_side_by_side
from boot_test.qemu import BootOptions, BootResult


def options(name: str) -> BootOptions:
    return BootOptions(Path(f"/images/{name}.img"), expect="login:")


def test_boots_run_side_by_side_and_come_back_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def fake_boot(opts: BootOptions, cancelled: Callable[[], bool]) -> BootResult:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return BootResult(0, "saw 'login:'", 1.0, opts.image.with_suffix(".log"))

    monkeypatch.setattr(boot_test.parallel, "boot", fake_boot)
    results = boot_all({name: options(name) for name in ("a", "b", "c", "d")}, workers=2)
    assert list(results) == ["a", "b", "c", "d"]
    assert results["c"].log_path == Path("/images/c.log")
    assert most == 2


def test_a_boot_that_raises_stops_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[str] = []

    def fake_boot(opts: BootOptions, cancelled: Callable[[], bool]) -> BootResult:
        if opts.image.stem == "broken":
            raise RuntimeError("QEMU is not installed")
        while not cancelled():
            time.sleep(0.01)
        stopped.append(opts.image.stem)
        return BootResult(1, "cancelled", 0.1, opts.image)

    monkeypatch.setattr(boot_test.parallel, "boot", fake_boot)
    jobs = {name: options(name) for name in ("slow", "broken", "never")}
    with pytest.raises(RuntimeError, match="QEMU is not installed"):
        boot_all(jobs, workers=2)
    assert stopped == ["slow"]  # "never" did not start


# run_side_by_side: jobs that drive their own QEMU ("sleep" stands in for it).


def stand_in_qemu() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_a_failed_job_is_its_own_result_and_the_others_finish() -> None:
    def broken(guard: BootGuard) -> str:
        raise AssertionError("the wizard never finished")

    def fine(guard: BootGuard) -> str:
        time.sleep(0.05)
        return "running"

    results = run_side_by_side({"broken": broken, "fine": fine, "third": fine},
                               deadline=30, workers=2)
    assert list(results) == ["broken", "fine", "third"]
    assert isinstance(results["broken"], AssertionError)
    assert results["fine"] == results["third"] == "running"


def test_a_job_past_its_deadline_has_its_qemu_stopped() -> None:
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def hanging(guard: BootGuard) -> str:
        procs["hanging"] = proc = stand_in_qemu()
        guard.watch(proc)
        proc.wait()  # as a console read ends when QEMU is gone
        raise RuntimeError("ssh into the guest: connection closed")

    def quick(guard: BootGuard) -> str:
        return "running"

    started = time.monotonic()
    results = run_side_by_side({"hanging": hanging, "quick": quick}, deadline=0.3, workers=2)
    assert time.monotonic() - started < 10
    assert isinstance(results["hanging"], TimeoutError)
    assert "deadline" in str(results["hanging"]) and "connection closed" in str(results["hanging"])
    assert procs["hanging"].returncode is not None
    assert results["quick"] == "running"


def test_sigterm_stops_every_qemu_and_is_raised() -> None:
    procs: list[subprocess.Popen[bytes]] = []
    both_started = threading.Barrier(2)

    def booting(guard: BootGuard) -> str:
        proc = stand_in_qemu()
        procs.append(proc)
        guard.watch(proc)
        both_started.wait(10)
        if len(procs) == 2 and proc is procs[1]:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PYTEST_PID` does
        proc.wait()
        raise RuntimeError("QEMU exited")

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="signal"):
        run_side_by_side({"a": booting, "b": booting, "never": booting}, deadline=30,
                         workers=2)
    assert len(procs) == 2  # "never" did not start
    assert all(proc.returncode is not None for proc in procs)
    assert signal.getsignal(signal.SIGTERM) == previous
