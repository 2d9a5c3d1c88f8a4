"""The iluvatar-worker profile (reference 001) built from Debian's archive and booted once.

One build (session fixture) serves both tests. QEMU has no GPU and, until the modules
stage compiles them for this profile, the image has no nvidia or zfs module: the boot
must still reach multi-user with no failed unit (nvidia-persistenced and
zfs-load-module skipped by their conditions), containerd active with the CNI plugins
where Debian's containerd and 001 look for them, and 001's file limits in a login
session and for services. The ZFS pool (the wizard's zfs step) needs the zfs module:
its argv is tested in tests/wizard/test_profile_iluvatar.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BuiltImage
from tests.integration.profile_images import (
    boot_with_first_boot,
    build_profile,
    image_file,
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
    status = image_file(squashfs, "var/lib/dpkg/status")
    installed = {block.split("\n", 1)[0].removeprefix("Package: ")
                 for block in status.split("\n\n") if "Status: install ok installed" in block}
    assert {"containerd", "runc", "containernetworking-plugins", "bridge-utils", "iptables",
            "net-tools", "sysstat", "jq", "zfsutils-linux", "nvidia-smi",
            "nvidia-persistenced", "nvidia-modprobe"} <= installed
    assert not installed & {"dkms", "gcc", "make", "nvidia-kernel-dkms", "zfs-dkms"}


GUEST = """
echo "containerd=$(systemctl is-active containerd.service)"
echo "ctr=$(sudo ctr version >/dev/null && echo ok)"
echo "cni=$(ls /opt/cni/bin/bridge /usr/lib/cni/host-local | wc -l)"
echo "nofile=$(ulimit -Hn)"
echo "service_nofile=$(systemctl show -p DefaultLimitNOFILE --value)"
echo "persistenced=$(systemctl is-active nvidia-persistenced.service)"
echo "zfs_module=$(systemctl is-active zfs-load-module.service)"
echo "tools=$(PATH=$PATH:/usr/sbin command -v nvidia-smi zpool jq brctl sar | wc -l)"
"""


@pytest.mark.boot
def test_boot_runs_containerd_with_cni_and_the_limits(
        iluvatar_image: BuiltImage, tmp_path: Path) -> None:
    boot = boot_with_first_boot(iluvatar_image, tmp_path, PROFILE,
                                "non_interactive_install = true\n", GUEST)
    guest = boot.guest
    assert guest.get("containerd") == "active" and guest.get("ctr") == "ok", guest
    assert guest.get("cni") == "2", guest
    assert guest.get("nofile") == "1000000", guest
    assert guest.get("service_nofile") == "1000000", guest
    # No GPU, no zfs module: skipped by their conditions, not failed.
    assert guest.get("persistenced") == "inactive", guest
    assert guest.get("zfs_module") == "inactive", guest
    assert guest.get("tools") == "5", guest
    assert "golemwz: no ZFS pool (zfs_pool is not set)" in boot.console
