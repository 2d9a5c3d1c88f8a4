"""Shared fixtures: the project root and small fake projects for engine tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
