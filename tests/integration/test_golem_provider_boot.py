"""The golem-provider image built from the realistic fakes, booted in QEMU (issue 9).

One build (the fakes of tests/golem_fakes.py on a fake GitHub, as
test_golem_provider_image.py; that test's stages are reused when it ran first), one
writable copy of the USB image 512 MiB larger than built, three boots of the default
entry:

1. GOLEM's imager wrote the conf partition: reformatted FAT (found by its PARTUUID),
   its golemwz.toml with non_interactive_install = true and no storage_partition,
   gpu_pci_slot nor init_price, and golem.env. The wizard runs unattended, grows
   `Golem storage`, prepares the package-update persistence for the next boot, and
   stops at the GPU step (QEMU has no NVIDIA GPU). What a GPU-less guest can show of
   the provider set-up is checked over SSH: the provider unit's memlock limit reaches
   golemsp (the stand-in records it) when the unit is started by hand, the stand-in
   ya-provider offers the three runtimes the packages installed, the manifest
   bundle's directories are there. Not checkable without a GPU: the wizard's runtime
   copies with --pci-device, `manifest-bundle add`, the preset and the provider
   environment file (all after the GPU step; unit-tested in tests/wizard).
2. live-boot unions /usr and /var/lib/dpkg from the storage; a newer
   ya-installer-resources from a second repository version (signed, served by the
   host on 127.0.0.1, which QEMU's user network shows the guest as 10.0.2.2) is
   installed with apt.
3. After the reboot the upgrade is still installed (dpkg and its new file), while
   the image's own layer still has the old version.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from golemwz.layout import CONF_PARTUUID

from apt_repo.archive import ArchiveSpec, build_archive
from apt_repo.keys import discard_home, ephemeral_home, ephemeral_key
from apt_repo.sources import deb822
from boot_test.qemu import BootOptions, image_path
from boot_test.session import Session, booted
from builder.runner import SubprocessRunner
from tests import golem_fakes
from tests.apt_repo.conftest import start_fake_github
from tests.conftest import MEASUREMENTS, golem_live, require_root
from tests.integration.test_golem_provider_image import SOURCE_DATE_EPOCH, golem_tmp_dir
from tests.integration.test_wizard_boot import (
    MTOOLS_ENV,
    WAITING_FOR_KEY,
    assert_storage_clean,
    ext4,
    free_port,
    key_values,
    read_table,
    run,
)

pytestmark = [pytest.mark.root, pytest.mark.boot]

VERSION = "test"
UPDATES_DIR = f"/golem-live-updates/golem-gpu-live-{VERSION}"  # rootfs/boot/grub.cfg.j2
UPGRADED = golem_fakes.ya_installer_resources()
MARKER = f"{golem_fakes.INSTALLER_DIR}/UPGRADED"
NEWER = dataclasses.replace(
    golem_fakes.ya_installer_resources("0.1.6", "v0.1.6"),
    files=(*golem_fakes.ya_installer_resources().files, (MARKER, "0.1.6\n")))
GROWTH = 512 * 2**20
BOOT_TIMEOUT = 600.0
POWEROFF_TIMEOUT = 180.0

# golem-gpu-imager v0.2.3 to_toml_content / to_env_content (see tests/wizard/test_imager.py),
# with an SSH key so the test can log in.
IMAGER_TOML = """# Golem Configuration
accepted_terms = true
glm_account = ""
glm_per_hour = "0.25"
non_interactive_install = true
ssh_keys = ["{key}"]

# Environment Variables
[env]
YA_NET_TYPE = "hybrid"
SUBNET = "public"
"""
IMAGER_ENV = "YA_NET_TYPE=hybrid\nSUBNET=public\nYA_PAYMENT_NETWORK_GROUP=testnet\n"


@pytest.fixture(scope="module")
def golem_provider_usb(build_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_root()
    debs = tmp_path_factory.mktemp("golem-debs")
    work = tmp_path_factory.mktemp("golem-provider-work")
    for fake in start_fake_github():
        golem_fakes.publish(fake, debs)
        started = time.monotonic()
        result = golem_live("build", "--profile", "golem-provider", "--version", VERSION,
                            "--tmp-dir", str(golem_tmp_dir(build_base)), "--work-dir", str(work),
                            "--github-api", fake.base,
                            "--source-date-epoch", str(SOURCE_DATE_EPOCH))
        MEASUREMENTS["golem-provider build to usb (after test_golem_provider_image)"] = \
            f"{time.monotonic() - started:.0f}s"
        assert result.returncode == 0, result.stderr[-4000:]
    return image_path(work, VERSION, "usb")


@pytest.fixture(scope="module")
def newer_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bytes]]:
    """A second version of the repository: (URL seen from the guest, its public key)."""
    root = tmp_path_factory.mktemp("repo-v2")
    debs = root / "debs"
    debs.mkdir()
    home = ephemeral_home(root / "gnupg")
    key = ephemeral_key(home)
    runner = SubprocessRunner(root / "repo.log")
    try:
        build_archive(runner, [NEWER.build(debs)], root / "repo",
                      ArchiveSpec(date=int(time.time()) - 600, valid_days=7,
                                  codename="trixie", suite="release"),
                      key, root / "key.gpg")
    finally:
        discard_home(runner, home)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(
        SimpleHTTPRequestHandler, directory=str(root / "repo")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://10.0.2.2:{server.server_address[1]}", (root / "key.gpg").read_bytes()
    finally:
        server.shutdown()
        thread.join()


def imager_conf_partition(image: Path, public_key: str, scratch: Path) -> None:
    """What the imager does: a new FAT on the partition with PARTUUID 33b921b8-...
    (label GOLEMCONF), then golemwz.toml and golem.env."""
    table = read_table(image)
    conf = table.partitions["Golem conf storage"]
    entries = json.loads(run("sfdisk", "--json", str(image)))["partitiontable"]["partitions"]
    assert [e["uuid"].lower() for e in entries if int(e["start"]) == conf.start] == [
        CONF_PARTUUID]  # how the imager finds it
    fat = scratch / "conf.img"
    fat.unlink(missing_ok=True)
    run("mkfs.vfat", "-F", "16", "-n", "GOLEMCONF", "-C", str(fat),
        str(conf.size * table.sector_size // 1024))
    (scratch / "golemwz.toml").write_text(IMAGER_TOML.format(key=public_key))
    (scratch / "golem.env").write_text(IMAGER_ENV)
    for name in ("golemwz.toml", "golem.env"):
        run("mcopy", "-i", str(fat), str(scratch / name), f"::{name}", env=MTOOLS_ENV)
    run("dd", f"if={fat}", f"of={image}", "bs=512", f"seek={conf.start}", "conv=notrunc",
        "status=none")
    listing = run("mdir", "-b", "-i", f"{image}@@{table.offset('Golem conf storage')}", "::",
                  env=MTOOLS_ENV)
    assert "golemwz-example.toml" not in listing and "golemwz.toml" in listing, listing


def boot(image: Path, log: Path, key: Path,
         during: list[tuple[str, str]]) -> tuple[str, dict[str, str], float]:
    """Boot the default entry until the wizard's final screen waits, run each (name,
    script) over SSH as golem, press a key, power off. The console, the scripts'
    key=value lines, the seconds taken."""
    started = time.monotonic()
    options = BootOptions(image=image, media="usb", firmware="uefi", timeout=BOOT_TIMEOUT,
                          log_path=log, snapshot=False)
    guest: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="golem-upd-") as temp, \
            booted(options, Path(temp), log.parent, ssh_port=free_port(), ssh_key=key) as session:
        waiting = session.wait_serial(WAITING_FOR_KEY, BOOT_TIMEOUT)
        if waiting:
            for name, script in during:
                out = guest_run(session, script)
                guest.update(key_values(out))
                log.with_name(f"{log.stem}-{name}.txt").write_text(out)
            session.keys("ret")
            powered_off = session.power_off(POWEROFF_TIMEOUT)
        console = session.serial_text()
    assert waiting, f"{WAITING_FOR_KEY!r} never appeared; console:\n{console[-4000:]}"
    assert powered_off, f"the guest did not power off; console:\n{console[-3000:]}"
    return console, guest, time.monotonic() - started


def guest_run(session: Session, script: str) -> str:
    return session.ssh("set -u\n" + script)


# Where /usr comes from, what dpkg says, whether the upgrade's file is there.
PACKAGE_STATE = f"""
echo "usr_upper=$(findmnt -n -o OPTIONS --target /usr | tr ',' '\\n' | sed -n 's/^upperdir=//p')"
echo "version=$(dpkg-query -W -f '${{Version}}' {UPGRADED.package})"
echo "marker=$(cat /{MARKER} 2>/dev/null || echo missing)"
layer=$(ls -d /run/live/rootfs/*/ | head -n 1)
echo "image_version=$(dpkg-query --admindir="$layer/var/lib/dpkg" -W -f '${{Version}}' \\
    {UPGRADED.package})"
"""

# The provider set-up a GPU-less guest can show. The unit is started by hand (its
# condition, the wizard's marker, is unmet after the GPU step failed) without pulling
# golemwz.service in again; the stand-in golemsp records its memlock limit.
PROVIDER_STATE = f"""
echo "memlock_unit=$(systemctl show -p LimitMEMLOCK --value golem-provider.service)"
echo "provider_before=$(systemctl is-active golem-provider.service)"
sudo touch /run/golemwz/provider-configured
sudo systemctl start --job-mode=ignore-requirements golem-provider.service
timeout 60 sh -c 'until grep -qs "\\"memlock\\"" ~/.golem-standin/calls.jsonl; do sleep 1; done'
echo "provider_started=$(systemctl is-active golem-provider.service)"
python3 - <<'EOF'
import json, pathlib
runs = [c for c in map(json.loads, (pathlib.Path.home() / ".golem-standin/calls.jsonl")
        .read_text().splitlines()) if c.get("memlock")]
print("golemsp_memlock=" + runs[-1]["memlock"]["soft"])
print("golemsp_metrics_group=" + runs[-1]["env"].get("YAGNA_METRICS_GROUP", ""))
EOF
sudo systemctl stop golem-provider.service
sudo rm /run/golemwz/provider-configured
echo "runtimes=$(ya-provider exe-unit list --json | python3 -c '
import json, os, sys
units = json.load(sys.stdin)
ok = all(os.path.exists(u[k]) for u in units for k in ("supervisor-path", "runtime-path"))
print(",".join(sorted(u["name"] for u in units)) + (" paths-ok" if ok else " paths-missing"))')"
echo "bundle=$(cd /{golem_fakes.INSTALLER_DIR} && ls -d {' '.join(golem_fakes.BUNDLE_DIRS)} \\
    | tr '\\n' ' ')"
"""


def upgrade_script(url: str, key: bytes) -> str:
    sources = deb822(url, "trixie", keyring="/etc/apt/keyrings/golem-test.gpg")
    encoded = base64.b64encode(key).decode()
    apt = ("sudo apt-get -o Dir::Etc::SourceList=/dev/null "
           "-o Dir::Etc::SourceParts=/etc/apt/golem-test.d -o DPkg::Lock::Timeout=300")
    return f"""
sudo mkdir -p /etc/apt/keyrings /etc/apt/golem-test.d
echo {encoded} | base64 -d | sudo tee /etc/apt/keyrings/golem-test.gpg >/dev/null
printf '%s' '{sources}' | sudo tee /etc/apt/golem-test.d/golem.sources >/dev/null
{apt} update >/tmp/apt.log 2>&1 && echo apt_update=ok
DEBIAN_FRONTEND=noninteractive {apt} install -y --only-upgrade {UPGRADED.package} \\
    >>/tmp/apt.log 2>&1 && echo apt_upgrade=ok
cat /tmp/apt.log
sync
"""


def test_imager_conf_provider_setup_and_an_upgrade_that_survives_a_reboot(
        golem_provider_usb: Path, newer_repository: tuple[str, bytes], tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "updates-test", "-f", str(key))
    image = tmp_path / "stick.img"
    run("cp", "--sparse=always", str(golem_provider_usb), str(image))
    os.truncate(image, image.stat().st_size + GROWTH)
    imager_conf_partition(image, key.with_suffix(".pub").read_text().strip(), tmp_path)

    # Boot 1: the imager's files, unattended; storage grown, persistence prepared.
    console, guest, seconds = boot(image, tmp_path / "boot1.log", key,
                                   [("provider", PROVIDER_STATE), ("packages", PACKAGE_STATE)])
    MEASUREMENTS["golem-provider boot 1 (imager conf, provider checks)"] = f"{seconds:.0f}s"
    for line in ("golemwz: read first-boot configuration golemwz.toml and golem.env from "
                 "Golem conf storage",
                 "golemwz: storage_partition is not set (non_interactive_install): "
                 "'Golem storage' of the stick booted from",
                 "golemwz: grew Golem storage",
                 "golemwz: package updates are kept on the storage from the next boot on "
                 f"({UPDATES_DIR.strip('/')})",
                 "golemwz: no compatible GPU"):
        assert line in console, f"boot 1: {line!r} not on the console"
    assert guest.get("memlock_unit") == "infinity", guest
    assert guest.get("provider_before") == "inactive", guest  # unconfigured: not started
    assert guest.get("provider_started") == "active", guest
    assert guest.get("golemsp_memlock") == "unlimited", guest
    assert guest.get("golemsp_metrics_group") == "GolemGpuLive", guest
    assert guest.get("runtimes") == "vm,vm-nvidia,wasmtime paths-ok", guest
    assert sorted(guest.get("bundle", "").split()) == sorted(golem_fakes.BUNDLE_DIRS), guest
    assert guest.get("usr_upper") == "/run/live/overlay/rw", guest  # nothing persisted yet
    assert guest.get("version") == UPGRADED.version, guest

    table = read_table(image)
    listing = run("debugfs", "-R", f"ls {UPDATES_DIR}", ext4(image, table))
    assert "persistence.conf" in listing and "golem-image.sha256" in listing, listing
    conf = run("debugfs", "-R", f"cat {UPDATES_DIR}/persistence.conf", ext4(image, table))
    assert "/usr union\n/var/lib/dpkg union\n" in conf, conf

    # Boot 2: persistence active; the upgrade from the second repository version.
    url, repo_key = newer_repository
    console, guest, seconds = boot(image, tmp_path / "boot2.log", key,
                                   [("upgrade", upgrade_script(url, repo_key)),
                                    ("packages", PACKAGE_STATE)])
    MEASUREMENTS["golem-provider boot 2 (apt upgrade onto the storage)"] = f"{seconds:.0f}s"
    persisted_upper = f"/run/live/persistence/sda5{UPDATES_DIR}/usr/rw"
    assert guest.get("usr_upper") == persisted_upper, guest
    assert guest.get("apt_update") == "ok" and guest.get("apt_upgrade") == "ok", \
        (tmp_path / "boot2-upgrade.txt").read_text()
    assert guest.get("version") == NEWER.version, guest
    assert "golemwz: storage configured" in console
    assert_storage_clean(image, read_table(image))

    # Boot 3: the upgrade is still installed; the image itself is unchanged.
    console, guest, seconds = boot(image, tmp_path / "boot3.log", key,
                                   [("packages", PACKAGE_STATE)])
    MEASUREMENTS["golem-provider boot 3 (after the reboot)"] = f"{seconds:.0f}s"
    assert guest.get("usr_upper") == persisted_upper, guest
    assert guest.get("version") == NEWER.version, guest
    assert guest.get("marker") == "0.1.6", guest
    assert guest.get("image_version") == UPGRADED.version, guest
    assert "golemwz: grew Golem storage" not in console
    assert_storage_clean(image, read_table(image))
