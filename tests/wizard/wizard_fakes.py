"""Fakes for the wizard's tests: sysfs trees, a recording runner, a scripted UI."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from golemwz.errors import CommandFailed
from golemwz.layout import CONF_PARTUUID, GOLEM_STORAGE_PARTUUID, SystemLayout
from golemwz.report import Reporter
from golemwz.runner import CommandResult


class FakeSysfs:
    """A sysfs tree with the links the kernel makes: driver, iommu_group, group members."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "bus/pci/devices").mkdir(parents=True, exist_ok=True)

    def with_iommu(self) -> FakeSysfs:
        (self.root / "kernel/iommu_groups").mkdir(parents=True, exist_ok=True)
        return self

    def add(self, slot: str, *, vendor: int = 0x10DE, device: int = 0x2684,
            cls: int = 0x030000, group: int | None = None, driver: str | None = None,
            bridge: bool = False, boot_vga: bool | None = None,
            consumers: Sequence[str] = (), header_type: int | None = None) -> Path:
        real = self.root / "devices" / f"pci{slot[:-8]}" / slot
        real.mkdir(parents=True)
        (real / "class").write_text(f"0x{cls:06x}\n")
        (real / "vendor").write_text(f"0x{vendor:04x}\n")
        (real / "device").write_text(f"0x{device:04x}\n")
        if bridge:
            (real / "pci_bus").mkdir()
        if header_type is not None:  # the config space's first 64 bytes, type at 0x0e
            (real / "config").write_bytes(bytes(0x0E) + bytes([header_type]) + bytes(49))
        if boot_vga is not None:
            (real / "boot_vga").write_text("1\n" if boot_vga else "0\n")
        for consumer in consumers:
            (real / f"consumer:pci:{consumer}").mkdir()
        (self.root / "bus/pci/devices" / slot).symlink_to(real)
        if driver:
            self.set_driver(slot, driver)
        if group is not None:
            members = self.root / "kernel/iommu_groups" / str(group) / "devices"
            members.mkdir(parents=True, exist_ok=True)
            (members / slot).symlink_to(real)
            (real / "iommu_group").symlink_to(self.root / "kernel/iommu_groups" / str(group))
        return real

    def set_driver(self, slot: str, driver: str) -> None:
        driver_dir = self.root / "bus/pci/drivers" / driver
        driver_dir.mkdir(parents=True, exist_ok=True)
        link = self.root / "bus/pci/devices" / slot / "driver"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(driver_dir)

    def add_rtx_card(self, bus: str = "01", group: int = 1, domain: str = "0000") -> list[str]:
        """A consumer card with VGA, audio, USB and UCSI functions."""
        base = f"{domain}:{bus}:00"
        self.add(f"{base}.0", cls=0x030000, group=group, driver="nouveau", boot_vga=False,
                 consumers=[f"{base}.1"])
        self.add(f"{base}.1", device=0x10FA, cls=0x040300, group=group, driver="snd_hda_intel")
        self.add(f"{base}.2", device=0x1AD8, cls=0x0C0330, group=group, driver="xhci_hcd")
        self.add(f"{base}.3", device=0x1AD9, cls=0x0C8000, group=group, driver="nvidia-gpu")
        return [f"{base}.{f}" for f in range(4)]


class KernelStandIn:
    """A sysfs writer that does what the kernel would: probing binds vfio-pci."""

    def __init__(self, sysfs: FakeSysfs, dev_root: Path) -> None:
        self.sysfs = sysfs
        self.dev_root = dev_root
        self.writes: list[tuple[str, str]] = []

    def __call__(self, path: Path, value: str) -> None:
        self.writes.append((str(path.relative_to(self.sysfs.root)), value))
        if path.name == "drivers_probe":
            override = self.sysfs.root / "bus/pci/devices" / value / "driver_override"
            self.sysfs.set_driver(value, override.read_text())
            group = os.path.basename(os.readlink(self.sysfs.root / "bus/pci/devices" / value /
                                                 "iommu_group"))
            (self.dev_root / "vfio").mkdir(parents=True, exist_ok=True)
            (self.dev_root / "vfio" / group).touch()
        elif path.name in ("driver_override",):
            path.write_text(value)


@dataclass
class Call:
    argv: tuple[str, ...]
    input: bytes | None
    env: dict[str, str] | None


@dataclass
class RecordingRunner:
    """Records argv; answers by the longest matching argv prefix: (returncode, stdout)."""

    responses: dict[tuple[str, ...], tuple[int, str]] = field(default_factory=dict)
    side_effects: dict[tuple[str, ...], Callable[[tuple[str, ...]], None]] = field(
        default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            env: Mapping[str, str] | None = None, check: bool = True) -> CommandResult:
        args = tuple(argv)
        self.calls.append(Call(args, input, dict(env) if env else None))
        for prefix in sorted(self.side_effects, key=len, reverse=True):
            if args[:len(prefix)] == prefix:
                self.side_effects[prefix](args)
                break
        code, out = 0, ""
        for prefix in sorted(self.responses, key=len, reverse=True):
            if args[:len(prefix)] == prefix:
                code, out = self.responses[prefix]
                break
        if check and code != 0:
            raise CommandFailed(args, code, out)
        return CommandResult(args, code, out)

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [c.argv for c in self.calls]

    def matching(self, *prefix: str) -> list[tuple[str, ...]]:
        return [a for a in self.argvs if a[:len(prefix)] == prefix]


class ScriptedUI:
    """Answers questions from a script; any question beyond it fails the test."""

    def __init__(self, answers: Sequence[object] = ()) -> None:
        self.answers = list(answers)
        self.shown: list[tuple[str, str, str]] = []  # (kind, title, text)

    def _answer(self, kind: str, title: str, text: str) -> object:
        self.shown.append((kind, title, text))
        if not self.answers:
            raise AssertionError(f"unexpected question {kind} '{title}': {text}")
        return self.answers.pop(0)

    def info(self, title: str, text: str) -> None:
        self.shown.append(("info", title, text))

    def message(self, title: str, text: str) -> None:
        self.shown.append(("message", title, text))

    def confirm(self, title: str, text: str) -> bool:
        return bool(self._answer("confirm", title, text))

    def ask_text(self, title: str, text: str, default: str = "") -> str | None:
        answer = self._answer("ask_text", title, text)
        return None if answer is None else str(answer)

    def choose_one(self, title: str, text: str, choices: Sequence[tuple[str, str]]) -> str | None:
        answer = self._answer("choose_one", title, text)
        return None if answer is None else str(answer)

    def choose_many(self, title: str, text: str,
                    choices: Sequence[tuple[str, str, bool]]) -> list[str] | None:
        answer = self._answer("choose_many", title, text)
        return None if answer is None else list(answer)  # type: ignore[call-overload]

    def progress(self, title: str, text: str, percent: int) -> None:
        self.shown.append(("progress", title, f"{percent}"))

    def texts(self, kind: str) -> list[str]:
        return [text for shown_kind, _title, text in self.shown if shown_kind == kind]


class FakeScreen:
    """The boot VT: records notifications and waits; key presses come from a script."""

    def __init__(self, presses: Sequence[bool] = (), *, holds: bool = True,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.holds = holds
        self.name = "tty1"
        self.presses = list(presses)
        self.events: list[str] = []  # "notify READY=1...", "wait 180", "clear"
        self.on_event = on_event

    def _record(self, event: str) -> None:
        self.events.append(event)
        if self.on_event:
            self.on_event(event)

    def wait_for_key(self, timeout: float | None, on_waiting: Callable[[], None]) -> bool:
        self._record(f"wait {timeout}")
        on_waiting()
        return self.presses.pop(0) if self.presses else True

    def clear(self) -> None:
        self._record("clear")

    def notify(self, state: str) -> None:
        self._record(f"notify {state}")


def quiet_reporter(log_path: Path | None = None, console: Path | None = None) -> Reporter:
    return Reporter(log_path, console_path=console, stream=io.StringIO())


def lsblk_json(*partitions: dict[str, object]) -> str:
    disk = {"name": "sda", "path": "/dev/sda", "type": "disk", "pkname": None, "fstype": None,
            "label": None, "partlabel": None, "partuuid": None, "mountpoint": None,
            "size": 64 * 2**30}
    return json.dumps({"blockdevices": [disk, *partitions]})


def partition(number: int, partlabel: str | None, fstype: str | None, partuuid: str,
              mountpoint: str | None = None, label: str | None = None,
              disk: str = "sda") -> dict[str, object]:
    return {"name": f"{disk}{number}", "path": f"/dev/{disk}{number}", "type": "part",
            "pkname": disk, "fstype": fstype, "label": label, "partlabel": partlabel,
            "partuuid": partuuid, "mountpoint": mountpoint, "size": 2 * 2**30}


def image_partitions(storage_mountpoint: str | None = None) -> list[dict[str, object]]:
    """The USB image's five partitions, as lsblk shows them."""
    return [
        partition(1, "EFI System", "vfat", "11111111-0000-0000-0000-000000000001"),
        partition(2, "BIOS boot partition", None, "11111111-0000-0000-0000-000000000002"),
        # The PARTUUID GOLEM's imager looks for (golem-gpu-imager src/disk.rs).
        partition(3, "Golem conf storage", "vfat", CONF_PARTUUID),
        partition(4, "Golem root filesystem", "ext4", "11111111-0000-0000-0000-000000000004",
                  mountpoint="/"),
        partition(5, "Golem storage", "ext4", GOLEM_STORAGE_PARTUUID,
                  mountpoint=storage_mountpoint),
    ]


SECTOR = 512
IMAGE_SECTORS = 8 * 2**30 // SECTOR  # the image as built: 8 GiB


def sfdisk_json(storage_size: int, last_lba: int = IMAGE_SECTORS - 34) -> str:
    starts = [2048, 4096, 6144, 530432, 8 * 2**20]
    sizes = [2048, 2048, 524288, 7 * 2**20, storage_size]
    uuids = [f"11111111-0000-0000-0000-00000000000{n}" for n in range(1, 5)]
    uuids.append(GOLEM_STORAGE_PARTUUID.upper())
    return json.dumps({"partitiontable": {
        "label": "gpt", "device": "/dev/sda", "unit": "sectors", "firstlba": 34,
        "lastlba": last_lba, "sectorsize": SECTOR,
        "partitions": [{"node": f"/dev/sda{n + 1}", "start": starts[n], "size": sizes[n],
                        "uuid": uuids[n]} for n in range(5)]}})


PASSWORD = "abcd-efgh-ijkm-npqr"
# What the fake chpasswd writes to the fake /etc/shadow for PASSWORD (yescrypt form).
PASSWORD_HASH = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
NO_PASSWORD_SHADOW = "root:*:19000:0:99999:7:::\ngolem:!:19000:0:99999:7:::\n"
ACCOUNT = "0x" + "ab" * 20
RUNTIME_JSON = [{
    "name": "vm-nvidia",
    "version": "0.4.0",
    "supervisor-path": "exe-unit",
    "runtime-path": "ya-runtime-vm-nvidia/ya-runtime-vm-nvidia",
    "description": "vm runtime with NVIDIA GPU passthrough",
    "extra-args": ["--cap-handoff", "--runtime-arg=--pci-device=0000:09:00.0"],
}]
# The other runtimes GOLEM's packages install next to it (tests/golem_fakes.py:
# ya-runtime-vm and ya-runtime-wasi-cli), paths relative to the JSON's directory.
OTHER_RUNTIME_JSONS = {
    "ya-runtime-vm.json": [{"name": "vm", "version": "0.4.2", "supervisor-path": "exe-unit",
                            "runtime-path": "ya-runtime-vm/ya-runtime-vm",
                            "description": "vm runtime", "extra-args": ["--cap-handoff"]}],
    "ya-runtime-wasi.json": [{"name": "wasmtime", "version": "0.2.4",
                              "supervisor-path": "exe-unit",
                              "runtime-path": "ya-runtime-wasi/ya-runtime-wasi",
                              "description": "wasi runtime",
                              "extra-args": ["--cap-handoff"]}],
}
# ya-installer-resources' manifest bundle (tests/golem_fakes.py ya_installer_resources).
MANIFEST_BUNDLE = {
    "whitelist/strict.lst": "crates.io\n",
    "whitelist/regex.lst": ".*\\.dev\\.golem\\.network\n",
    "certs/golem-audited.crt": "-----BEGIN CERTIFICATE-----\n",
    "golem-certs/golem-partner.crt": "-----BEGIN CERTIFICATE-----\n",
}


def install_golem_files(layout: SystemLayout) -> None:
    """What golem-provider, the runtimes and ya-installer-resources put on the image."""
    layout.yagna_plugins_dir.mkdir(parents=True, exist_ok=True)
    (layout.yagna_plugins_dir / "ya-runtime-vm-nvidia.json").write_text(
        json.dumps(RUNTIME_JSON))
    for name, runtimes in OTHER_RUNTIME_JSONS.items():
        (layout.yagna_plugins_dir / name).write_text(json.dumps(runtimes))
    for relative, text in MANIFEST_BUNDLE.items():
        path = layout.installer_resources_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


class FakeMachine:
    """A whole machine under a temporary directory, as the wizard sees it."""

    def __init__(self, root: Path, *, golem: bool = True, gpu: bool = True,
                 boot_vga: bool = False, uefi: bool = True) -> None:
        self.root = root
        self.layout = SystemLayout.under(root)
        self.sysfs = FakeSysfs(self.layout.sysfs_root).with_iommu()
        self.sysfs.add("0000:00:01.0", vendor=0x8086, cls=0x060400, group=1, bridge=True,
                       driver="pcieport")
        if gpu:
            self.sysfs.add_rtx_card(group=1)
            if boot_vga:
                (self.sysfs.root / "bus/pci/devices/0000:01:00.0/boot_vga").write_text("1\n")
        if uefi:  # the kernel makes /sys/firmware/efi on a UEFI boot only
            (self.layout.sysfs_root / "firmware/efi").mkdir(parents=True)
        size_file = self.layout.sysfs_root / "class/block/sda/size"
        size_file.parent.mkdir(parents=True)
        size_file.write_text(f"{32 * 2**30 // 512}\n")
        self.layout.golem_home.mkdir(parents=True)
        self.layout.shadow_file.parent.mkdir(parents=True)
        self.layout.shadow_file.write_text(NO_PASSWORD_SHADOW)
        self.layout.hostname_file.write_text("golem-gpu-live\n")
        if golem:
            bin_dir = self.layout.bin_dirs[1]
            bin_dir.mkdir(parents=True)
            (bin_dir / "golemsp").write_text("#!/bin/sh\n")
            install_golem_files(self.layout)
        self.console = root / "console"
        self.kernel = KernelStandIn(self.sysfs, self.layout.dev_root)
        storage_sectors = 8 * 2**30 // 512 - 8 * 2**20 - 2048 - 34
        self.runner = RecordingRunner(responses={
            ("lsblk",): (0, lsblk_json(*image_partitions())),
            ("mountpoint",): (1, ""),
            ("sfdisk", "--json"): (0, sfdisk_json(storage_sectors)),
            ("sfdisk", "--dump"): (0, "label: gpt\n"),
            ("passwd", "--status"): (0, "golem NP\n"),
            ("nm-online",): (0, ""),
            ("nmcli",): (0, "IP4.ADDRESS[1]:192.168.1.20/24\nIP6.ADDRESS[1]:fe80\\:\\:1/64\n"),
        }, side_effects={("chpasswd",): self.chpasswd})

    def chpasswd(self, argv: tuple[str, ...]) -> None:
        """Like chpasswd: hash a plain password (to PASSWORD_HASH), or take a hash as is."""
        data = self.runner.calls[-1].input or b""
        user, _, secret = data.decode().rstrip("\n").partition(":")
        crypt_hash = secret if "--encrypted" in argv else PASSWORD_HASH
        lines = [f"{user}:{crypt_hash}:19000:0:99999:7:::" if line.split(":")[0] == user
                 else line for line in self.layout.shadow_file.read_text().splitlines()]
        self.layout.shadow_file.write_text("\n".join(lines) + "\n")

    def write_first_boot(self, text: str) -> Path:
        self.layout.conf_mount_dir.mkdir(parents=True, exist_ok=True)
        self.layout.first_boot_config.write_text(text)
        return self.layout.first_boot_config

    def reboot(self) -> None:
        """What a reboot of the live system leaves: partitions, not the RAM overlay.

        The conf partition's files (the fake's conf_mount_dir) and the storage stay;
        home, /var/lib, /etc/shadow and the log of commands and console lines are gone."""
        import shutil

        for ram in (self.layout.golem_home, self.layout.state_dir):
            shutil.rmtree(ram, ignore_errors=True)
        self.layout.golem_home.mkdir(parents=True)
        self.layout.shadow_file.write_text(NO_PASSWORD_SHADOW)
        self.console.unlink(missing_ok=True)
        self.runner.calls.clear()

    def services(self, ui: ScriptedUI, screen: FakeScreen | None = None):
        from golemwz.boot_console import NullScreen
        from golemwz.wizard import Services

        reporter = Reporter(self.layout.log_file, console_path=self.console,
                            stream=io.StringIO())
        return Services(layout=self.layout, runner=self.runner, ui=ui, reporter=reporter,
                        sysfs_write=self.kernel, new_password=lambda: PASSWORD,
                        screen=screen or NullScreen())

    def console_lines(self) -> list[str]:
        return self.console.read_text().splitlines() if self.console.exists() else []

    def log_text(self) -> str:
        return self.layout.log_file.read_text()


FULL_FIRST_BOOT = f"""
accepted_terms = true
non_interactive_install = true
storage_partition = "{GOLEM_STORAGE_PARTUUID}"
glm_node_name = "rig-7"
glm_account = "{ACCOUNT}"
glm_per_hour = "0.36"
init_price = "0"
gpu_pci_slot = "auto"
ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx ops@example"]

[env]
YA_NET_TYPE = "hybrid"
SUBNET = "public"
"""
