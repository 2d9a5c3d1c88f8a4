"""Reading the live system's files from a squashfs stage's live/ directory: live-boot
stacks filesystem.squashfs (the installed packages) and overlay.squashfs (what the
overlay changed) in the order of live/filesystem.module, the top layer winning."""

from __future__ import annotations

import subprocess
from pathlib import Path

from builder.cache import StageCache
from builder.publish import published_key

# live-boot's layers, top first: the overlay's changes over the installed packages.
LAYERS = ("overlay.squashfs", "filesystem.squashfs")


def built_live_dir(tmp_dir: Path, usb_image: Path) -> Path:
    """The live/ directory a published USB image was built from. Profiles sharing one
    TMP_DIR each add squashfs entries, so not the newest one: the image's publish record
    names its usb entry (WORK_DIR/.cache), whose manifest names the squashfs entry."""
    usb_key = published_key(usb_image)
    assert usb_key is not None, f"{usb_image} has no publish record: not built by golem-live"
    squashfs_key = StageCache(usb_image.parent / ".cache", "usb").manifest(usb_key) \
        .deps["squashfs"]
    live = StageCache(tmp_dir / "cache", "squashfs").entry(squashfs_key) / "live"
    assert live.is_dir(), f"{usb_image} was built from {live}, which is gone"
    return live


def unsquashfs_bytes(live: Path, path: str) -> bytes:
    """A file as the live system sees it: from the top layer holding it."""
    for layer in LAYERS:
        result = subprocess.run(["unsquashfs", "-cat", str(live / layer), path],
                                capture_output=True)
        if result.returncode == 0:
            return result.stdout
    raise AssertionError(f"{path} is in no layer of {live}")


def unsquashfs_cat(live: Path, path: str) -> str:
    return unsquashfs_bytes(live, path).decode()


def layers_listing(live: Path) -> str:
    return "".join(subprocess.run(["unsquashfs", "-lls", str(live / layer)],
                                  capture_output=True, text=True, check=True).stdout
                   for layer in reversed(LAYERS))
