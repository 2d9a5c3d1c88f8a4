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
import shutil
import socket
import subprocess
import tempfile
import time
import tomllib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
from golemwz.layout import GOLEM_STORAGE_PARTUUID

from boot_test.qemu import (
    BootOptions,
    ConsoleWatcher,
    ProcessConsole,
    check_host,
    qemu_argv,
    stop_process,
    strip_ansi,
    watch_console,
)
from tests.conftest import MEASUREMENTS, BuiltImage

pytestmark = [pytest.mark.root, pytest.mark.boot]

STORAGE_PARTUUID = GOLEM_STORAGE_PARTUUID  # disk/layout.toml gives it to the image
STORAGE_DIR = "golem-gpu-live"  # the wizard's directory on storage, bound onto ~/.local
SAVED_ON_CONF = "/run/golemwz/conf/golemwz-saved.toml"
GROWTH = 2**30
WIZARD_FAILED = "golemwz: error: no compatible GPU"
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def power_down(qmp_socket: Path) -> None:
    """The ACPI power button, through QMP: systemd shuts the guest down cleanly."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as qmp:
        qmp.settimeout(30)
        qmp.connect(str(qmp_socket))
        reader = qmp.makefile("rb")
        reader.readline()  # the greeting
        for command in ("qmp_capabilities", "system_powerdown"):
            qmp.sendall(json.dumps({"execute": command}).encode() + b"\n")
            while "return" not in (reply := json.loads(reader.readline())):
                assert "error" not in reply, reply


@dataclass
class Guest:
    """Runs commands in the guest over SSH while draining its serial console."""

    console: ProcessConsole
    log: BinaryIO
    port: int
    key: Path

    def run(self, script: str) -> dict[str, str]:
        argv = ["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR", "golem@127.0.0.1", script]
        for _attempt in range(5):  # sshd may still be generating its host keys
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, text=True)
            while proc.poll() is None:  # a full console pipe would stall the guest
                watch_console(self.console, ConsoleWatcher(None), 1.0, self.log)
            out, err = proc.communicate()
            if proc.returncode != 255:
                break
            watch_console(self.console, ConsoleWatcher(None), 5.0, self.log)  # then again
        assert proc.returncode == 0, f"ssh into the guest: {err.strip()}"
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def boot_until(image: Path, expect: str, log_path: Path, key: Path, guest_script: str) -> Boot:
    """Boot the stick under OVMF until `expect` shows on serial, run `guest_script`
    over SSH, then power off."""
    started = time.monotonic()
    port = free_port()
    with ExitStack() as stack:
        temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="golem-wzboot-")))
        qmp_socket = temp / "qmp.sock"
        # Writable (no snapshot): the second boot must see the first one's writes.
        options = BootOptions(
            image=image, media="usb", firmware="uefi", timeout=BOOT_TIMEOUT, expect=expect,
            log_path=log_path, snapshot=False, extra_args=(
                "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:22",
                "-qmp", f"unix:{qmp_socket},server=on,wait=off"))
        check_host(options)
        vars_copy = temp / "OVMF_VARS.fd"
        shutil.copyfile(options.ovmf_vars, vars_copy)
        argv = qemu_argv(options, vars_copy)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(stop_process, proc)
        console = ProcessConsole(proc)
        guest: dict[str, str] = {}
        shutdown = "not powered off"
        with open(log_path, "wb") as log:
            log.write(f"# {' '.join(argv)}\n".encode())
            outcome = watch_console(console, ConsoleWatcher(expect), options.timeout, log)
            if outcome == "matched":
                guest = Guest(console, log, port, key).run(guest_script)
                power_down(qmp_socket)
                # QEMU exits (EOF on the console) once the guest has powered off.
                shutdown = watch_console(console, ConsoleWatcher(None), POWEROFF_TIMEOUT, log)
        text = strip_ansi(log_path.read_text(errors="replace"))
        assert outcome == "matched", \
            f"{expect!r} never appeared ({outcome}); the console ended with:\n{text[-4000:]}"
        assert shutdown == "exited", f"the guest did not power off; console:\n{text[-3000:]}"
        proc.wait(30)
    return Boot(text, time.monotonic() - started, guest)


# What the guest reports, as key=value lines. First it waits (bounded) for the
# shell of the tty1 login that golemwz.service's OnFailure= starts.
GUEST_STATE = f"""
timeout {GUEST_WAIT_SECONDS} sh -c 'until ps -t tty1 -o user= | grep -qw golem; do sleep 1; done'
echo "tty1=$(ps -t tty1 -o user=,comm= | awk '$1 == "golem" {{print $1 "/" $2; exit}}')"
echo "autologin=$(systemctl is-active golem-autologin.service)"
echo "wizard=$(systemctl is-failed golemwz.service)"
echo "local=$(findmnt --noheadings --output SOURCE --target "$HOME/.local")"
echo "saved_link=$(readlink "$HOME/.golemwz.toml")"
echo "conf_mounted=$(findmnt --noheadings --output TARGET /run/golemwz/conf || true)"
"""


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
    first = boot_until(image, WIZARD_FAILED, tmp_path / "boot1.log", key, GUEST_STATE)
    MEASUREMENTS["wizard boot 1 (USB, OVMF, TCG, power-on to power-off)"] = \
        f"{first.seconds:.0f}s"
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
    second = boot_until(image, WIZARD_FAILED, tmp_path / "boot2.log", key, GUEST_STATE + """
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
    assert second.guest.get("marker") == marker.read_text().strip()
    assert second.guest.get("guest_wrote") == "yes"
    after = read_table(image)
    assert after.partitions["Golem storage"] == storage
    assert_storage_clean(image, after)
    assert {"host-marker.txt", "guest-marker.txt"} <= set(
        storage_listing(image, after, f"/{STORAGE_DIR}"))
    assert conf_files(image, after) == files
