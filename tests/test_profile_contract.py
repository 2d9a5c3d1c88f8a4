"""Non-GOLEM profiles share GOLEM's image contract: each profile whose overlay carries a
wizard spec (usr/share/golemwz/profile.toml) has its own example beside it, and the USB
image puts that example, not common's, on the conf partition."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.config import make_config
from stages.usb import EXAMPLE_CONF, example_conf

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile,expected", [
    ("gpu-node", EXAMPLE_CONF),
    ("golem-provider", EXAMPLE_CONF),
    ("gevulot-node", Path("rootfs/overlay/gevulot-node/usr/share/golemwz/golemwz-example.toml")),
    ("iluvatar-worker",
     Path("rootfs/overlay/iluvatar-worker/usr/share/golemwz/golemwz-example.toml")),
    ("gpu-container-node",
     Path("rootfs/overlay/gpu-container-node/usr/share/golemwz/golemwz-example.toml")),
])
def test_the_conf_partition_gets_the_profiles_own_example(
        profile: str, expected: Path, tmp_path: Path) -> None:
    config = make_config(PROJECT_ROOT, profile, "test", tmp_path / "tmp", tmp_path / "work")
    assert example_conf(config) == expected
    assert (PROJECT_ROOT / expected).is_file()


def test_every_wizard_spec_has_an_example_beside_it() -> None:
    specs = sorted(PROJECT_ROOT.glob("rootfs/overlay/*/usr/share/golemwz/profile.toml"))
    assert len(specs) >= 3
    for spec in specs:
        assert (spec.parent / "golemwz-example.toml").is_file(), spec
