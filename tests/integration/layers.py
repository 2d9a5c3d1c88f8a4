"""Reading the live system's files from a squashfs stage's live/ directory: live-boot
stacks filesystem.squashfs (the installed packages) and overlay.squashfs (what the
overlay changed) in the order of live/filesystem.module, the top layer winning."""

from __future__ import annotations

import subprocess
from pathlib import Path

# live-boot's layers, top first: the overlay's changes over the installed packages.
LAYERS = ("overlay.squashfs", "filesystem.squashfs")


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
