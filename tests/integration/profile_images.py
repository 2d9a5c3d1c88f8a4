"""One build per non-GOLEM profile (session fixtures of its test module) and the boot
those tests share: a copy of the stick with a first-boot golemwz.toml carrying the
test's SSH key, booted under OVMF until the wizard's last screen waits, a guest script
over SSH, a power-off."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from boot_test.qemu import BootOptions
from boot_test.session import booted
from tests.conftest import MEASUREMENTS, BuiltImage, golem_live, require_root
from tests.integration.layers import unsquashfs_cat
from tests.integration.test_wizard_boot import (
    MTOOLS_ENV,
    fat,
    free_port,
    key_values,
    read_table,
    run,
)

BOOT_TIMEOUT = 600.0
# The wizard's last screen then waits on tty1 while the boot goes on.
WIZARD_DONE = "golemwz: the final screen stays on tty1 until a key is pressed"


def build_profile(build_base: Path, profile: str) -> BuiltImage:
    """The profile built once under the session's build base (its own cache)."""
    require_root()
    tmp_dir, work_dir = build_base / profile / "tmp", build_base / profile / "work"
    started = time.monotonic()
    result = golem_live("build", "--profile", profile, "--version", "test", "--tmp-dir",
                        str(tmp_dir), "--work-dir", str(work_dir))
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    built = BuiltImage(tmp_dir, work_dir, "test", result.stderr, seconds)
    MEASUREMENTS[f"{profile} build (cold unless --build-cache)"] = f"{seconds:.1f}s"
    MEASUREMENTS[f"{profile} size {built.img.name}"] = \
        f"{built.img.stat().st_blocks * 512 / 2**20:.0f} MiB allocated"
    return built


def squashfs_of(built: BuiltImage) -> Path:
    """The live/ directory of the build's squashfs stage: both layers."""
    found = sorted(built.tmp_dir.glob("cache/squashfs/*/live/overlay.squashfs"))
    assert found, f"no squashfs under {built.tmp_dir}"
    return max(found, key=lambda path: path.stat().st_mtime).parent


def image_file(live: Path, path: str) -> str:
    """A file as the live system sees it (the top layer holding it)."""
    return unsquashfs_cat(live, path)


# Run before each profile's own script: every profile's boot must reach "running"
# with no failed unit.
SYSTEM_STATE = """
echo "system=$(systemctl is-system-running --wait)"
failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}')
echo "failed=$(echo $failed)"
"""


@dataclass(frozen=True)
class ProfileBoot:
    guest: dict[str, str]
    console: str


def boot_with_first_boot(built: BuiltImage, tmp_path: Path, profile: str, settings: str,
                         guest_script: str, extra_args: tuple[str, ...] = ()) -> ProfileBoot:
    """Boot a copy of the stick with `settings` + this test's SSH key as golemwz.toml,
    run SYSTEM_STATE and `guest_script` over SSH; assert the system is running with
    no failed unit. `extra_args` go to QEMU (a second disk)."""
    key = tmp_path / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{profile}-test", "-f", str(key))
    image = tmp_path / "stick.img"
    run("cp", "--sparse=always", str(built.img), str(image))
    first_boot = tmp_path / "golemwz.toml"
    public_key = key.with_suffix(".pub").read_text().strip()
    first_boot.write_text(f'ssh_keys = ["{public_key}"]\n{settings}')
    run("mcopy", "-i", fat(image, read_table(image)), str(first_boot), "::golemwz.toml",
        env=MTOOLS_ENV)
    options = BootOptions(image=image, media="usb", firmware="uefi", timeout=BOOT_TIMEOUT,
                          log_path=tmp_path / "boot.log", memory_mib=3072,
                          extra_args=extra_args)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{profile}-boot-") as temp, \
            booted(options, Path(temp), tmp_path, ssh_port=free_port(), ssh_key=key) as session:
        ready = session.wait_serial(WIZARD_DONE, BOOT_TIMEOUT)
        guest = key_values(session.ssh(SYSTEM_STATE + guest_script)) if ready else {}
        console = session.serial_text()
        session.power_off(120)
    MEASUREMENTS[f"{profile} boot (USB, OVMF, TCG, to the checks' end)"] = \
        f"{time.monotonic() - started:.0f}s"
    assert ready, f"the wizard never finished; console:\n{console[-4000:]}"
    print("\n".join(f"{k}={v}" for k, v in guest.items()))
    assert guest.get("failed") == "", guest
    assert guest.get("system") == "running", guest
    return ProfileBoot(guest, console)
