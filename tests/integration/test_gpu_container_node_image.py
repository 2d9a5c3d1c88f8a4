"""The gpu-container-node profile (reference 004) built from Debian's archive and booted once.

One build (in the profiles' shared cache, session fixture: its nvidia module is the one
iluvatar-worker compiles, same kernel and driver) serves the tests; its boot runs beside
the other profiles' (profile_images.py), with the shared image contract: a first-boot
golemwz.toml whose SSH key the guest script logs in with. QEMU has no GPU and no
registry: the boot must reach multi-user with no failed unit (nvidia-persistenced and
nvidia-cdi-generate skipped, the toolkit not installed), with the compiled nvidia
module there for the running kernel, nvidia not blacklisted (nouveau is), and Podman
running, with crun, a command in an image made in the guest from its own files, its
storage on the storage partition.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import MEASUREMENTS, BuiltImage
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
    shipped_example,
    squashfs_of,
)

pytestmark = pytest.mark.root

PROFILE = "gpu-container-node"
OVERLAY = Path(__file__).resolve().parents[2] / "rootfs/overlay" / PROFILE
NVIDIA_DRIVER_MODULES = {"nvidia", "nvidia_drm", "nvidia-drm", "nvidia_modeset", "nvidia_uvm"}
COMPILER_PACKAGES = re.compile(r"(gcc(-\d+)?|cpp(-\d+)?|make|dkms|.*-dkms|linux-headers-.*"
                               r"|linux-kbuild-.*)")


@pytest.fixture(scope="session")
def container_node_image(build_base: Path) -> BuiltImage:
    return build_profile(build_base, PROFILE)


def test_image_has_the_container_host_of_reference_004(
        container_node_image: BuiltImage) -> None:
    squashfs = squashfs_of(container_node_image)
    installed = installed_packages(squashfs)
    assert {"podman", "crun", "catatonit", "uidmap", "passt", "nvidia-smi", "libcuda1",
            "nvidia-persistenced", "nvidia-modprobe"} <= installed
    # No compiler, headers or DKMS: the module comes compiled in its own package.
    assert not [name for name in installed if COMPILER_PACKAGES.fullmatch(name)], installed
    assert compiled_modules(installed) == ["nvidia"], installed
    assert 'runtime = "crun"' in image_file(
        squashfs, "etc/containers/containers.conf.d/50-crun.conf")
    assert "blacklist nouveau" in image_file(squashfs, "etc/modprobe.d/nouveau-blacklist.conf")
    # common's VFIO blacklist of nvidia is replaced; nothing loads nvidia without a GPU.
    for replaced in ("etc/modprobe.d/golem-gpu-passthrough.conf",
                     "etc/modules-load.d/nvidia.conf"):
        assert not [line for line in image_file(squashfs, replaced).splitlines()
                    if line and not line.startswith("#")], replaced
    assert 'name = "gpu-container-node"' in image_file(
        squashfs, "usr/share/golemwz/profile.toml")
    # The conf partition carries the profile's own example, not GOLEM's.
    example = OVERLAY / "usr/share/golemwz/golemwz-example.toml"
    assert shipped_example(container_node_image.img).strip() == example.read_text().strip()
    cached = re.search(r"\[modules-nvidia\] cached \(", container_node_image.output)
    MEASUREMENTS[f"{PROFILE} nvidia module"] = \
        "from the shared cache" if cached else "compiled by this build"


# A local image made from the guest's own files (no registry in CI): echo, cat and the
# C library they need, and a marker file only the image has.
GUEST = r"""
echo "login=$(id -un)"
echo "ssh_key=$(grep -c gpu-container-node-test ~/.ssh/authorized_keys)"
echo "cmdline=$(cat /proc/cmdline)"
blacklisted=$(/usr/sbin/modprobe -c | awk '$1 == "blacklist" {print $2}' | sort -u)
echo "blacklisted=$(echo $blacklisted)"
echo "compiler=$(command -v gcc cc dkms | tr '\n' ' ')"
cdi=nvidia-cdi-generate.service
echo "cdi=$(systemctl is-enabled $cdi) $(systemctl show -p ActiveState --value $cdi)\
 $(systemctl show -p Result --value $cdi) $(systemctl show -p ConditionResult --value $cdi)"
echo "persistenced=$(systemctl is-active nvidia-persistenced.service)"
echo "provider=$(systemctl is-active golem-provider.service)"
echo "storage=$(findmnt --noheadings --output SOURCE --target /var/lib/containers)"
marker=/tmp/podman-image/etc/podman-test-marker
mkdir -p "${marker%/*}" && echo "made in the guest" >"$marker"
sudo -n tar -cf /tmp/podman-image.tar -C / bin lib lib64 usr/bin/echo usr/bin/cat \
    usr/lib/x86_64-linux-gnu/libc.so.6 usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
    usr/lib64/ld-linux-x86-64.so.2 -C /tmp/podman-image etc
echo "import=$(sudo -n podman import /tmp/podman-image.tar localhost/guest-files 2>&1 | tail -n 1)"
echo "run=$(sudo -n podman run --name guest-files-test --network=none localhost/guest-files \
    /usr/bin/cat /etc/podman-test-marker 2>/tmp/podman-run.err | tr '\n' ' ')"
echo "run_err=$(tail -c 300 /tmp/podman-run.err | tr '\n' ' ')"
echo "container_runtime=$(sudo -n podman inspect --format '{{.OCIRuntime}}' guest-files-test)"
sudo -n podman rm guest-files-test >/dev/null
echo "podman_runtime=$(sudo -n podman info --format '{{.Host.OCIRuntime.Name}}')"
echo "graph_root=$(sudo -n podman info --format '{{.Store.GraphRoot}} {{.Store.GraphDriverName}}')"
"""


register_boot(BootSpec(PROFILE, __name__, "non_interactive_install = true\n",
                       GUEST + NVIDIA_MODULE_SCRIPT))


@pytest.mark.boot
def test_boot_runs_podman_with_crun_and_has_the_nvidia_module(
        profile_boots: ProfileBoots) -> None:
    guest = checked_boot(profile_boots, PROFILE).guest
    # The guest script ran over SSH as golem, with the key of the first-boot TOML.
    assert guest.get("login") == "golem" and guest.get("ssh_key") == "1", guest
    assert_nvidia_module_loads(guest)
    assert guest.get("compiler", "").strip() == "", guest
    blacklisted = guest.get("blacklisted", "").split()
    assert "nouveau" in blacklisted, guest
    assert not NVIDIA_DRIVER_MODULES & set(blacklisted), guest  # nvidiafb may be (fbdev)
    assert "modprobe.blacklist=nouveau" in guest.get("cmdline", "").split(), guest
    # Enabled, and skipped by its condition without the toolkit (not failed); no GPU
    # for nvidia-persistenced either; the GOLEM provider has no golemsp here.
    assert guest.get("cdi", "").split() == ["enabled", "inactive", "success", "no"], guest
    assert guest.get("persistenced") == "inactive", guest
    assert guest.get("provider") == "inactive", guest
    assert guest.get("storage", "").endswith("[/persistent/var/lib/containers]"), guest
    assert guest.get("run", "").strip() == "made in the guest", guest
    assert guest.get("container_runtime") == "crun", guest
    assert guest.get("podman_runtime") == "crun", guest
    assert guest.get("graph_root", "").startswith("/var/lib/containers/storage "), guest
