"""Checks made before any stage runs: root, host tools, reachable sources."""

from __future__ import annotations

import shutil
from collections.abc import Iterable

import requests

from builder.errors import BuildError
from builder.mounts import is_root

# Which Debian package provides each host tool, for the error message.
TOOL_PACKAGES = {
    "mmdebstrap": "mmdebstrap", "mksquashfs": "squashfs-tools", "xorriso": "xorriso",
    "grub-mkimage": "grub-common", "sfdisk": "fdisk", "mcopy": "mtools", "mformat": "mtools",
    "mkfs.vfat": "dosfstools", "mkfs.ext4": "e2fsprogs", "qemu-system-x86_64": "qemu-system-x86",
    "apt-ftparchive": "apt-utils", "gpgv": "gpgv", "gpg": "gpg", "dpkg-deb": "dpkg",
    "chroot": "coreutils", "mount": "mount", "umount": "mount", "cp": "coreutils",
    "losetup": "mount", "grub-bios-setup": "grub-pc-bin", "e2fsck": "e2fsprogs",
    "debugfs": "e2fsprogs", "mmd": "mtools", "sbverify": "sbsigntool",
}


def check_root(needed: bool) -> None:
    if needed and not is_root():
        raise BuildError("building an image needs root (chroot, mounts)",
                         "run it as root: sudo make root image")


def check_tools(tools: Iterable[str]) -> None:
    missing = sorted({t for t in tools if shutil.which(t) is None})
    if missing:
        packages = sorted({TOOL_PACKAGES.get(t, t) for t in missing})
        raise BuildError(f"missing host tool(s): {', '.join(missing)}",
                         f"install them with `make deps` (apt-get install {' '.join(packages)})")


def check_url(url: str, what: str, fix: str, timeout: float = 15.0) -> None:
    """One HEAD request; any answer below 400 counts as reachable."""
    try:
        response = requests.head(url, timeout=timeout, allow_redirects=True)
    except requests.RequestException as err:
        reason = type(err).__name__
        raise BuildError(f"{what} is unreachable ({url}: {reason})", fix) from None
    if response.status_code >= 400:
        raise BuildError(f"{what} answered HTTP {response.status_code} for {url}", fix)


def check_debian_mirror(mirror: str, suite: str) -> None:
    check_url(f"{mirror.rstrip('/')}/dists/{suite}/Release", f"Debian mirror for {suite}",
              "check the network, or set debian.mirror in the profile to a reachable mirror")
