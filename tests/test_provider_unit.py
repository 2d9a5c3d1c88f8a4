"""The rendered golem-provider.service: what the provider needs to run GPU tasks and
what upstream's unit (golem-gpu-live rootfs/golemsp.service) sets."""

from __future__ import annotations

from pathlib import Path

from builder.config import make_config
from stages.overlay import render, template_context
from tests.conftest import PROJECT_ROOT

UNIT = PROJECT_ROOT / "rootfs/overlay/common/etc/systemd/system/golem-provider.service.j2"


def unit_settings(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a systemd unit, each its (key, value) lines in order (keys repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def test_provider_unit_has_the_memlock_limit_metrics_group_and_restart(tmp_path: Path) -> None:
    config = make_config(PROJECT_ROOT, "golem-provider", "1", tmp_path / "t", tmp_path / "w")
    service = unit_settings(render(UNIT, template_context(config)))["Service"]
    assert ("LimitMEMLOCK", "infinity") in service  # QEMU pins guest RAM for VFIO
    assert ("Environment", "YAGNA_METRICS_GROUP=GolemGpuLive") in service
    assert ("Restart", "always") in service
    assert ("User", config.profile.user) in service
    assert ("ExecStart", "/usr/bin/golemsp run") in service
    assert [k for k, _ in service].count("LimitMEMLOCK") == 1
