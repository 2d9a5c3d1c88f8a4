"""Package updates that survive a reboot: live-boot persistence on `Golem storage`.

The boot entry asks live-boot (trixie's 1:20250815~deb13u1, /usr/lib/live/boot/
9990-misc-helpers.sh: probe_for_directory_name, get_custom_mounts) for
persistence in directory mode: `persistence persistence-storage=directory
persistence-path=/golem-live-updates persistence-label=IMAGE_NAME`. At boot live-boot
looks on each partition for PATH/LABEL/persistence.conf and, where it finds one, mounts
an overlay for each listed directory: lower = the image's squashfs layers, upper =
PATH/LABEL/<dir>/rw on that partition.

This module prepares that directory on the boot stick's `Golem storage` once the
wizard has grown and mounted it (live-boot then keeps the partition mounted, so it
must not exist before the grow; see storage.grow_golem_storage). It lists only what
the package manager owns: /usr (programs and libraries; /lib, /bin, /sbin are links
into it) and /var/lib/dpkg (what is installed). /etc is not persisted: it holds this
boot's password, keys and provider environment, which the wizard writes each boot.

A stamp of the image's own package list (its dpkg status, read from the squashfs
layers) is kept beside persistence.conf. A directory made under a different build
with the same name is stale: it is set aside (renamed, so live-boot no longer finds
it) and the user is told to reboot. Directories of other image names are removed:
their image is gone from this stick.

Pure functions over paths; the wizard calls `prepare` with the mounted storage.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from golemwz.config import write_atomically
from golemwz.layout import SystemLayout
from golemwz.report import Reporter

CONF_NAME = "persistence.conf"  # live-boot 0001-init-vars.sh persistence_list
STAMP_NAME = "golem-image.sha256"
STALE_SUFFIX = ".stale"
# What the package manager owns. live-boot refuses /lib and anything under /run/live;
# a union needs no bootstrap copy (the image is its lower layer).
PERSISTED_DIRS = ("/usr", "/var/lib/dpkg")
DPKG_STATUS = Path("var/lib/dpkg/status")


@dataclass(frozen=True)
class PersistenceRequest:
    path: str  # persistence-path, relative to the partition's root
    label: str  # persistence-label: the directory under it (the image name)

    def directory(self, storage_root: Path) -> Path:
        return storage_root / self.path.strip("/") / self.label


def parse_cmdline(cmdline: str) -> PersistenceRequest | None:
    """The directory-mode persistence the boot entry asked for, or None (the entry
    without updates, `nopersistence`, another persistence mode, or a label that could
    escape the path)."""
    words = cmdline.split()
    if "persistence" not in words or "nopersistence" in words:
        return None
    values = dict(w.split("=", 1) for w in words if "=" in w)
    if "directory" not in values.get("persistence-storage", "").split(","):
        return None
    path, label = values.get("persistence-path", ""), values.get("persistence-label", "")
    parts = [p for p in path.split("/") if p]
    if not parts or not label or any(p in (".", "..") for p in parts) \
            or "/" in label or label in (".", "..") or "," in label:
        return None
    return PersistenceRequest("/".join(parts), label)


def persistence_conf() -> str:
    lines = [f"{directory} union" for directory in PERSISTED_DIRS]
    return ("# Written by golemwz: package updates of this image, kept across reboots.\n"
            + "\n".join(lines) + "\n")


def image_stamp(live_rootfs_dir: Path) -> str | None:
    """sha256 of the image's own dpkg status, each squashfs layer's in name order
    (live-boot mounts each layer under /run/live/rootfs); None when there is none."""
    digest = hashlib.sha256()
    found = False
    layers = sorted(live_rootfs_dir.iterdir()) if live_rootfs_dir.is_dir() else []
    for layer in layers:
        status = layer / DPKG_STATUS
        if status.is_file():
            digest.update(layer.name.encode() + b"\0" + status.read_bytes())
            found = True
    return digest.hexdigest() if found else None


def prepare(storage_root: Path, request: PersistenceRequest, stamp: str,
            reporter: Reporter) -> bool:
    """Make REQUEST's directory on the mounted storage ready for the next boot; True
    when updates persist from now on (or already did)."""
    directory = request.directory(storage_root)
    _remove_other_images(directory, reporter)
    stamp_file = directory / STAMP_NAME
    if directory.exists():
        saved = stamp_file.read_text().strip() if stamp_file.is_file() else None
        if saved == stamp and (directory / CONF_NAME).is_file():
            reporter.detail(f"package updates persist in {directory}")
            return True
        if saved is not None and saved != stamp:
            aside = _set_aside(directory)
            reporter.warn(f"the updates kept in {directory} were made under another build "
                          f"named {request.label}: set aside as {aside.name}; reboot so this "
                          "boot's programs are the image's own")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    write_atomically(stamp.encode() + b"\n", stamp_file)
    # Last: live-boot uses the directory only once persistence.conf is there.
    write_atomically(persistence_conf().encode(), directory / CONF_NAME)
    reporter.step(f"package updates are kept on the storage from the next boot on "
                  f"({request.path}/{request.label})")
    return True


def _remove_other_images(directory: Path, reporter: Reporter) -> None:
    parent = directory.parent
    if not parent.is_dir():
        return
    for other in sorted(parent.iterdir()):
        if other.name != directory.name and other.is_dir() and not other.is_symlink():
            shutil.rmtree(other)
            reporter.detail(f"removed {other}: updates of an image no longer on this stick")


def _set_aside(directory: Path) -> Path:
    aside = directory.with_name(directory.name + STALE_SUFFIX)
    if aside.exists():
        shutil.rmtree(aside)
    directory.rename(aside)
    return aside


def keep_updates(layout: SystemLayout, reporter: Reporter) -> bool:
    """After the boot stick's `Golem storage` is grown and mounted on
    layout.storage_mount_dir: prepare the persistence the boot entry asks for."""
    try:
        cmdline = layout.kernel_cmdline_file.read_text()
    except OSError:
        cmdline = ""
    request = parse_cmdline(cmdline)
    if request is None:
        reporter.detail("this boot entry keeps no package updates across reboots")
        return False
    stamp = image_stamp(layout.live_rootfs_dir)
    if stamp is None:
        reporter.warn(f"no dpkg status under {layout.live_rootfs_dir}: package updates "
                      "last until the next reboot")
        return False
    try:
        return prepare(layout.storage_mount_dir, request, stamp, reporter)
    except OSError as error:
        reporter.warn(f"cannot keep package updates on the storage ({error}): they last "
                      "until the next reboot")
        return False
