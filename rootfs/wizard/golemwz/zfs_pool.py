"""The zfs step: a ZFS pool for containerd's ZFS snapshotter (reference 001, "ZFS and
file system"), when golemwz.toml's [profile] table asks for one.

    zfs_pool = "file"     a file-backed pool on the storage partition, as 001 does
                          (`fallocate -l 100G .../ilu-pool; zpool create ilu-pool FILE`)
    zfs_pool = "device"   a pool on a whole disk or partition: zfs_device = "by-id/..."
    zfs_pool = "none"     no pool (the default): containerd keeps its overlayfs snapshotter

then the `containerd` dataset mounted at containerd's ZFS snapshotter directory and
containerd restarted. A pool made at an earlier boot is imported, never created again;
`zpool create` runs without -f, so it refuses a device that holds a filesystem or is in use.
A pool found on the storage partition may have been made by anyone who held the stick: it
is imported without mounting anything (-N), and only the containerd dataset is mounted,
at the mountpoint set here, whatever its own properties said.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from golemwz.errors import WizardError
from golemwz.profile_spec import ProfileSpec
from golemwz.storage_dirs import safe_directory

if TYPE_CHECKING:
    from golemwz.wizard import Wizard

# On the storage partition, beside the profile's persistent directories.
POOL_SUBDIR = "zfs"
DATASET = "containerd"
DEVICE_PREFIXES = ("by-id/", "by-partuuid/", "by-path/")


def device_path(dev_root: Path, value: str) -> Path:
    """/dev/disk/<by-id|by-partuuid|by-path>/NAME for zfs_device (validated text)."""
    prefix = next((p for p in DEVICE_PREFIXES if value.startswith(p)), None)
    name = value[len(prefix):] if prefix else ""
    if prefix is None or not name or "/" in name or name in (".", ".."):
        raise WizardError(f"zfs_device = {value!r} is not a disk name",
                          'write zfs_device = "by-id/NAME" as listed by `ls /dev/disk/by-id`')
    return dev_root / "disk" / prefix / name


def configure(wizard: Wizard, spec: ProfileSpec) -> None:
    values = dict(wizard.settings.profile or ())
    mode = spec.value(values, "zfs_pool") or "none"
    if mode == "none":
        wizard.step("no ZFS pool (zfs_pool is not set): containerd keeps its default "
                    "snapshotter")
        return
    runner, layout = wizard.services.runner, wizard.layout
    pool = str(spec.value(values, "zfs_pool_name"))
    mountpoint = spec.zfs["dataset_mountpoint"]
    if mode == "file":
        directory = layout.storage_mount_dir / POOL_SUBDIR
        search = ["-d", str(directory)]
    else:
        device = device_path(layout.dev_root, str(spec.value(values, "zfs_device") or ""))
        search = ["-d", str(device.parent)]
    if runner.run(["zpool", "list", "-H", "-o", "name", pool], check=False).returncode == 0:
        wizard.step(f"ZFS pool {pool} is imported already")
    elif runner.run(["zpool", "import", "-N", *search, pool], check=False).returncode == 0:
        wizard.step(f"ZFS pool {pool} imported (made at an earlier boot)")
    elif mode == "file":
        if not layout.storage_mount_dir.is_dir():
            raise WizardError("zfs_pool = \"file\" needs the storage partition",
                              "the storage step comes before the zfs step")
        backing = safe_directory(layout.storage_mount_dir, POOL_SUBDIR) / pool
        if backing.is_symlink():
            raise WizardError(f"{backing} is a symbolic link", "remove it")
        size = str(spec.value(values, "zfs_pool_size"))
        runner.run(["fallocate", "-l", size, str(backing)])
        runner.run(["zpool", "create", "-m", "none", pool, str(backing)])
        wizard.step(f"ZFS pool {pool} created on {backing} ({size})")
    else:
        if not device.exists():
            raise WizardError(f"zfs_device: {device} does not exist here",
                              "plug that disk in, or correct zfs_device")
        runner.run(["zpool", "create", "-m", "none", pool, str(device)])
        wizard.step(f"ZFS pool {pool} created on {device}")
    dataset = f"{pool}/{DATASET}"
    if runner.run(["zfs", "list", "-H", "-o", "name", dataset], check=False).returncode != 0:
        runner.run(["zfs", "create", "-o", f"mountpoint={mountpoint}", dataset])
        wizard.step(f"ZFS dataset {dataset} created at {mountpoint}")
    else:
        runner.run(["zfs", "set", f"mountpoint={mountpoint}", "canmount=on", dataset])
        runner.run(["zfs", "mount", dataset], check=False)  # fails when mounted already
        mounted = runner.run(["zfs", "get", "-H", "-o", "value", "mounted", dataset]).stdout
        if mounted.strip() != "yes":
            raise WizardError(f"ZFS dataset {dataset} cannot be mounted at {mountpoint}",
                              "see `zfs mount` in ~golem/golemwz.log")
        wizard.step(f"ZFS dataset {dataset} mounted at {mountpoint}")
    restart = spec.zfs.get("restart")
    if restart:
        runner.run(["systemctl", "restart", "--no-block", restart])
        wizard.step(f"restarted {restart} (its ZFS snapshotter is at {mountpoint})")
    wizard.configured.append(f"ZFS pool {pool} ({mode}), {dataset} at {mountpoint}")
