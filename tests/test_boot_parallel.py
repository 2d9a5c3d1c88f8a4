"""boot_all: independent boots side by side, results by name, and a failure that stops
the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import boot_test.parallel
from boot_test.parallel import boot_all
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
