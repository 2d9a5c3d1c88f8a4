"""Several independent boots at once: each QEMU under TCG with one vCPU keeps one
host core busy, so on a machine with N cores N boots take about the time of one.

Used by tests whose boots do not depend on each other: plain boots (the boot-media
matrix, `boot_all`) and boots a test drives itself (the profile images,
`run_side_by_side`); results come back by name, each boot's console in its own log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

from boot_test.qemu import BootOptions, BootResult, boot, stop_process
from builder.errors import raise_interrupt


def boot_all(jobs: Mapping[str, BootOptions], workers: int | None = None) -> dict[str, BootResult]:
    """Boot every job, `workers` at a time (default: one per host core), in the
    order given. An exception here (Ctrl-C, a boot that raised) stops the boots
    still running and skips those not yet started."""
    stop = threading.Event()
    count = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="boot") as pool:
        futures: dict[str, Future[BootResult]] = {
            name: pool.submit(boot, jobs[name], cancelled=stop.is_set) for name in jobs}
        try:
            done, _ = wait(futures.values(), return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # the first boot that raised, raised here
            return {name: futures[name].result() for name in jobs}
        except BaseException:
            stop.set()
            for future in futures.values():
                future.cancel()
            raise


T = TypeVar("T")


class BootGuard:
    """A side-by-side job's hold on the QEMUs it starts (`watch`): they are stopped when
    the job's deadline passes or the run is interrupted, which ends the job's own waits
    (its console reads "exited", its SSH connection drops)."""

    def __init__(self, deadline: float, stopping: threading.Event) -> None:
        self.expired = False
        self._stopping = stopping
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(deadline, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.append(proc)
        if self._stopping.is_set() or self.expired:  # it started as the run was stopped
            stop_process(proc)

    def stop(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            stop_process(proc)

    def _expire(self) -> None:
        self.expired = True
        self.stop()

    def close(self) -> None:
        self._timer.cancel()


def run_side_by_side(jobs: Mapping[str, Callable[[BootGuard], T]], deadline: float,
                     workers: int | None = None) -> dict[str, T | Exception]:
    """Run every job, `workers` at a time (default: one per host core), each with a
    BootGuard whose QEMUs are stopped `deadline` seconds after the job started. A job's
    exception is its result (the others go on; past the deadline a TimeoutError). An
    interrupt (Ctrl-C, or SIGTERM while this runs) stops every QEMU, skips the jobs not
    yet started and is raised once the running ones have unwound."""
    stopping = threading.Event()
    guards: list[BootGuard] = []
    lock = threading.Lock()

    def run(name: str, job: Callable[[BootGuard], T]) -> T:
        with lock:
            if stopping.is_set():
                raise KeyboardInterrupt(f"{name}: not started, the run was interrupted")
            guard = BootGuard(deadline, stopping)
            guards.append(guard)
        try:
            return job(guard)
        except Exception as err:
            if guard.expired:
                raise TimeoutError(f"{name}: stopped after {deadline:.0f}s, its deadline "
                                   f"({type(err).__name__}: {err})") from err
            raise
        finally:
            guard.close()

    count = workers or os.cpu_count() or 1
    with _sigterm_as_interrupt(), \
            ThreadPoolExecutor(max_workers=count, thread_name_prefix="boot") as pool:
        futures: dict[str, Future[T]] = {}
        try:
            for name, job in jobs.items():
                futures[name] = pool.submit(run, name, job)
            wait(futures.values())
        except BaseException:
            with lock:
                stopping.set()
                running = list(guards)
            for future in futures.values():
                future.cancel()
            for guard in running:
                guard.stop()
            raise
    outcomes: dict[str, T | Exception] = {}
    for name, future in futures.items():
        error = future.exception()
        if error is not None and not isinstance(error, Exception):
            raise error  # an interrupt inside a job: the run's own
        outcomes[name] = future.result() if error is None else error
    return outcomes


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, so `kill` stops the QEMUs as Ctrl-C
    does (they run in sessions of their own: the signal does not reach them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

