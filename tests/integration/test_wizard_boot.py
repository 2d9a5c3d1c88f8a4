"""The wizard on the real gpu-node USB image, in QEMU (issue 3).

A copy of the built image, 1 GiB larger (as if written to a bigger stick), gets a
first-boot golemwz.toml on `Golem conf storage` (mtools, no mount) with this
test's SSH key. The first boot must read it, configure and grow `Golem storage`,
find no GPU (QEMU has none) and fall back to the tty1 login. Between the boots the
host checks, without mounting, that the partition and its filesystem were grown,
that the wizard's directory is there, that the first-boot file is gone and the
saved one is on the conf partition, and writes a marker into the storage
filesystem. The second boot must read the saved configuration and show the marker.

systemd prints no status line for the tty1 login (it starts after the boot has
finished), so the test logs in over SSH with the key the wizard installed (QEMU
user networking forwards a local port) and asks the guest: golem is logged in on
tty1, golemwz.service failed, ~/.local is storage, ~/.golemwz.toml links to the
conf partition.

The disk is writable (no QEMU snapshot) so the boots see each other's writes; each
boot ends with an ACPI power-off (QMP system_powerdown), so the guest unmounts its
filesystems cleanly and the host reads consistent ones.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from golemwz.layout import GOLEM_STORAGE_PARTUUID

from boot_test.qemu import BootOptions
from boot_test.session import booted
from tests.conftest import MEASUREMENTS, BuiltImage

pytestmark = [pytest.mark.root, pytest.mark.boot]

STORAGE_PARTUUID = GOLEM_STORAGE_PARTUUID  # disk/layout.toml gives it to the image
STORAGE_DIR = "golem-gpu-live"  # the wizard's directory on storage, bound onto ~/.local
SAVED_ON_CONF = "/run/golemwz/conf/golemwz-saved.toml"
GROWTH = 2**30
WIZARD_FAILED = "golemwz: error: no compatible GPU"
# The wizard's final screen then waits on tty1; the tty1 login comes after a key.
WAITING_FOR_KEY = "golemwz: the final screen stays on tty1 until a key is pressed"
# Upper bounds only (TCG on a shared machine); nothing asserts how long a boot took.
BOOT_TIMEOUT = 480.0
POWEROFF_TIMEOUT = 120.0
GUEST_WAIT_SECONDS = 120
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def first_boot_toml(ssh_key: str) -> str:
    return f"""\
# written by tests/integration/test_wizard_boot.py
accepted_terms = true
non_interactive_install = true
storage_partition = "{STORAGE_PARTUUID}"
glm_node_name = "qemu-boot-test"
gpu_pci_slot = "auto"
ssh_keys = ["{ssh_key}"]

[env]
YA_NET_TYPE = "hybrid"
"""


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr.strip()}"
    return result.stdout


# --- the image, inspected from the host without mounting anything -----------------


@dataclass(frozen=True)
class Partition:
    name: str
    start: int  # sectors
    size: int

    def end(self) -> int:
        return self.start + self.size - 1


@dataclass(frozen=True)
class Table:
    last_lba: int
    sector_size: int
    partitions: dict[str, Partition]

    def offset(self, name: str) -> int:
        return self.partitions[name].start * self.sector_size


def read_table(image: Path) -> Table:
    table = json.loads(run("sfdisk", "--json", str(image)))["partitiontable"]
    return Table(
        last_lba=int(table["lastlba"]),
        sector_size=int(table.get("sectorsize", 512)),
        partitions={p["name"]: Partition(p["name"], int(p["start"]), int(p["size"]))
                    for p in table["partitions"]},
    )


def ext4(image: Path, table: Table) -> str:
    """The storage filesystem as e2fsprogs address it: IMAGE?offset=BYTES."""
    return f"{image}?offset={table.offset('Golem storage')}"


def filesystem_bytes(image: Path, table: Table) -> int:
    fields = dict(line.split(":", 1) for line in
                  run("dumpe2fs", "-h", ext4(image, table)).splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def storage_listing(image: Path, table: Table, directory: str) -> list[str]:
    out = run("debugfs", "-R", f"ls -p {directory}", ext4(image, table))
    # -p: /inode/mode/uid/gid/name/size/ per entry
    return [line.split("/")[5] for line in out.splitlines() if line.startswith("/")]


def assert_storage_clean(image: Path, table: Table) -> None:
    result = subprocess.run(["e2fsck", "-f", "-n", ext4(image, table)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def fat(image: Path, table: Table) -> str:
    return f"{image}@@{table.offset('Golem conf storage')}"


def conf_files(image: Path, table: Table) -> list[str]:
    out = run("mdir", "-b", "-i", fat(image, table), "::", env=MTOOLS_ENV)
    return sorted(line.removeprefix("::/").strip() for line in out.splitlines() if line.strip())


# --- booting and asking the guest ----------------------------------------------


@dataclass(frozen=True)
class Boot:
    console: str  # ANSI sequences removed
    seconds: float  # power-on to power-off
    guest: dict[str, str]  # key=value lines printed by the guest script
    final_screen: str  # tty1 (/dev/vcsu1) while the wizard waits for a key
    final_state: dict[str, str]  # the guest's state at that moment (FINAL_STATE)
    after_key: str  # tty1 once the key was pressed and golem logged in


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def key_values(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# While the final screen waits for its key: the VT shown, who holds tty1, whether the
# boot went on, and golem's password hash (to check the password on the screen).
FINAL_STATE = """
echo "active=$(cat /sys/class/tty/tty0/active)"
echo "tty1=$(ps -t tty1 -o comm= | sort -u | tr '\\n' ' ')"
echo "wizard=$(systemctl show -p ActiveState,SubState --value golemwz.service | tr '\\n' /)"
echo "system=$(systemctl is-system-running)"
echo "provider_marker=$(test -e /run/golemwz/provider-configured && echo yes || echo no)"
"""


def boot_until(image: Path, log_path: Path, key: Path, guest_script: str) -> Boot:
    """Boot the stick under OVMF until the wizard's final screen waits for a key on
    tty1, read that screen, press a key (QMP), run `guest_script` over SSH, power off."""
    started = time.monotonic()
    # Writable (no snapshot): the second boot must see the first one's writes.
    options = BootOptions(image=image, media="usb", firmware="uefi", timeout=BOOT_TIMEOUT,
                          log_path=log_path, snapshot=False)
    final, state, after, guest = "", {}, "", {}
    powered_off = False
    with tempfile.TemporaryDirectory(prefix="golem-wzboot-") as temp, \
            booted(options, Path(temp), log_path.parent, ssh_port=free_port(),
                   ssh_key=key) as session:
        waiting = session.wait_serial(WAITING_FOR_KEY, BOOT_TIMEOUT)
        if waiting:
            final = session.vt_text(1)
            state = key_values(session.ssh(FINAL_STATE))
            password = password_on_screen(final)
            if password is not None:
                state.update(key_values(session.ssh(password_check(password))))
            session.read_screen(log_path.stem + "-final")  # OCR too, kept with the logs
            session.keys("ret")
            guest = key_values(session.ssh(guest_script))
            after = session.vt_text(1)
            powered_off = session.power_off(POWEROFF_TIMEOUT)
        text = session.serial_text()
        ocr_text = session.screens.get(log_path.stem + "-final", "")
    assert waiting, \
        f"{WAITING_FOR_KEY!r} never appeared; the console ended with:\n{text[-4000:]}"
    assert powered_off, f"the guest did not power off; console:\n{text[-3000:]}"
    print(f"--- {log_path.stem}: tty1 (/dev/vcsu1) before the key\n{final}\n"
          f"--- {log_path.stem}: the same screen by OCR\n{ocr_text}\n"
          f"--- {log_path.stem}: tty1 after the key\n{after}")
    return Boot(text, time.monotonic() - started, guest, final, state, after)


def password_on_screen(screen: str) -> str | None:
    # The line after the announcement, inside the dialog's frame (│ ... │).
    match = re.search(r"generated at this boot[^\n]*\n[^\n]*?"
                      r"\b([A-Za-z0-9]{4}(?:-[A-Za-z0-9]{4}){2,})\b", screen)
    return match.group(1) if match else None


def password_check(password: str) -> str:
    """Whether `password` is golem's (crypt(3) of it against /etc/shadow, via perl-base)."""
    return f"""hash=$(sudo getent shadow golem | cut -d: -f2)
echo "password_works=$(perl -e 'print crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? "yes" : "no"' \\
    '{password}' "$hash")"
"""


def assert_final_screen_held(boot: Boot, which: str) -> None:
    """The final screen was on the active VT, held by the wizard alone, the boot done."""
    state = boot.final_state
    assert state.get("active") == "tty1", f"{which}: {state}"
    assert state.get("tty1", "").split() == ["golemwz"], f"{which}: only the wizard on tty1: " \
                                                        f"{state}"
    assert state.get("wizard") == "active/running/", f"{which}: READY sent, key awaited: {state}"
    assert state.get("system") in ("running", "degraded"), f"{which}: boot blocked: {state}"
    assert state.get("provider_marker") == "no", f"{which}: {state}"
    screen = boot.final_screen
    for line in ("GOLEM provider wizard: FAILED", "Error: no compatible GPU",
                 "Fix:   install an NVIDIA card", "Node name: qemu-boot-test",
                 "Reach it:  ssh golem@10.0.2.15",
                 "Press any key when you have read this: golem is logged in on tty1"):
        assert line in screen, f"{which}: {line!r} not on tty1:\n{screen}"
    after = boot.after_key
    assert "login: golem (automatic login)" in after, f"{which}: tty1 after the key:\n{after}"
    assert "The GOLEM provider wizard failed at this boot:" in after, after
    assert "no compatible GPU" in after, after
    assert "GOLEM provider wizard: FAILED" not in after  # cleared with its password


# What the guest reports, as key=value lines, once a key was pressed on the final
# screen. First it waits (bounded) for the shell of the tty1 login that
# golemwz.service's OnFailure= then starts.
GUEST_STATE = f"""
timeout {GUEST_WAIT_SECONDS} sh -c 'until ps -t tty1 -o user= | grep -qw golem; do sleep 1; done'
echo "tty1=$(ps -t tty1 -o user=,comm= | awk '$1 == "golem" {{print $1 "/" $2; exit}}')"
echo "autologin=$(systemctl is-active golem-autologin.service)"
echo "wizard=$(systemctl is-failed golemwz.service)"
echo "local=$(findmnt --noheadings --output SOURCE --target "$HOME/.local")"
echo "saved_link=$(readlink "$HOME/.golemwz.toml")"
echo "conf_mounted=$(findmnt --noheadings --output TARGET /run/golemwz/conf || true)"
echo "boot_time=$(systemd-analyze time 2>&1 | head -1)"
echo "wizard_start_us=$(systemctl show -p ExecMainStartTimestampMonotonic --value golemwz.service)"
echo "slowest_units=$(systemd-analyze blame --no-pager 2>&1 | head -6 | awk '{{$1=$1}};1' \\
    | tr '\\n' ';')"
"""


def record_boot_time(guest: dict[str, str], which: str) -> None:
    """Where a boot's time went (issue 12's boot analysis; measurements only): the
    kernel/initrd/userspace split, when the wizard's first screen came up, the slowest
    units."""
    start = guest.get("wizard_start_us", "")
    MEASUREMENTS[f"{which}: systemd-analyze time"] = guest.get("boot_time", "?")
    MEASUREMENTS[f"{which}: golemwz started after kernel start"] = \
        f"{int(start) / 1e6:.1f}s" if start.isdigit() else "?"
    MEASUREMENTS[f"{which}: slowest units"] = guest.get("slowest_units", "?")


def assert_fallback_and_storage(boot: Boot, which: str) -> None:
    guest = boot.guest
    # A login shell of golem on tty1 (no `who`: the image has no pam_systemd sessions).
    assert guest.get("tty1") == "golem/bash", f"{which}: golem not logged in on tty1: {guest}"
    assert guest.get("autologin") == "active", f"{which}: {guest}"
    assert guest.get("wizard") == "failed", f"{which}: {guest}"
    assert guest.get("local", "").endswith(f"[/{STORAGE_DIR}]"), f"{which}: {guest}"
    assert guest.get("saved_link") == SAVED_ON_CONF, f"{which}: {guest}"
    assert guest.get("conf_mounted") == "", f"{which}: conf left mounted: {guest}"


def expect_lines(boot: Boot, which: str, lines: list[str]) -> None:
    for line in lines:
        assert line in boot.console, f"{which}: {line!r} not on the serial console"


# --- the test -------------------------------------------------------------------


def test_first_boot_configuration_grown_storage_and_a_reboot(
        gpu_node_image: BuiltImage, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wizard-boot-test", "-f", str(key))
    public_key = key.with_suffix(".pub").read_text().strip()
    image = tmp_path / "stick.img"
    run("cp", "--sparse=always", str(gpu_node_image.img), str(image))
    built = read_table(image)
    built_fs_bytes = filesystem_bytes(image, built)
    os.truncate(image, image.stat().st_size + GROWTH)  # a larger stick
    first_boot = tmp_path / "golemwz.toml"
    first_boot.write_text(first_boot_toml(public_key))
    run("mcopy", "-i", fat(image, built), str(first_boot), "::golemwz.toml", env=MTOOLS_ENV)
    assert "golemwz.toml" in conf_files(image, built)

    # First boot: the first-boot file is read, storage grown, no GPU, tty1 login.
    first = boot_until(image, tmp_path / "boot1.log", key, GUEST_STATE)
    MEASUREMENTS["wizard boot 1 (USB, OVMF, TCG, power-on to power-off)"] = \
        f"{first.seconds:.0f}s"
    record_boot_time(first.guest, "wizard boot 1")
    expect_lines(first, "boot 1", [
        "golemwz: read first-boot configuration golemwz.toml from Golem conf storage",
        "golemwz: terms of use accepted",
        "golemwz: grew Golem storage",
        "golemwz: storage configured",
        "golemwz: generated a password for golem",
        "golemwz: SSH keys: 1 added",
        "golemwz: network is up",
        "golemwz: no compatible GPU: this machine has no NVIDIA GPU",
        f"golemwz: configuration saved to {SAVED_ON_CONF}",
        "golemwz: first-boot golemwz.toml deleted",
        "Stopped golem-autologin.service",  # at power-off: it was running
    ])
    assert_fallback_and_storage(first, "boot 1")
    # The unattended run's final screen (issue 8): on the active VT after the wizard
    # ended its work, with the password of this boot, which is golem's.
    assert_final_screen_held(first, "boot 1")
    assert password_on_screen(first.final_screen), first.final_screen
    assert first.final_state.get("password_works") == "yes", first.final_state
    assert password_on_screen(first.final_screen) not in first.after_key

    # Between the boots, from the host: grown partition and filesystem, the wizard's
    # directory, the conf partition's files.
    grown = read_table(image)
    storage = grown.partitions["Golem storage"]
    alignment = 2**20 // grown.sector_size
    assert grown.last_lba == image.stat().st_size // grown.sector_size - 34  # backup GPT moved
    assert grown.last_lba - storage.end() < alignment  # up to the end of the disk
    assert (storage.size - built.partitions["Golem storage"].size) * grown.sector_size \
        > GROWTH * 9 // 10
    assert filesystem_bytes(image, grown) > built_fs_bytes + GROWTH * 9 // 10
    assert_storage_clean(image, grown)
    assert STORAGE_DIR in storage_listing(image, grown, "/")
    files = conf_files(image, grown)
    assert "golemwz.toml" not in files and "golemwz-saved.toml" in files, files
    assert "golemwz-password.hash" in files, files  # the hash only, for the next boot
    saved = tomllib.loads(run("mtype", "-i", fat(image, grown), "::golemwz-saved.toml",
                              env=MTOOLS_ENV))
    assert saved["storage_partition"] == STORAGE_PARTUUID and saved["accepted_terms"] is True
    assert saved["ssh_keys"] == [public_key] and saved["env"] == {"YA_NET_TYPE": "hybrid"}
    marker = tmp_path / "marker.txt"
    marker.write_text("written by the host between the boots\n")
    run("debugfs", "-w", "-R", f"write {marker} /{STORAGE_DIR}/host-marker.txt",
        ext4(image, grown))

    # Second boot: the saved configuration, storage as it was, the marker there.
    second = boot_until(image, tmp_path / "boot2.log", key, GUEST_STATE + """
echo "marker=$(cat "$HOME/.local/host-marker.txt")"
echo "written by the guest" > "$HOME/.local/guest-marker.txt" && echo guest_wrote=yes
""")
    MEASUREMENTS["wizard boot 2 (USB, OVMF, TCG, power-on to power-off)"] = \
        f"{second.seconds:.0f}s"
    expect_lines(second, "boot 2", [
        f"golemwz: read saved configuration {SAVED_ON_CONF}",
        "already reaches the end of /dev/",
        "golemwz: storage configured",
        "golemwz: password restored from Golem conf storage",
        "golemwz: SSH keys: 1 added",
        "golemwz: no compatible GPU",
        "Stopped golem-autologin.service",
    ])
    assert "read first-boot configuration" not in second.console
    assert "grew Golem storage" not in second.console
    assert "generated a password" not in second.console  # the same password as before
    assert_fallback_and_storage(second, "boot 2")
    assert_final_screen_held(second, "boot 2")
    assert password_on_screen(second.final_screen) is None  # restored, not shown again
    assert "Password of user 'golem': the one shown at an earlier boot." in second.final_screen
    assert second.guest.get("marker") == marker.read_text().strip()
    assert second.guest.get("guest_wrote") == "yes"
    after = read_table(image)
    assert after.partitions["Golem storage"] == storage
    assert_storage_clean(image, after)
    assert {"host-marker.txt", "guest-marker.txt"} <= set(
        storage_listing(image, after, f"/{STORAGE_DIR}"))
    assert conf_files(image, after) == files
