"""Several independent boots at once: each QEMU under TCG with one vCPU keeps one
host core busy, so on a machine with N cores N boots take about the time of one.

Used by tests whose boots do not depend on each other (the boot-media matrix);
results come back by name, each boot's console in its own log.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from boot_test.qemu import BootOptions, BootResult, boot


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
