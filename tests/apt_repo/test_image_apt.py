"""What the image carries: the deb822 sources and the unattended-upgrades policy, rendered
as the overlay stage renders them and read back by real apt tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from apt_repo.archive import ArchiveSpec
from apt_repo.keys import IMAGE_KEYRING
from apt_repo.sources import deb822
from builder.config import make_config
from stages.overlay import render, template_context

from .conftest import PROJECT_ROOT

APT_OVERLAY = PROJECT_ROOT / "rootfs/overlay/golem-provider/etc/apt"
SOURCES = APT_OVERLAY / "sources.list.d/golem-gpu-live.sources.j2"
UPGRADES = APT_OVERLAY / "apt.conf.d/52golem-gpu-live-upgrades.j2"

# What Debian's unattended-upgrades ships in 50unattended-upgrades (abridged).
DEBIAN_DEFAULTS = """Unattended-Upgrade::Origins-Pattern {
        "origin=Debian,codename=${distro_codename},label=Debian";
        "origin=Debian,codename=${distro_codename},label=Debian-Security";
};
Unattended-Upgrade::Allowed-Origins { "Debian:stable"; };
"""


def context(tmp_path: Path) -> dict[str, object]:
    config = make_config(PROJECT_ROOT, "golem-provider", "1.0", tmp_path / "t", tmp_path / "w")
    return template_context(config)


def stanza(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z-]+): (.*)$", text, re.M))


def test_sources_point_at_the_channel_with_signed_by(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    golem, suite = ctx["golem"], ctx["profile"].debian.suite  # type: ignore[attr-defined]
    fields = stanza(render(SOURCES, ctx))
    assert fields == stanza(deb822(golem.apt_url, suite))  # type: ignore[attr-defined]
    assert fields["Signed-By"] == IMAGE_KEYRING == "/usr/share/keyrings/golem-gpu-live.gpg"
    assert fields["URIs"].endswith("/" + golem.channel)  # type: ignore[attr-defined]
    assert "trusted" not in render(SOURCES, ctx)


@pytest.mark.tools
def test_apt_reads_the_rendered_upgrade_policy(tmp_path: Path) -> None:
    if shutil.which("apt-config") is None:
        pytest.skip("needs apt-config")
    ctx = context(tmp_path)
    parts = tmp_path / "apt.conf.d"
    parts.mkdir()
    (parts / "50unattended-upgrades").write_text(DEBIAN_DEFAULTS)
    (parts / "52golem-gpu-live-upgrades").write_text(render(UPGRADES, ctx))
    (tmp_path / "apt.conf").write_text(f'Dir::Etc::parts "{parts}/";\n'
                                       f'Dir::Etc::main "{tmp_path}/none";\n')
    dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True,
                          env={"PATH": os.environ["PATH"],
                               "APT_CONFIG": str(tmp_path / "apt.conf")}).stdout
    patterns = re.findall(r'^Unattended-Upgrade::Origins-Pattern:: "(.*)";$', dump, re.M)
    suite = ctx["profile"].debian.suite  # type: ignore[attr-defined]
    assert patterns == [f"origin={ArchiveSpec(date=0, valid_days=None).origin},"
                        f"codename={suite}"]
    assert not re.search(r"^Unattended-Upgrade::Allowed-Origins:: ", dump, re.M)
    for key in ("Update-Package-Lists", "Unattended-Upgrade"):
        assert f'APT::Periodic::{key} "1";' in dump
