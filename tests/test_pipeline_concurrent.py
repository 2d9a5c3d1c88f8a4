"""Stages ready together run in threads; dependencies, failures and interrupts."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from builder.config import BuildConfig, make_config
from builder.errors import BuildError
from builder.pipeline import _CancellableRunner, execute, make_plan
from builder.stage import Stage, StageContext
from tests.fakes import RecordingRunner


class Shared:
    def __init__(self, parties: int) -> None:
        # Both media stages must be inside run() at once, else the barrier breaks.
        self.barrier = threading.Barrier(parties, timeout=20)
        self.order: list[str] = []
        self.threads: dict[str, str] = {}


class Fake(Stage):
    meet: ClassVar[bool] = False
    fails: ClassVar[bool] = False

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def run(self, ctx: StageContext) -> None:
        self.shared.threads[self.name] = threading.current_thread().name
        for dep in self.depends:
            assert (ctx.inputs[dep] / "out.txt").exists()  # done before this started
        if self.meet:
            self.shared.barrier.wait()
        ctx.runner.run(["work", self.name])
        if self.fails:
            raise BuildError(f"{self.name} broke", "fix it")
        (ctx.output / "out.txt").write_text(self.name)
        self.shared.order.append(self.name)


class Root(Fake):
    name = "root"


class Iso(Fake):
    name = "iso"
    depends = ("root",)
    meet = True


class Usb(Fake):
    name = "usb"
    depends = ("root",)
    meet = True


class BrokenUsb(Usb):
    fails = True


class Both(Fake):
    name = "both"
    depends = ("iso", "usb")


@pytest.fixture
def config(fake_project: Path, tmp_path: Path) -> BuildConfig:
    return make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp", tmp_path / "work")


def test_independent_stages_run_at_once_and_dependents_wait(config: BuildConfig) -> None:
    shared = Shared(2)
    runner = RecordingRunner()
    plan = make_plan(config, [Root(shared), Iso(shared), Usb(shared), Both(shared)])
    execute(plan, lambda m: None, lambda log, progress: runner)
    assert shared.order[0] == "root" and shared.order[-1] == "both"
    assert sorted(shared.order[1:3]) == ["iso", "usb"]
    assert shared.threads["iso"] != shared.threads["usb"]
    # a lone ready stage runs in the caller's thread
    assert shared.threads["root"] == threading.current_thread().name
    assert set(plan.durations) == {"root", "iso", "usb", "both"}


def test_a_failing_stage_lets_the_other_finish_and_starts_nothing_new(
        config: BuildConfig) -> None:
    shared = Shared(2)
    stages = [Root(shared), Iso(shared), BrokenUsb(shared), Both(shared)]
    plan = make_plan(config, stages)
    with pytest.raises(BuildError, match="stage usb failed: usb broke"):
        execute(plan, lambda m: None, lambda log, progress: RecordingRunner())
    assert "iso" in shared.order and "both" not in shared.order
    again = make_plan(config, [Root(shared), Iso(shared), Usb(shared), Both(shared)])
    assert again.step("iso").cached and not again.step("usb").cached
    assert not list((config.tmp_dir / "cache/usb").glob(".tmp-*"))


def test_after_an_interrupt_a_stage_thread_starts_no_work_but_still_undoes() -> None:
    cancel = threading.Event()
    inner = RecordingRunner()
    runner = _CancellableRunner(inner, cancel)
    runner.run(["mksquashfs", "a"])
    cancel.set()
    with pytest.raises(KeyboardInterrupt):
        runner.run(["mksquashfs", "b"])
    runner.run(["umount", "/x"], check=False)
    assert inner.argvs == [("mksquashfs", "a"), ("umount", "/x")]


class Sleeper(Stage):
    started: ClassVar[threading.Barrier]
    undone: ClassVar[list[str]]

    def run(self, ctx: StageContext) -> None:
        ctx.stack.callback(self.undone.append, self.name)
        self.started.wait()
        ctx.runner.run([sys.executable, "-c", "import time; time.sleep(120)"])
        (ctx.output / "out.txt").write_text("never")


class SleepIso(Sleeper):
    name = "iso"


class SleepUsb(Sleeper):
    name = "usb"


def test_an_interrupt_stops_the_commands_of_every_running_stage(config: BuildConfig) -> None:
    Sleeper.started = threading.Barrier(3, timeout=20)
    Sleeper.undone = []
    plan = make_plan(config, [SleepIso(), SleepUsb()])

    def interrupt() -> None:
        Sleeper.started.wait()
        time.sleep(0.5)  # let both commands start
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        execute(plan, lambda m: None)
    assert sorted(Sleeper.undone) == ["iso", "usb"]  # each stage's stack unwound
    for name in ("iso", "usb"):
        assert not list((config.tmp_dir / "cache" / name).glob(".tmp-*"))
        assert not plan.step(name).cache.has(plan.step(name).key)
