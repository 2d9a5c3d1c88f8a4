"""The iluvatar-worker profile (reference 001) built from Debian's archive and booted once.

One build (in the profiles' shared cache, session fixture) serves the tests; its boot
runs beside the other profiles' (profile_images.py). QEMU has no GPU: the boot must
still reach multi-user with no failed unit (nvidia-persistenced skipped by its
condition) with the compiled nvidia and zfs modules there for the running kernel,
containerd active with the CNI plugins where Debian's containerd and 001 look for them
and its zfs snapshotter on the pool the first-boot TOML asks for (a second virtual
disk), and 001's file limits in a login session and for services.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import BuiltImage, golem_live
from tests.integration.profile_images import (
    NVIDIA_MODULE_SCRIPT,
    BootSpec,
    ProfileBoots,
    assert_nvidia_module_loads,
    build_profile,
    checked_boot,
    compiled_modules,
    image_file,
    installed_packages,
    register_boot,
    squashfs_of,
)

pytestmark = pytest.mark.root

PROFILE = "iluvatar-worker"


@pytest.fixture(scope="session")
def iluvatar_image(build_base: Path) -> BuiltImage:
    return build_profile(build_base, PROFILE)


def test_image_has_the_worker_host_of_reference_001(iluvatar_image: BuiltImage) -> None:
    squashfs = squashfs_of(iluvatar_image)
    limits = image_file(squashfs, "etc/security/limits.d/90-iluvatar.conf")
    assert "*            hard    nofile          1000000" in limits.splitlines()
    manager = image_file(squashfs, "etc/systemd/system.conf.d/90-iluvatar-limits.conf")
    assert "DefaultLimitNOFILE=1000000" in manager and "DefaultLimitNPROC=1000000" in manager
    persistenced = image_file(
        squashfs, "etc/systemd/system/nvidia-persistenced.service.d/90-persistence-mode.conf")
    assert ("ExecStart=/usr/bin/nvidia-persistenced --user nvpd --persistence-mode --verbose"
            in persistenced.splitlines())
    # Not loaded unconditionally: without a GPU that fails systemd-modules-load.
    assert not [line for line in image_file(squashfs, "etc/modules-load.d/nvidia.conf")
                .splitlines() if line and not line.startswith("#")]
    assert 'restart = "containerd.service"' in image_file(
        squashfs, "usr/share/golemwz/profile.toml")
    # No compiler and no DKMS in the image: the modules are compiled once elsewhere.
    installed = installed_packages(squashfs)
    assert {"containerd", "runc", "containernetworking-plugins", "bridge-utils", "iptables",
            "net-tools", "sysstat", "jq", "zfsutils-linux", "nvidia-smi",
            "nvidia-persistenced", "nvidia-modprobe"} <= installed
    assert not installed & {"dkms", "gcc", "make", "nvidia-kernel-dkms", "zfs-dkms"}
    assert compiled_modules(installed) == ["nvidia", "zfs"], installed
    assert {"nvidia-kernel-support", "firmware-nvidia-gsp"} <= installed


def test_a_second_build_reuses_the_compiled_modules(iluvatar_image: BuiltImage) -> None:
    again = golem_live("build", "--profile", PROFILE, "--version", "again", "--tmp-dir",
                       str(iluvatar_image.tmp_dir), "--work-dir",
                       str(iluvatar_image.work_dir / "again"))
    assert again.returncode == 0, again.stderr[-3000:]
    for module in ("nvidia", "zfs"):
        assert re.search(rf"\[modules-{module}\] cached \(", again.stderr), again.stderr
        assert f"[modules-{module}] running" not in again.stderr
    assert "dkms" not in again.stderr


# The second virtual disk the first-boot TOML names for the pool (virtio serial "zfs").
ZFS_DISK_SERIAL = "zfs"
FIRST_BOOT = f"""non_interactive_install = true
[profile]
zfs_pool = "device"
zfs_device = "by-id/virtio-{ZFS_DISK_SERIAL}"
"""
GUEST = """
echo "zfs_module=$(/usr/sbin/modinfo -F version zfs)"
echo "pools=$(sudo /usr/sbin/zpool list -H -o name,health | tr '\\t' ' ')"
echo "dataset=$(sudo /usr/sbin/zfs get -H -o value mounted,mountpoint ilu-pool/containerd | xargs)"
echo "snapshotter=$(sudo ctr plugins ls | awk '$2 == "zfs" {print $NF}')"
echo "containerd=$(systemctl is-active containerd.service)"
echo "ctr=$(sudo ctr version >/dev/null && echo ok)"
echo "cni=$(ls /opt/cni/bin/bridge /usr/lib/cni/host-local | wc -l)"
echo "nofile=$(ulimit -Hn)"
echo "service_nofile=$(systemctl show -p DefaultLimitNOFILE --value)"
echo "persistenced=$(systemctl is-active nvidia-persistenced.service)"
echo "zfs_loader=$(systemctl is-active zfs-load-module.service)"
echo "tools=$(PATH=$PATH:/usr/sbin command -v nvidia-smi zpool jq brctl sar | wc -l)"
"""


def zfs_disk(boot_dir: Path) -> tuple[str, ...]:
    """An empty 1 GiB second disk for the pool, made in the boot's directory."""
    disk = boot_dir / "zfs-disk.img"
    with open(disk, "wb") as handle:
        handle.truncate(1 << 30)
    return ("-drive", f"if=none,id=zfsdisk,format=raw,file={disk}", "-device",
            f"virtio-blk-pci,drive=zfsdisk,serial={ZFS_DISK_SERIAL}")


register_boot(BootSpec(PROFILE, __name__, FIRST_BOOT, GUEST + NVIDIA_MODULE_SCRIPT,
                       qemu_args=zfs_disk))


@pytest.mark.boot
def test_boot_runs_containerd_with_cni_and_the_limits(profile_boots: ProfileBoots) -> None:
    guest = checked_boot(profile_boots, PROFILE).guest
    assert guest.get("containerd") == "active" and guest.get("ctr") == "ok", guest
    assert guest.get("cni") == "2", guest
    assert guest.get("nofile") == "1000000", guest
    assert guest.get("service_nofile") == "1000000", guest
    # No GPU: skipped by its condition, not failed; the module is there all the same.
    assert guest.get("persistenced") == "inactive", guest
    assert_nvidia_module_loads(guest)
    assert guest.get("zfs_module", "").startswith("2.3."), guest
    assert guest.get("zfs_loader") == "active", guest
    assert guest.get("tools") == "5", guest
    # The pool on the second disk, the dataset at the snapshotter's directory, and
    # containerd restarted after it: its zfs snapshotter loaded (not "skip").
    assert guest.get("pools") == "ilu-pool ONLINE", guest
    assert guest.get("dataset") == \
        "yes /var/lib/containerd/io.containerd.snapshotter.v1.zfs", guest
    assert guest.get("snapshotter") == "ok", guest
