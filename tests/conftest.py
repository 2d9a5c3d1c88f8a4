"""Shared fixtures: the project root and small fake projects for engine tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from boot_test.qemu import image_path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--build-cache", default=None,
                     help="Reuse this TMP_DIR/WORK_DIR parent for integration builds "
                          "(default: a fresh directory, as CI does).")
    parser.addoption("--live-dir", default=None,
                     help="A squashfs stage output's live/ dir for boot-media tests.")


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture
def fake_project(tmp_path: Path) -> Path:
    """A copy of the real profiles and overlays in a temp dir, free to edit."""
    root = tmp_path / "project"
    for sub in ("rootfs/profiles", "rootfs/overlay"):
        shutil.copytree(PROJECT_ROOT / sub, root / sub)
    (root / "rootfs/wizard/golemwz").mkdir(parents=True)
    (root / "rootfs/wizard/golemwz/__init__.py").write_text("")
    (root / "rootfs/wizard/golemwz/cli.py").write_text("def main():\n    return 0\n")
    return root


# --- the integration build, shared by every test that needs a built image -------------


MEASUREMENTS: dict[str, str] = {}


@dataclass
class BuiltImage:
    tmp_dir: Path
    work_dir: Path
    version: str
    output: str
    seconds: float
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def img(self) -> Path:
        return image_path(self.work_dir, self.version, "usb")

    @property
    def iso(self) -> Path:
        return image_path(self.work_dir, self.version, "iso")

    def live_dir(self) -> Path:
        from builder.config import make_config
        from builder.pipeline import make_plan
        from stages.catalog import stage_list

        config = make_config(PROJECT_ROOT, "gpu-node", self.version, self.tmp_dir, self.work_dir)
        step = make_plan(config, stage_list(config)).step("squashfs")
        return step.cache.entry(step.key) / "live"


def golem_live(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "golem_live.cli", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def build_args(tmp_dir: Path, work_dir: Path, version: str = "test") -> list[str]:
    return ["--profile", "gpu-node", "--version", version, "--tmp-dir", str(tmp_dir),
            "--work-dir", str(work_dir)]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (chroot, mounts); CI runs them as root")


@pytest.fixture(scope="session")
def build_base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = request.config.getoption("--build-cache")
    return Path(given) if given else tmp_path_factory.mktemp("build")


@pytest.fixture(scope="session")
def gpu_node_image(build_base: Path) -> BuiltImage:
    """The gpu-node profile built from Debian's archive (cold unless --build-cache)."""
    require_root()
    tmp_dir, work_dir = build_base / "tmp", build_base / "work"
    started = time.monotonic()
    result = golem_live("build", *build_args(tmp_dir, work_dir))
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    built = BuiltImage(tmp_dir, work_dir, "test", result.stderr, seconds)
    MEASUREMENTS["build (as found: cold unless --build-cache)"] = f"{seconds:.1f}s"
    for path in (built.img, built.iso):
        MEASUREMENTS[f"size {path.name}"] = (
            f"{path.stat().st_size / 2**20:.0f} MiB apparent, "
            f"{path.stat().st_blocks * 512 / 2**20:.0f} MiB allocated")
    return built


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASUREMENTS:
        terminalreporter.section("measurements (not assertions)")
        for name, value in MEASUREMENTS.items():
            terminalreporter.write_line(f"{name}: {value}")
