"""The non-GOLEM profiles' builds and boots, shared by their test modules.

Every profile builds into one TMP_DIR (its own WORK_DIR): the downloaded packages and
the compiled kernel modules (keyed by kernel and driver versions only) are built once
for all of them. Each test module registers its profile's boot at import time
(`register_boot`); the session fixture `profile_boots` (tests/integration/conftest.py)
builds every registered profile whose boot test is selected and boots them side by
side, one QEMU per core: a copy of the stick with a first-boot golemwz.toml carrying
that boot's SSH key, booted under OVMF until the wizard's last screen waits, a guest
script over SSH, a power-off. Each boot test then takes its profile's result with
`checked_boot`, which re-raises that boot's own failure (the others' tests go on).
"""

from __future__ import annotations

import fnmatch
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from boot_test.parallel import BootGuard, run_side_by_side
from boot_test.qemu import BootOptions
from boot_test.session import booted
from tests.conftest import MEASUREMENTS, BuiltImage, golem_live, require_root
from tests.integration.layers import built_live_dir, unsquashfs_cat
from tests.integration.test_wizard_boot import (
    MTOOLS_ENV,
    conf_files,
    fat,
    free_port,
    key_values,
    read_table,
    run,
)

BOOT_TIMEOUT = 600.0
# A boot past this (the wizard's BOOT_TIMEOUT, then the checks and the power-off) has
# its QEMU stopped, so a hanging boot cannot hold the other forever.
BOOT_DEADLINE = 2 * BOOT_TIMEOUT
# The wizard's last screen then waits on tty1 while the boot goes on.
WIZARD_DONE = "golemwz: the final screen stays on tty1 until a key is pressed"


def shared_tmp_dir(build_base: Path) -> Path:
    return build_base / "profiles" / "tmp"


# (build base, profile) -> the build, or why it failed: a profile is built once per
# session, for its module's fixture and for the boots alike.
_BUILDS: dict[tuple[Path, str], BuiltImage | Exception] = {}


def build_profile(build_base: Path, profile: str) -> BuiltImage:
    """The profile built once under the session's build base, in the shared TMP_DIR."""
    require_root()
    if (build_base, profile) not in _BUILDS:
        try:
            _BUILDS[build_base, profile] = _build(build_base, profile)
        except Exception as err:
            _BUILDS[build_base, profile] = err
    built = _BUILDS[build_base, profile]
    if isinstance(built, Exception):
        raise built
    return built


def _build(build_base: Path, profile: str) -> BuiltImage:
    tmp_dir, work_dir = shared_tmp_dir(build_base), build_base / "profiles" / profile
    earlier = [name for base, name in _BUILDS if base == build_base]
    started = time.monotonic()
    result = golem_live("build", "--profile", profile, "--version", "test", "--tmp-dir",
                        str(tmp_dir), "--work-dir", str(work_dir))
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    built = BuiltImage(tmp_dir, work_dir, "test", result.stderr, seconds)
    cache = f"after {', '.join(earlier)} in its cache" if earlier else \
        "first in the shared cache: cold unless --build-cache"
    MEASUREMENTS[f"{profile} build ({cache})"] = f"{seconds:.1f}s"
    MEASUREMENTS[f"{profile} size {built.img.name}"] = \
        f"{built.img.stat().st_blocks * 512 / 2**20:.0f} MiB allocated"
    return built


def squashfs_of(built: BuiltImage) -> Path:
    """The live/ directory of the build's squashfs stage: both layers."""
    return built_live_dir(built.tmp_dir, built.img)


def image_file(live: Path, path: str) -> str:
    """A file as the live system sees it (the top layer holding it)."""
    return unsquashfs_cat(live, path)


def installed_packages(live: Path) -> set[str]:
    """The names of the packages dpkg has installed in the image."""
    status = image_file(live, "var/lib/dpkg/status")
    return {block.split("\n", 1)[0].removeprefix("Package: ")
            for block in status.split("\n\n") if "Status: install ok installed" in block}


def compiled_modules(installed: set[str]) -> list[str]:
    """The kernel.modules values whose compiled package (NAME-modules-KERNEL_RELEASE, made
    by stages/modules.py) is installed."""
    return sorted(name.split("-modules-")[0] for name in installed
                  if fnmatch.fnmatch(name, "*-modules-*-amd64"))


def shipped_example(usb_image: Path) -> str:
    """golemwz-example.toml as the stick's conf partition holds it."""
    table = read_table(usb_image)
    assert "golemwz-example.toml" in conf_files(usb_image, table)
    shipped = run("mtype", "-i", fat(usb_image, table), "::golemwz-example.toml",
                  env=MTOOLS_ENV)
    return shipped.replace("\r\n", "\n")


# Run before each profile's own script: every profile's boot must reach "running"
# with no failed unit.
SYSTEM_STATE = """
echo "system=$(systemctl is-system-running --wait)"
failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}')
echo "failed=$(echo $failed)"
"""


def no_qemu_args(boot_dir: Path) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class BootSpec:
    """One profile's boot: `settings` (+ the boot's SSH key) as the first-boot
    golemwz.toml, `guest_script` run over SSH after SYSTEM_STATE, and `qemu_args`
    made in the boot's own directory (e.g. a second disk)."""

    profile: str
    module: str  # the test module's __name__: booted only when its boot test is selected
    settings: str
    guest_script: str
    qemu_args: Callable[[Path], tuple[str, ...]] = no_qemu_args


BOOT_SPECS: dict[str, BootSpec] = {}


def register_boot(spec: BootSpec) -> None:
    BOOT_SPECS[spec.profile] = spec


@dataclass(frozen=True)
class ProfileBoot:
    guest: dict[str, str]
    console: str
    ready: bool  # the wizard finished


ProfileBoots = dict[str, ProfileBoot | Exception]


def boot_profiles(specs: Iterable[BootSpec], build_base: Path, boots_dir: Path) -> ProfileBoots:
    """Build each profile (one after the other: a build keeps both cores busy), then boot
    the built ones side by side. A profile's failed build or boot is its result."""
    results: ProfileBoots = {}
    jobs: dict[str, Callable[[BootGuard], ProfileBoot]] = {}
    ports: set[int] = set()
    for spec in specs:
        try:
            built = build_profile(build_base, spec.profile)
        except Exception as err:
            results[spec.profile] = err
            continue
        boot_dir = boots_dir / spec.profile
        boot_dir.mkdir(parents=True)
        jobs[spec.profile] = partial(_boot, spec, built, boot_dir, _unused_port(ports))
    started = time.monotonic()
    results.update(run_side_by_side(jobs, BOOT_DEADLINE))
    if jobs:
        MEASUREMENTS[f"profile boots side by side ({', '.join(jobs)})"] = \
            f"{time.monotonic() - started:.0f}s"
    return results


def _unused_port(taken: set[int]) -> int:
    """A free local port no other boot of this run forwards (they start together)."""
    port = free_port()
    while port in taken:
        port = free_port()
    taken.add(port)
    return port


def _boot(spec: BootSpec, built: BuiltImage, boot_dir: Path, ssh_port: int,
          guard: BootGuard) -> ProfileBoot:
    key = boot_dir / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{spec.profile}-test", "-f",
        str(key))
    image = boot_dir / "stick.img"
    run("cp", "--sparse=always", str(built.img), str(image))
    first_boot = boot_dir / "golemwz.toml"
    public_key = key.with_suffix(".pub").read_text().strip()
    first_boot.write_text(f'ssh_keys = ["{public_key}"]\n{spec.settings}')
    run("mcopy", "-i", fat(image, read_table(image)), str(first_boot), "::golemwz.toml",
        env=MTOOLS_ENV)
    options = BootOptions(image=image, media="usb", firmware="uefi", timeout=BOOT_TIMEOUT,
                          log_path=boot_dir / "boot.log", memory_mib=3072,
                          extra_args=spec.qemu_args(boot_dir))
    started = time.monotonic()
    # The QMP socket's path must stay short (108 bytes): not under pytest's tmp dirs.
    with tempfile.TemporaryDirectory(prefix=f"{spec.profile}-boot-") as temp, \
            booted(options, Path(temp), boot_dir, ssh_port=ssh_port, ssh_key=key) as session:
        guard.watch(session.proc)
        ready = session.wait_serial(WIZARD_DONE, BOOT_TIMEOUT)
        guest = key_values(session.ssh(SYSTEM_STATE + spec.guest_script)) if ready else {}
        console = session.serial_text()
        if session.proc.poll() is None:  # not stopped by the guard
            session.power_off(120)
    MEASUREMENTS[f"{spec.profile} boot (USB, OVMF, TCG, to the checks' end)"] = \
        f"{time.monotonic() - started:.0f}s"
    return ProfileBoot(guest, console, ready)


def checked_boot(boots: ProfileBoots, profile: str) -> ProfileBoot:
    """The profile's boot, its failure raised here; the wizard must have finished and the
    system be running with no failed unit."""
    boot = boots[profile]
    if isinstance(boot, Exception):
        raise boot
    assert boot.ready, f"the wizard never finished; console:\n{boot.console[-4000:]}"
    print("\n".join(f"{k}={v}" for k, v in boot.guest.items()))
    assert boot.guest.get("failed") == "", boot.guest
    assert boot.guest.get("system") == "running", boot.guest
    return boot


# The compiled nvidia module (the proprietary flavour) in a booted driver profile. Debian's
# packaging names the file nvidia-current.ko (internal name nvidia) and loads it with
# `install nvidia modprobe -i nvidia-current` (/etc/nvidia/current/nvidia-modprobe.conf of
# nvidia-kernel-support), so modinfo finds it by the file's name. Loading it by its usual
# name proves it was built for the running kernel (another kernel's module is refused
# before its init runs); without a GPU its init says so.
NVIDIA_MODULE_SCRIPT = """
echo "kernel=$(uname -r)"
echo "nvidia_module=$(/usr/sbin/modinfo -F version nvidia-current)"
echo "nvidia_name=$(/usr/sbin/modinfo -F name nvidia-current)"
echo "nvidia_path=$(/usr/sbin/modinfo -F filename nvidia-current)"
sudo -n /usr/sbin/modprobe nvidia 2>/dev/null
echo "nvidia_loaded=$(sudo -n dmesg | grep -o 'NVRM: No NVIDIA GPU found' | head -n 1)"
"""


def assert_nvidia_module_loads(guest: dict[str, str]) -> None:
    assert guest.get("nvidia_module", "").startswith("550."), guest
    assert guest.get("nvidia_name") == "nvidia", guest
    assert f"/lib/modules/{guest.get('kernel')}/updates/" in guest.get("nvidia_path", ""), guest
    assert guest.get("nvidia_loaded") == "NVRM: No NVIDIA GPU found", guest
