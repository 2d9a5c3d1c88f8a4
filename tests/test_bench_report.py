"""make bench's parsing of a build's output and its docs/benchmarks.md table."""

from __future__ import annotations

from pathlib import Path

from bench.report import Tool, render, stage_times
from bench.run import EDITED, Bench, LiveBuild
from tests.fakes import RecordingRunner

OUTPUT = """\
    0.0s [bootstrap] cached (8d2c0f6e1a2b)
    0.0s [bootloader] cached (11aa22bb33cc)
    0.1s [overlay] running (file changed rootfs/overlay/common/etc/motd.j2); log: /t/o.log
    0.9s [overlay    0.8s] applied 16 overlay files
    1.0s [overlay] done in 0.9s
    1.0s [squashfs] running (input stage overlay changed); log: /t/s.log
    1.6s [squashfs] done in 0.6s
  bootstrap      cached
  overlay          0.9s
build finished in 1.7s: 2 of 4 stages ran
"""


def test_stage_times_come_from_the_progress_records() -> None:
    assert stage_times(OUTPUT) == {"bootstrap": None, "bootloader": None, "overlay": 0.9,
                                   "squashfs": 0.6}


def test_the_report_has_medians_ratios_and_the_stage_table() -> None:
    ours, theirs = Tool("golem-gpu-live"), Tool("live-build")
    for seconds in (3.0, 1.0, 2.0):
        ours.add("edit", seconds)
    theirs.add("edit", 100.0)
    ours.iso_bytes, theirs.iso_bytes = 264 * 2**20, 528 * 2**20
    ours.commands = ["golem-live build --profile gpu-node"]
    text = render(ours, theirs, {"edit": stage_times(OUTPUT)}, "2 cores", "2026-12-03", 3)
    assert "| rebuild after editing one overlay file | 2.0 s | 100.0 s | 0.020 |" in text
    assert "| no-op rebuild | - | - | - |" in text  # not measured: no invented number
    assert "| ISO size | 264 MiB | 528 MiB | 0.500 |" in text
    assert "| overlay | 0.9 s |" in text and "| bootstrap | cached |" in text
    assert "golem-live build --profile gpu-node" in text
    assert text.startswith("# Benchmarks\n")


def test_live_build_gets_the_profile_s_suite_packages_and_overlay(tmp_path: Path) -> None:
    runner = RecordingRunner()
    bench = Bench(tmp_path, "gpu-node", runner=lambda log: runner)
    live_build = LiveBuild(bench)
    live_build.configure()
    (argv,) = runner.argvs
    assert argv[:4] == ("lb", "config", "--distribution", "trixie")
    options = dict(zip(argv[2::2], argv[3::2], strict=False))
    assert options["--archive-areas"] == "main contrib non-free non-free-firmware"
    assert options["--binary-images"] == "iso-hybrid"
    assert options["--chroot-squashfs-compression-type"] == "zstd"
    config = live_build.dir / "config"
    packages = (config / "package-lists/golem.list.chroot").read_text().split()
    assert "live-boot" in packages and "python3-dialog" in packages
    assert (config / "includes.chroot" / EDITED).is_file()
    assert (config / "includes.chroot/etc/motd").is_file()  # a template, by its image name
    live_build.prepare("edit")
    assert runner.argvs[-1] == ("lb", "clean")
    assert "# bench edit" in (config / "includes.chroot" / EDITED).read_text()
