"""Facts with one home on each side of a boundary, checked to agree.

The wizard runs on the image and must not import the builder, so the constants
both sides need are defined once in each and tied together here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from golemwz import layout as wizard_layout

from apt_repo.debpkg import LAUNCHER_PATH
from apt_repo.keys import IMAGE_KEYRING, PROJECT_KEYRING
from builder.config import load_profile
from disk.layout import LAYOUT_FILE, load_layout
from stages.overlay import OVERLAY_DIR
from tests.conftest import PROJECT_ROOT


def image_layout():
    return {p.key: p for p in load_layout(PROJECT_ROOT / LAYOUT_FILE).partitions}


def test_the_wizard_knows_the_partitions_by_the_names_the_image_gives_them() -> None:
    parts = image_layout()
    assert wizard_layout.CONF_PARTLABEL == parts["conf"].name
    assert wizard_layout.ROOT_PARTLABEL == parts["root"].name
    assert wizard_layout.GOLEM_STORAGE_PARTLABEL == parts["storage"].name


def test_the_wizard_grows_the_partition_the_image_marks_with_the_fixed_partuuid() -> None:
    fixed = image_layout()["storage"].partuuid
    assert fixed, f"Golem storage has no fixed PARTUUID in {LAYOUT_FILE}"
    assert fixed.lower() == wizard_layout.GOLEM_STORAGE_PARTUUID.lower()


def test_the_conf_partition_has_the_partuuid_golems_imager_looks_for() -> None:
    fixed = image_layout()["conf"].partuuid
    assert fixed and fixed.lower() == wizard_layout.CONF_PARTUUID.lower()
    # golem-gpu-imager v0.2.3 src/disk.rs: CONFIG_PARTITION_UUID; its storage value too.
    assert wizard_layout.CONF_PARTUUID == "33b921b8-edc5-46a0-8baa-d0b7ad84fc71"
    assert wizard_layout.GOLEM_STORAGE_PARTUUID == "9b06e23f-74bb-4c49-b83d-d3b0c0c2bb01"


def test_the_profile_reads_the_maintainer_key_where_repo_key_writes_it() -> None:
    profile = load_profile(PROJECT_ROOT, "golem-provider")
    assert Path(profile.golem.keyring) == PROJECT_KEYRING


def test_no_overlay_file_spells_out_the_keyring_path_itself() -> None:
    # The image's sources are rendered from apt_repo.sources (golem_sources), so a moved
    # keyring cannot leave a stale Signed-By line behind in a template.
    spelled = [p for p in (PROJECT_ROOT / OVERLAY_DIR).rglob("*")
               if p.is_file() and IMAGE_KEYRING in p.read_text(errors="replace")]
    assert spelled == []


def test_the_wizard_unit_starts_the_launcher_the_package_installs() -> None:
    unit = (PROJECT_ROOT / OVERLAY_DIR / "common/etc/systemd/system/golemwz.service.j2")
    exec_start = re.search(r"^ExecStart=(\S+)", unit.read_text(), re.MULTILINE)
    assert exec_start and exec_start.group(1) == f"/{LAUNCHER_PATH}"
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    assert scripts["golemwz"] == "golemwz.cli:main"
