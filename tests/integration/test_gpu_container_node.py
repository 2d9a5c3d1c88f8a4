"""gpu-container-node end to end: the NVIDIA module compiled once by modules-nvidia-open
and installed without compiler, headers or DKMS; the extra APT repository (the container
toolkit's stand-in, a signed repository served on 127.0.0.1) installed with Signed-By;
and a second profile with the same kernel and driver that compiles nothing; a QEMU boot of
the USB image: multi-user with no failed units, `modinfo nvidia` for the running kernel,
Podman running an image made with `podman import`.

One build (in the session's build cache, beside gpu-node's: the bootstrap is shared);
the NVIDIA compile (~4 min) happens at most once per run. The test profile adds SSH access
for the boot (a key for the image's user and sudo), which the shipped profile leaves to the
shared first-boot overlay.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from apt_repo.archive import ArchiveSpec, build_archive
from apt_repo.keys import discard_home, ephemeral_home, ephemeral_key
from boot_test.qemu import BootOptions, image_path
from boot_test.session import booted
from builder.config import make_config
from builder.pipeline import Plan, make_plan
from builder.runner import SubprocessRunner
from stages.catalog import stage_list
from tests.apt_repo.conftest import _serve, make_deb
from tests.conftest import MEASUREMENTS, PROJECT_ROOT, golem_live, require_root
from tests.integration.test_wizard_boot import free_port, key_values

pytestmark = pytest.mark.root
BOOT_TIMEOUT = 480.0

SOURCE_DATE_EPOCH = 1764633600
PROFILE = "gpu-container-test"
NVIDIA_CTK = "#!/bin/sh\necho 'nvidia-ctk stand-in' \"$@\"\n"
COMPILER_PACKAGES = re.compile(r"^(gcc(-\d+)?|cpp(-\d+)?|make|dkms|.*-dkms|linux-headers-.*"
                               r"|linux-kbuild-.*)$")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class ContainerNodeBuild:
    project: Path
    tmp_dir: Path
    work_dir: Path
    output: str
    keyring: Path
    ssh_key: Path

    def plan(self, profile: str = PROFILE, project: Path | None = None) -> Plan:
        config = make_config(project or self.project, profile, "test", self.tmp_dir,
                             self.work_dir, source_date_epoch=SOURCE_DATE_EPOCH)
        return make_plan(config, stage_list(config), offline=True)

    def entry(self, stage: str) -> Path:
        step = self.plan().step(stage)
        return step.cache.entry(step.key)


@pytest.fixture(scope="module")
def container_node(build_base: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[ContainerNodeBuild]:
    """A profile extending gpu-container-node whose extra repository is a signed test
    repository on 127.0.0.1 with a fake nvidia-container-toolkit, built to squashfs."""
    require_root()
    base = tmp_path_factory.mktemp("container-node")
    debs = base / "debs"
    debs.mkdir()
    make_deb(debs, "nvidia-container-toolkit", "1.17.8-1", "amd64",
             files={"usr/bin/nvidia-ctk": NVIDIA_CTK}, executables=("usr/bin/nvidia-ctk",))
    project = base / "project"
    shutil.copytree(PROJECT_ROOT / "rootfs", project / "rootfs")
    home = ephemeral_home(base / "gnupg")
    key = ephemeral_key(home)
    runner = SubprocessRunner(base / "repo.log")
    keyring = project / "keys/fake-nvidia.gpg"
    keyring.parent.mkdir(parents=True)
    spec = ArchiveSpec(date=SOURCE_DATE_EPOCH, valid_days=None, codename="stable",
                       suite="stable", origin="fake-nvidia", label="fake-nvidia",
                       description="stand-in for NVIDIA's container toolkit repository")
    build_archive(runner, sorted(debs.glob("*.deb")), base / "repo", spec, key, keyring)
    discard_home(runner, home)
    ssh_key = base / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "container-boot",
                    "-f", str(ssh_key)], check=True)
    access = project / "rootfs/overlay/container-test-access"
    (access / "home/golem/.ssh").mkdir(parents=True)
    shutil.copyfile(ssh_key.with_suffix(".pub"), access / "home/golem/.ssh/authorized_keys")
    (access / "etc/sudoers.d").mkdir(parents=True)
    (access / "etc/sudoers.d/container-test").write_text("golem ALL=(ALL) NOPASSWD: ALL\n")
    for server in _serve(partial(_Quiet, directory=str(base / "repo"))):
        url = f"http://127.0.0.1:{server.server_address[1]}"
        (project / f"rootfs/profiles/{PROFILE}.toml").write_text(
            f'extends = "gpu-container-node"\n[extra_apt]\nurl = "{url}"\nsuite = "stable"\n'
            'components = ["main"]\nkeyring = "keys/fake-nvidia.gpg"\n'
            '[image]\nuser = "golem"\noverlays = ["container-test-access"]\n')
        tmp_dir, work_dir = build_base / "tmp", build_base / "container-work"
        started = time.monotonic()
        result = golem_live("build", "--profile", PROFILE, "--version", "test",
                            "--tmp-dir", str(tmp_dir), "--work-dir", str(work_dir),
                            "--project-root", str(project), "--until", "usb",
                            "--source-date-epoch", str(SOURCE_DATE_EPOCH))
        MEASUREMENTS["gpu-container-node build to usb (as found)"] = \
            f"{time.monotonic() - started:.1f}s"
        assert result.returncode == 0, result.stderr[-3000:]
        yield ContainerNodeBuild(project, tmp_dir, work_dir, result.stderr, keyring, ssh_key)


def test_the_image_has_the_nvidia_modules_for_its_kernel_and_no_compiler(
        container_node: ContainerNodeBuild) -> None:
    modules = container_node.entry("modules-nvidia-open")
    info = (modules / "module.json").read_text()
    release = re.search(r'"kernel-release": "([^"]+)"', info).group(1)  # type: ignore[union-attr]
    root = container_node.entry("packages") / "rootfs"
    assert [p.name for p in (root / "usr/lib/modules").iterdir()] == [release]
    modinfo = subprocess.run(["modinfo", "-b", str(root), "-k", release, "nvidia"],
                             capture_output=True, text=True, check=True).stdout
    assert re.search(rf"^filename:\s+/lib/modules/{re.escape(release)}/updates/nvidia-open/"
                     r"nvidia\.ko", modinfo, re.MULTILINE), modinfo
    assert re.search(rf"^vermagic:\s+{re.escape(release)} ", modinfo, re.MULTILINE), modinfo
    assert "updates/nvidia-open/nvidia-uvm.ko" in \
        (root / f"usr/lib/modules/{release}/modules.dep").read_text()
    installed = [line.split("\t")[0] for line in
                 (container_node.entry("packages") / "packages.txt").read_text().splitlines()]
    assert f"nvidia-open-modules-{release}" in installed
    assert {"nvidia-smi", "libcuda1", "podman", "crun", "nvidia-modprobe"} <= set(installed)
    assert not [p for p in installed if COMPILER_PACKAGES.match(p)]
    assert not (root / "usr/bin/gcc").exists() and not (root / "usr/sbin/dkms").exists()
    assert not list((root / "usr/src").glob("linux-headers-*"))
    squashfs = container_node.entry("squashfs") / "live/filesystem.squashfs"
    listing = subprocess.run(["unsquashfs", "-l", str(squashfs)], capture_output=True,
                             text=True, check=True).stdout
    assert f"usr/lib/modules/{release}/updates/nvidia-open/nvidia.ko" in listing
    MEASUREMENTS["gpu-container-node filesystem.squashfs"] = \
        f"{squashfs.stat().st_size / 2**20:.1f} MiB"


def test_the_extra_repository_is_installed_with_signed_by(
        container_node: ContainerNodeBuild) -> None:
    root = container_node.entry("packages") / "rootfs"
    assert (root / "usr/bin/nvidia-ctk").read_text() == NVIDIA_CTK
    sources = (root / "etc/apt/sources.list.d/extra.sources").read_text()
    assert "Signed-By: /etc/apt/keyrings/extra-apt.gpg" in sources
    assert "Suites: stable\nComponents: main\n" in sources
    assert (root / "etc/apt/keyrings/extra-apt.gpg").read_bytes() == \
        container_node.keyring.read_bytes()
    assert "not configured" not in container_node.output
    overlay = container_node.entry("overlay") / "rootfs"
    wants = overlay / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "nvidia-cdi-generate.service").is_symlink()
    assert not (wants / "cuda-vector-add.service").exists()
    assert (overlay / "etc/systemd/system/cuda-vector-add.service").is_file()
    assert "blacklist nouveau" in \
        (overlay / "etc/modprobe.d/nouveau-blacklist.conf").read_text()


def test_another_profile_with_the_same_kernel_and_driver_compiles_nothing(
        container_node: ContainerNodeBuild) -> None:
    log = container_node.tmp_dir / "logs/modules-nvidia-open.log"
    before = log.stat().st_mtime_ns
    # gpu-container-node itself (toolkit not configured): a different packages stage,
    # the same compiled modules.
    result = golem_live("build", "--profile", "gpu-container-node", "--version", "test",
                        "--tmp-dir", str(container_node.tmp_dir), "--work-dir",
                        str(container_node.work_dir), "--until", "modules-nvidia-open",
                        "--source-date-epoch", str(SOURCE_DATE_EPOCH))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[modules-nvidia-open] cached" in result.stderr
    assert "dkms" not in result.stderr and "gcc" not in result.stderr
    assert log.stat().st_mtime_ns == before
    other = container_node.plan("gpu-container-node", PROJECT_ROOT)
    assert other.step("modules-nvidia-open").key == \
        container_node.plan().step("modules-nvidia-open").key
    assert other.step("packages").key != container_node.plan().step("packages").key


GUEST = """
echo "system=$(systemctl is-system-running --wait)"
echo "failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | tr '\\n' ' ')"
echo "kernel=$(uname -r)"
echo "filename=$(/usr/sbin/modinfo -F filename nvidia)"
echo "vermagic=$(/usr/sbin/modinfo -F vermagic nvidia)"
echo "compiler=$(command -v gcc cc dkms | tr '\\n' ' ')"
echo "cdi=$(systemctl is-enabled nvidia-cdi-generate.service)/$(systemctl show -p ActiveState \\
    --value nvidia-cdi-generate.service)"
cd / && sudo -n tar -cf /tmp/rootfs.tar bin lib lib64 usr/bin/echo \
    usr/lib/x86_64-linux-gnu/libc.so.6 usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
    usr/lib64/ld-linux-x86-64.so.2
sudo -n podman --storage-driver=vfs import /tmp/rootfs.tar localhost/node-rootfs >/dev/null
echo "podman=$(sudo -n podman --storage-driver=vfs run --rm --network=none \
    localhost/node-rootfs /usr/bin/echo podman-ok 2>&1 | tr '\\n' ' ')"
echo "runtime=$(sudo -n podman --storage-driver=vfs info --format '{{.Host.OCIRuntime.Name}}')"
"""


@pytest.mark.boot
def test_the_image_boots_with_the_module_for_its_kernel_and_podman_works(
        container_node: ContainerNodeBuild) -> None:
    image = image_path(container_node.work_dir, "test", "usb")
    log_path = container_node.work_dir / "container-node-boot.log"
    options = BootOptions(image=image, media="usb", firmware="uefi", timeout=BOOT_TIMEOUT,
                          log_path=log_path)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="container-boot-") as temp, \
            booted(options, Path(temp), log_path.parent, ssh_port=free_port(),
                   ssh_key=container_node.ssh_key) as session:
        reached = session.wait_serial("login:", BOOT_TIMEOUT)
        guest = key_values(session.ssh(GUEST)) if reached else {}
        session.power_off(120)
        text = session.serial_text()
    MEASUREMENTS["gpu-container-node boot and checks"] = f"{time.monotonic() - started:.1f}s"
    assert reached, f"no login prompt; the console ended with:\n{text[-3000:]}"
    assert guest["failed"].strip() == "", guest
    assert guest["system"] == "running", guest
    release = guest["kernel"]
    assert guest["filename"].startswith(f"/lib/modules/{release}/updates/nvidia-open/"), guest
    assert guest["vermagic"].startswith(release + " "), guest
    assert guest["compiler"].strip() == "", guest
    # enabled, and skipped (not failed) without an NVIDIA GPU, like nvidia-persistenced
    assert guest["cdi"] == "enabled/inactive", guest
    assert guest["podman"].strip() == "podman-ok", guest
    assert guest["runtime"] == "crun", guest
