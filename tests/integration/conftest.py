"""The profile boots: one session fixture for every profile test module, so their
boots run side by side (tests/integration/profile_images.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.profile_images import BOOT_SPECS, ProfileBoots, boot_profiles


@pytest.fixture(scope="session")
def profile_boots(request: pytest.FixtureRequest, build_base: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> ProfileBoots:
    """Each registered profile whose boot test is selected: built, booted, its result."""
    selected = {item.module.__name__ for item in request.session.items
                if isinstance(item, pytest.Function) and "profile_boots" in item.fixturenames}
    specs = [spec for spec in BOOT_SPECS.values() if spec.module in selected]
    return boot_profiles(specs, build_base, tmp_path_factory.mktemp("profile-boots"))
