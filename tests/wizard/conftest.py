"""Make `golemwz` importable without installing the project, and share fakes."""

from __future__ import annotations

import sys
from pathlib import Path

WIZARD_SOURCE = Path(__file__).resolve().parents[2] / "rootfs/wizard"
if str(WIZARD_SOURCE) not in sys.path:
    sys.path.insert(0, str(WIZARD_SOURCE))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for wizard_fakes


import pytest  # noqa: E402  (after the sys.path set-up above)
from wizard_fakes import FakeMachine  # noqa: E402


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    """A fake machine (sysfs, block devices, conf partition, recording runner)."""
    return FakeMachine(tmp_path)
