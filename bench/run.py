"""`make bench`: build one profile with this project and an equivalent image with
Debian's live-build (same suite, package list, overlay files, zstd squashfs, hybrid ISO),
each scenario repeated, and write docs/benchmarks.md.

    python -m bench.run [--profile gpu-node] [--repeats 3] [--dir /var/tmp/golem-bench]

Every command goes through the project's runner, logged under DIR/logs. Needs root,
the network and live-build (apt-get install live-build; `make bench` installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.boot import boot_to_wizard, render_boot
from bench.report import SCENARIOS, Tool, own_seconds, render, stage_times
from boot_test.qemu import image_path
from builder.cache import CODE_ROOT, remove_tree
from builder.config import default_source_date_epoch
from builder.errors import BuildError, raise_interrupt
from builder.mounts import attach_loop
from builder.profile import load_profile
from builder.runner import Runner, SubprocessRunner
from stages.overlay import overlay_files

VERSION = "bench"  # of our images, named as the build publishes them (image_path)
EDITED = "etc/modprobe.d/golem-gpu-passthrough.conf"  # an overlay file both images carry
LB_ISO = "live-image-amd64.hybrid.iso"


class Bench:
    def __init__(self, base: Path, profile: str, lock: Path | None = None,
                 runner: Callable[[Path], Runner] = SubprocessRunner) -> None:
        self.base = base
        self.lock = lock
        self.runner = runner  # log file -> runner (tests pass a recording one)
        self.profile = load_profile(CODE_ROOT, profile)
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def log(self, label: str) -> Path:
        self.count += 1
        log = self.logs / f"{self.count:02d}-{label}.log"
        log.unlink(missing_ok=True)
        return log

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The machine to ourselves: one heavy command at a time; the wait is not timed."""
        with contextlib.ExitStack() as stack:
            if self.lock is not None:
                handle = stack.enter_context(open(self.lock, "a"))
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def timed(self, label: str, argv: list[str], cwd: Path | None = None) -> tuple[float, str]:
        """Run one command, return (wall seconds, its output)."""
        log = self.log(label)
        with self.held():
            started = time.monotonic()
            self.runner(log).run(argv, cwd=cwd)
            seconds = time.monotonic() - started
        print(f"{label}: {seconds:.1f} s", file=sys.stderr)
        return seconds, log.read_text(errors="replace") if log.exists() else ""


class Ours:
    """golem-live on a copy of the project (the edit must not touch the checkout)."""

    def __init__(self, bench: Bench, profile: str) -> None:
        self.bench = bench
        self.tool = Tool("golem-gpu-live")
        self.project = bench.base / "ours-project"
        self.tmp, self.work = bench.base / "ours-tmp", bench.base / "ours-work"
        remove_tree(self.project)
        for sub in ("rootfs", "disk"):
            shutil.copytree(CODE_ROOT / sub, self.project / sub, symlinks=True)
        self.argv = [sys.executable, "-m", "golem_live.cli", "build", "--profile", profile,
                     "--version", VERSION, "--tmp-dir", str(self.tmp), "--work-dir",
                     str(self.work), "--project-root", str(self.project),
                     "--source-date-epoch", str(default_source_date_epoch(CODE_ROOT))]
        self.tool.commands = [" ".join(self.argv)]
        self.stages: dict[str, dict[str, float | None]] = {}
        self.image = image_path(self.work, VERSION, "usb")

    def prepare(self, scenario: str) -> None:
        if scenario == "cold-empty":
            remove_tree(self.tmp)
            remove_tree(self.work)
        elif scenario == "cold-warm":  # the package cache (TMP_DIR/packages) stays
            for path in (self.tmp / "cache", self.tmp / "logs", self.work):
                remove_tree(path)
        elif scenario == "edit":
            edited = next(source for source, rel in overlay_files(
                self.project, self.bench.profile.overlays) if rel == EDITED)
            with open(edited, "a") as handle:
                handle.write(f"# bench edit {time.time_ns()}\n")

    def run(self, scenario: str) -> None:
        seconds, output = self.bench.timed(f"ours-{scenario}", self.argv)
        self.tool.add(scenario, seconds)
        own = own_seconds(output)
        if own is not None:
            self.tool.own.setdefault(scenario, []).append(own)
        self.stages[scenario] = stage_times(output)
        iso = image_path(self.work, VERSION, "iso")
        self.tool.iso_bytes = iso.stat().st_size if iso.exists() else None

    def write_to_stick(self) -> list[str]:
        """`golem-live write` of the USB image onto a loop device (a stick of its size),
        with its read-back verification; and how small the image file is."""
        image = self.image.stat()
        stick = self.bench.base / "stick.img"
        with contextlib.ExitStack() as stack:
            stack.callback(stick.unlink, missing_ok=True)
            with open(stick, "wb") as handle:
                handle.truncate(image.st_size)
            device = attach_loop(stack, self.bench.runner(self.bench.log("loop")), stick)
            argv = [sys.executable, "-m", "golem_live.cli", "write", str(self.image), device,
                    "--yes"]
            seconds, _ = self.bench.timed("ours-write", argv)
        return ["", "## Writing the USB image to a stick", "",
                f"`golem-live write IMG DEVICE --yes` onto a loop device, reading it back "
                f"to verify: {seconds:.1f} s. The image file: "
                f"{image.st_size / 2**20:.0f} MiB apparent, "
                f"{image.st_blocks * 512 / 2**20:.0f} MiB allocated."]

    def boot(self) -> list[str]:
        temp = self.bench.base / "boot"
        remove_tree(temp)
        with self.bench.held():
            rows = boot_to_wizard(self.image, temp)
        return render_boot(rows, temp / "boot.log")


class LiveBuild:
    """Debian's live-build with the same suite, packages and overlay files."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.tool = Tool("live-build")
        self.dir = bench.base / "live-build"
        debian = bench.profile.debian
        self.config = [
            "lb", "config", "--distribution", debian.suite,
            "--mirror-bootstrap", debian.mirror, "--mirror-chroot", debian.mirror,
            "--mirror-binary", debian.mirror,
            # live-build's default security mirror lacks the /debian-security path
            "--mirror-chroot-security", debian.security_mirror,
            "--mirror-binary-security", debian.security_mirror,
            "--archive-areas", " ".join(debian.components),
            "--binary-images", "iso-hybrid", "--debian-installer", "none",
            "--apt-recommends", "false",
            "--chroot-squashfs-compression-type", "zstd",
        ]
        self.tool.commands = [" ".join(self.config), "lb build",
                              "lb clean; lb config ...  # before the edit's rebuild "
                              "(timed with it)"]
        self.cleaning = 0.0

    def configure(self) -> None:
        if self.dir.exists():
            self.bench.timed("lb-purge", ["lb", "clean", "--purge"], cwd=self.dir)
        remove_tree(self.dir)
        self.dir.mkdir(parents=True)
        self.bench.timed("lb-config", self.config, cwd=self.dir)
        lists = self.dir / "config/package-lists"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / "golem.list.chroot").write_text("\n".join(self.bench.profile.packages) + "\n")
        includes = self.dir / "config/includes.chroot"
        for source, rel in overlay_files(CODE_ROOT, self.bench.profile.overlays):
            (includes / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, includes / rel)

    def prepare(self, scenario: str) -> None:
        clean = {"cold-empty": ["lb", "clean", "--purge"], "cold-warm": ["lb", "clean"],
                 "edit": ["lb", "clean"]}.get(scenario)
        self.cleaning = 0.0
        if clean:
            seconds, _ = self.bench.timed(f"lb-clean-{scenario}", clean, cwd=self.dir)
            # `lb clean` drops the stage stamps, `config` among them, and `lb build` then
            # refuses to start ("required to be done first: config"): configure again,
            # which keeps the package list and includes.chroot.
            again, _ = self.bench.timed(f"lb-config-{scenario}", self.config, cwd=self.dir)
            # live-build rebuilds an edit only from a clean tree: that is part of it
            self.cleaning = seconds + again if scenario == "edit" else 0.0
        if scenario == "cold-warm":  # keep only the package caches, as for ours
            for cache in (self.dir / "cache").glob("*"):
                if not cache.name.startswith("packages."):
                    remove_tree(cache)
        if scenario == "edit":
            with open(self.dir / "config/includes.chroot" / EDITED, "a") as handle:
                handle.write(f"# bench edit {time.time_ns()}\n")

    def run(self, scenario: str) -> None:
        # The edit needs `lb clean` first (prepare): live-build has no finer rebuild.
        seconds, _ = self.bench.timed(f"lb-{scenario}", ["lb", "build"], cwd=self.dir)
        self.tool.add(scenario, seconds + self.cleaning)
        iso = self.dir / LB_ISO
        self.tool.iso_bytes = iso.stat().st_size if iso.exists() else None


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model or platform.machine()}), {platform.platform()}"


# (how many runs of each scenario, prepare, run) per tool
Steps = list[tuple[int, Callable[[str], None], Callable[[str], None]]]


def repeat(tools: Steps) -> None:
    for turn in range(max((runs for runs, _, _ in tools), default=0)):
        for key, _words in SCENARIOS:
            for runs, prepare, run in tools:
                if turn < runs:
                    prepare(key)
                    run(key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="gpu-node")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live-build-repeats", type=int, default=None,
                        help="runs of each scenario for live-build (default: --repeats)")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/golem-bench"))
    parser.add_argument("--output", type=Path, default=CODE_ROOT / "docs/benchmarks.md")
    parser.add_argument("--skip-live-build", action="store_true")
    parser.add_argument("--lock", type=Path, help="flock this file around each command "
                        "(machines shared by several builders); waiting is not timed")
    args = parser.parse_args()
    # `kill` stops the command being timed as Ctrl-C does (the runner stops its process
    # group); SIGINT too when started in the background, where the shell ignores it.
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        bench = Bench(args.dir, args.profile, args.lock)
        ours = Ours(bench, args.profile)
        theirs = LiveBuild(bench)
        ours.tool.repeats = args.repeats
        tools: Steps = [(args.repeats, ours.prepare, ours.run)]
        if not args.skip_live_build:
            if shutil.which("lb") is None:
                raise BuildError("live-build is not installed",
                                 "apt-get install live-build (make bench does)")
            theirs.configure()
            theirs.tool.repeats = args.live_build_repeats or args.repeats
            tools.append((theirs.tool.repeats, theirs.prepare, theirs.run))
        repeat(tools)
        extra = ours.write_to_stick() + ours.boot()
    except BuildError as err:
        print(f"error: {err.line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: docs/benchmarks.md not written", file=sys.stderr)
        return 130
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = render(ours.tool, theirs.tool, ours.stages, machine(), date, extra)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
