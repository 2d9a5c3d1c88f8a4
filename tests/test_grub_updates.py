"""The GRUB menu asks live-boot for package-update persistence keyed by the image name
(golemwz.updates reads the same arguments back), except in the entry without updates."""

from __future__ import annotations

from pathlib import Path

from golemwz.updates import PersistenceRequest, parse_cmdline

from builder.config import make_config
from stages.bootloader import render_grub_cfg
from tests.conftest import PROJECT_ROOT

REQUEST = PersistenceRequest("golem-live-updates", "golem-gpu-live-1.2.3")


def grub_entries(tmp_path: Path) -> dict[str, str]:
    """title -> kernel command line of each entry of the real template."""
    config = make_config(PROJECT_ROOT, "golem-provider", "1.2.3", tmp_path, tmp_path)
    entries, title = {}, ""
    for line in render_grub_cfg(config).splitlines():
        if line.startswith("menuentry"):
            title = line.split('"')[1]
        elif line.strip().startswith("linux "):
            entries[title] = line.split(None, 2)[2]
    return entries


def test_default_and_no_autostart_entries_keep_updates_under_the_image_name(
        tmp_path: Path) -> None:
    entries = grub_entries(tmp_path)
    assert list(entries) == ["Golem GPU Live 1.2.3", "Golem GPU Live 1.2.3 - NO AUTOSTART",
                             "Golem GPU Live 1.2.3 - WITHOUT UPDATES"]
    for title in list(entries)[:2]:
        assert parse_cmdline(entries[title]) == REQUEST, title
    # another version looks in another directory
    config = make_config(PROJECT_ROOT, "golem-provider", "1.2.4", tmp_path, tmp_path)
    default = render_grub_cfg(config).split("linux /live/vmlinuz ", 1)[1].splitlines()[0]
    assert parse_cmdline(default) == PersistenceRequest("golem-live-updates",
                                                        "golem-gpu-live-1.2.4")


def test_the_entry_without_updates_asks_live_boot_for_no_persistence(tmp_path: Path) -> None:
    pristine = grub_entries(tmp_path)["Golem GPU Live 1.2.3 - WITHOUT UPDATES"]
    assert "persistence" not in pristine  # no persistence* argument at all
    assert parse_cmdline(pristine) is None
    assert "skip_autostart" not in pristine.split()


