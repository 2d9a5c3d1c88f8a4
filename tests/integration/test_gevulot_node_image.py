"""The gevulot-node profile (reference 002) built from Debian's archive and booted once.

One build (session fixture) serves both tests: the image's files, and one QEMU boot
(USB stick, OVMF, TCG; beside the other profiles' boots, profile_images.py) with a
first-boot golemwz.toml carrying the boot's SSH key.
QEMU has no GPU: the wizard's GPU step says so and the node runs without one (no
drop-in, no vfio binding); no gevulot_psk_passphrase is given, so the node's quadlet
unit is generated but not started (quay.io is not reachable from CI anyway). The boot
must reach multi-user with no failed unit, PostgreSQL 17 running with the gevulot
role and database, /var/lib/gevulot on the storage partition holding the generated
database password, and `systemctl cat gevulot-node.service` showing the quadlet.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BuiltImage
from tests.integration.profile_images import (
    BootSpec,
    ProfileBoots,
    build_profile,
    checked_boot,
    image_file,
    register_boot,
    shipped_example,
    squashfs_of,
)

pytestmark = pytest.mark.root

PROFILE = "gevulot-node"
EXAMPLE = Path(__file__).resolve().parents[2] / (
    "rootfs/overlay/gevulot-node/usr/share/golemwz/golemwz-example.toml")


@pytest.fixture(scope="session")
def gevulot_image(build_base: Path) -> BuiltImage:
    return build_profile(build_base, PROFILE)


def test_image_has_the_node_host_of_reference_002(gevulot_image: BuiltImage) -> None:
    squashfs = squashfs_of(gevulot_image)
    modules = image_file(squashfs, "etc/modules-load.d/gevulot.conf").split()
    assert {"vfio-pci", "vfio_iommu_type1", "vsock", "vhost_vsock"} <= set(modules)
    blacklist = image_file(squashfs, "etc/modprobe.d/gevulot-nvidia.conf")
    assert "blacklist nvidia\n" in blacklist and "blacklist nouveau\n" in blacklist
    assert 'SUBSYSTEM=="vfio", OWNER="root", GROUP="kvm"' in image_file(
        squashfs, "etc/udev/rules.d/99-golem-vfio.rules")
    assert "m gevulot kvm" in image_file(squashfs, "usr/lib/sysusers.d/gevulot.conf")
    quadlet = image_file(squashfs, "etc/containers/systemd/gevulot-node.container")
    for line in ("Image=quay.io/gevulot/node:latest", "AddDevice=/dev/kvm:rw",
                 "AddDevice=/dev/vhost-vsock:rw", "Ulimit=memlock=-1:-1",
                 "Volume=/var/lib/gevulot:/var/lib/gevulot:z", "ExposeHostPort=9944"):
        assert line in quadlet.splitlines()
    assert 'name = "gevulot-node"' in image_file(squashfs, "usr/share/golemwz/profile.toml")
    # The conf partition carries the profile's own example, not GOLEM's.
    assert shipped_example(gevulot_image.img).strip() == EXAMPLE.read_text().strip()


GUEST = """
echo "postgres=$(systemctl is-active postgresql@17-main.service)"
echo "db=$(systemctl is-active gevulot-db.service)"
owner="SELECT datname || ':' || pg_get_userbyid(datdba) FROM pg_database"
echo "database=$(sudo runuser -u postgres -- psql -tAc "$owner WHERE datname = 'gevulot'")"
password=$(sudo cat /var/lib/gevulot/db-password)
as_gevulot="psql -h localhost -U gevulot -d gevulot -tAc"
echo "login=$(PGPASSWORD=$password $as_gevulot 'SELECT current_user')"
echo "storage=$(findmnt --noheadings --output SOURCE --target /var/lib/gevulot)"
echo "password_owner=$(sudo stat -c %U /var/lib/gevulot/db-password)"
unit=$(systemctl cat gevulot-node.service)
run_line=$(echo "$unit" | grep '^ExecStart=/usr/bin/podman run')
echo "quadlet=$(echo "$run_line" | grep -o -e /dev/vhost-vsock -e quay.io/gevulot/node | sort -u)"
echo "run=$(echo "$run_line" | grep -c quay.io/gevulot/node) $run_line" | head -c 300
echo
echo "source=$(systemctl show -p SourcePath --value gevulot-node.service)"
echo "node=$(systemctl is-active gevulot-node.service)"
echo "groups=$(id -nG gevulot)"
wanted='^(vfio_pci|vfio_iommu_type1|vhost_vsock|vsock)$'
echo "vfio_modules=$(lsmod | awk -v m="$wanted" '$1 ~ m {print $1}' | sort | tr '\\n' ' ')"
dropin=/etc/containers/systemd/gevulot-node.container.d/50-gpu.conf
echo "gpu_dropin=$(test -e $dropin && echo yes || echo no)"
echo "vfio_unit=$(systemctl is-active golemwz-vfio.service)"
"""


register_boot(BootSpec(PROFILE, __name__, "non_interactive_install = true\n", GUEST))


@pytest.mark.boot
def test_boot_runs_postgres_and_generates_the_node_quadlet(profile_boots: ProfileBoots) -> None:
    boot = checked_boot(profile_boots, PROFILE)
    guest, console = boot.guest, boot.console
    assert guest.get("postgres") == "active" and guest.get("db") == "active", guest
    assert guest.get("database") == "gevulot:gevulot", guest
    assert guest.get("login") == "gevulot", guest
    assert guest.get("storage", "").endswith("[/persistent/var/lib/gevulot]"), guest
    assert guest.get("password_owner") == "gevulot", guest
    # key_values keeps the first line: /dev/vhost-vsock sorts before quay.io.
    assert guest.get("quadlet") == "/dev/vhost-vsock", guest
    assert guest.get("run", "").startswith("1 ExecStart=/usr/bin/podman run"), guest
    assert guest.get("source") == "/etc/containers/systemd/gevulot-node.container", guest
    assert guest.get("node") == "inactive", guest  # no pre-shared key: not started
    assert "kvm" in guest.get("groups", "").split(), guest
    assert guest.get("vfio_modules", "").split() == [
        "vfio_iommu_type1", "vfio_pci", "vhost_vsock", "vsock"], guest
    assert guest.get("gpu_dropin") == "no" and guest.get("vfio_unit") == "inactive", guest
    for line in ("no NVIDIA GPU on this machine",
                 "gevulot-node.service is not started: set gevulot_psk_passphrase",
                 "gevulot-modules: vfio_mdev skipped: this kernel",
                 "gevulot-db: database gevulot created"):
        assert line in console, f"{line!r} not on the serial console"
