"""built_live_dir: the squashfs entry a published USB image was built from, found
through the image's publish record and its usb manifest, not the newest entry (the
profile tests share one TMP_DIR)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from builder.cache import Manifest, StageCache
from builder.publish import publish_copy, published_key
from tests.integration.layers import built_live_dir


def squashfs_entry(tmp_dir: Path, profile: str) -> str:
    """A committed squashfs entry with a live/ directory; its key."""
    cache = StageCache(tmp_dir / "cache", "squashfs")
    temp = cache.new_temp()
    (temp / "live").mkdir()
    (temp / "live/overlay.squashfs").write_text(profile)
    manifest = Manifest("squashfs", 1, {"profile": profile}, {}, {"packages": profile})
    cache.commit(temp, manifest)
    return manifest.key()


def publish_usb(work_dir: Path, squashfs_key: str) -> Path:
    cache = StageCache(work_dir / ".cache", "usb")
    temp = cache.new_temp()
    (temp / "golem-gpu-live-test.img").write_bytes(b"stick")
    manifest = Manifest("usb", 2, {}, {}, {"squashfs": squashfs_key, "bootloader": "b0"})
    entry = cache.commit(temp, manifest)
    image = work_dir / "golem-gpu-live-test.img"
    publish_copy(entry / image.name, image, manifest.key())
    return image


def test_the_image_s_own_squashfs_entry_not_the_newest(tmp_path: Path) -> None:
    tmp_dir = tmp_path / "profiles/tmp"
    ours = squashfs_entry(tmp_dir, "gevulot-node")
    image = publish_usb(tmp_path / "profiles/gevulot-node", ours)
    time.sleep(0.01)
    squashfs_entry(tmp_dir, "iluvatar-worker")  # built later, by another profile
    live = built_live_dir(tmp_dir, image)
    assert live == tmp_dir / "cache/squashfs" / ours / "live"
    assert (live / "overlay.squashfs").read_text() == "gevulot-node"


def test_an_image_without_a_publish_record_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "golem-gpu-live-test.img"
    image.write_bytes(b"copied by hand")
    assert published_key(image) is None
    with pytest.raises(AssertionError, match="no publish record"):
        built_live_dir(tmp_path / "tmp", image)
