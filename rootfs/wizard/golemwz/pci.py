"""GPUs and IOMMU groups, read from sysfs by the kernel's rules.

Everything here is a pure function of a sysfs tree (`sysfs_root`, /sys on the
image), so tests build fake trees in temporary directories.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

NVIDIA_VENDOR = 0x10DE
VGA_CLASS = 0x0300
DISPLAY_3D_CLASS = 0x0302  # datacenter cards (A100, H100, L4...) have no VGA function
BRIDGE_CLASS = 0x0604
# Host bridges (AMD's "Dummy Host Bridge" 1022:1482 shares the GPU's group on many
# boards). Upstream's relaxed mode accepts classes 0600 and 0604 (golem-gpu-live
# rootfs/golemwz.py RELAXED_PCI_CLASSES); here a host bridge counts only when it is
# provably passive, see _is_passive_host_bridge.
HOST_BRIDGE_CLASS = 0x0600
NORMAL_HEADER_TYPE = 0
# Configuration space byte 0x0e, low 7 bits: 1 a PCI-to-PCI bridge, 2 a CardBus
# bridge, the only headers with a secondary bus (PCI Local Bus spec, 6.1).
HEADER_TYPE_OFFSET = 0x0E
BRIDGE_HEADER_TYPES = (1, 2)
GPU_CLASSES = (VGA_CLASS, DISPLAY_3D_CLASS)

CLASS_NAMES = {
    VGA_CLASS: "VGA compatible controller",
    DISPLAY_3D_CLASS: "3D controller",
    0x0403: "audio device",
    0x0C03: "USB controller",
    0x0C80: "serial bus controller",
    0x0108: "NVMe controller",
    0x0106: "SATA controller",
    0x0200: "Ethernet controller",
    0x0280: "network controller",
    BRIDGE_CLASS: "PCI bridge",
    HOST_BRIDGE_CLASS: "host bridge",
}

IOMMU_OFF_HELP = (
    "the IOMMU is off (the kernel created no IOMMU groups): enable VT-d (Intel) or "
    "AMD-Vi/IOMMU (AMD) in the firmware setup and boot with intel_iommu=on or amd_iommu=on"
)

# Domains are 4 hex digits on most machines but wider on some (VMD: 10000:).
_ADDRESS = re.compile(
    r"^(?:(?P<domain>[0-9a-f]{4,8}):)?(?P<bus>[0-9a-f]{2}):(?P<device>[0-1][0-9a-f])\.(?P<function>[0-7])$"
)


@dataclass(frozen=True, order=True)
class PciAddress:
    domain: int
    bus: int
    device: int
    function: int

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        """Parse `DDDD:BB:DD.F` (domain optional, any width); ValueError otherwise."""
        match = _ADDRESS.match(text.strip().lower())
        if match is None:
            raise ValueError(f"'{text}' is not a PCI address like 0000:01:00.0")
        return cls(
            domain=int(match["domain"] or "0", 16),
            bus=int(match["bus"], 16),
            device=int(match["device"], 16),
            function=int(match["function"]),
        )

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.device:02x}.{self.function}"

    def same_card(self, other: PciAddress) -> bool:
        """Functions of one physical card share domain, bus and device number."""
        return (self.domain, self.bus, self.device) == (other.domain, other.bus, other.device)


@dataclass(frozen=True)
class PciDevice:
    address: PciAddress
    class_code: int  # the 24-bit class from sysfs, e.g. 0x030000
    vendor: int
    device_id: int
    driver: str | None
    iommu_group: int | None
    is_bridge: bool
    boot_vga: bool
    consumers: tuple[PciAddress, ...]
    header_type: int | None = None  # None: the config space could not be read

    def is_passive_host_bridge(self) -> bool:
        """A host bridge the VM's GPU may share a group with (relaxed mode).

        The class alone proves nothing (a DMA-capable endpoint may claim any class), so
        also: a type 0 header read from the config space (unreadable: not accepted),
        and no driver, so the host does not use it; vfio also counts a device without
        driver as viable, so it need not be bound to vfio-pci."""
        return (self.base_class == HOST_BRIDGE_CLASS and not self.is_bridge
                and self.header_type == NORMAL_HEADER_TYPE and self.driver is None)

    @property
    def base_class(self) -> int:
        return self.class_code >> 8

    @property
    def kind(self) -> str:
        return CLASS_NAMES.get(self.base_class, f"class {self.base_class:04x}")

    def is_nvidia_gpu(self) -> bool:
        return self.vendor == NVIDIA_VENDOR and self.base_class in GPU_CLASSES


def _read_hex(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return default


def _header_type(device_dir: Path) -> int | None:
    """The header type from sysfs `config` (its first 64 bytes are readable by anyone)."""
    try:
        with open(device_dir / "config", "rb") as config:
            config.seek(HEADER_TYPE_OFFSET)
            byte = config.read(1)
    except OSError:
        return None
    return byte[0] & 0x7F if byte else None


def _is_bridge(device_dir: Path) -> bool:
    """Judged by what the device is (a secondary bus), never by its class code: a
    device may claim class 0x0604 and still be an endpoint that can do DMA."""
    return ((device_dir / "pci_bus").is_dir()
            or _header_type(device_dir) in BRIDGE_HEADER_TYPES)


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def pci_devices_dir(sysfs_root: Path) -> Path:
    return sysfs_root / "bus/pci/devices"


def read_device(sysfs_root: Path, address: PciAddress) -> PciDevice:
    path = pci_devices_dir(sysfs_root) / str(address)
    group = _link_name(path / "iommu_group")
    consumers = []
    for link in sorted(path.glob("consumer:pci:*")):
        try:
            consumers.append(PciAddress.parse(link.name.removeprefix("consumer:pci:")))
        except ValueError:
            continue
    class_code = _read_hex(path / "class")
    boot_vga = (path / "boot_vga").is_file() and (path / "boot_vga").read_text().strip() == "1"
    return PciDevice(
        address=address,
        class_code=class_code,
        vendor=_read_hex(path / "vendor"),
        device_id=_read_hex(path / "device"),
        driver=_link_name(path / "driver"),
        iommu_group=int(group) if group is not None and group.isdigit() else None,
        is_bridge=_is_bridge(path),
        boot_vga=boot_vga,
        consumers=tuple(consumers),
        header_type=_header_type(path),
    )


def list_devices(sysfs_root: Path) -> list[PciDevice]:
    devices_dir = pci_devices_dir(sysfs_root)
    if not devices_dir.is_dir():
        return []
    addresses = []
    for entry in devices_dir.iterdir():
        try:
            addresses.append(PciAddress.parse(entry.name))
        except ValueError:
            continue
    return [read_device(sysfs_root, address) for address in sorted(addresses)]


def device_exists(sysfs_root: Path, address: PciAddress) -> bool:
    return (pci_devices_dir(sysfs_root) / str(address)).exists()


def iommu_enabled(sysfs_root: Path) -> bool:
    groups = sysfs_root / "kernel/iommu_groups"
    return groups.is_dir() and any(groups.iterdir())


def group_members(sysfs_root: Path, group: int) -> list[PciAddress]:
    devices = sysfs_root / "kernel/iommu_groups" / str(group) / "devices"
    members = []
    for entry in devices.iterdir() if devices.is_dir() else ():
        try:
            members.append(PciAddress.parse(entry.name))
        except ValueError:
            continue  # non-PCI members (rare platform devices) cannot be bound anyway
    return sorted(members)


def pci_ids_name(pci_ids_file: Path, vendor: int, device_id: int) -> str | None:
    """The marketing name from pci.ids, if that file is installed."""
    try:
        lines = pci_ids_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    in_vendor = False
    vendor_key, device_key = f"{vendor:04x}", f"\t{device_id:04x}"
    for line in lines:
        if not line.startswith("\t"):
            in_vendor = line.startswith(vendor_key + " ")
        elif in_vendor and line.startswith(device_key + " "):
            return line[len(device_key):].strip()
    return None


@dataclass(frozen=True)
class GpuReport:
    gpu: PciDevice
    description: str
    isolated: bool
    reason: str
    # The devices that must go to vfio-pci (empty when not isolated).
    vfio_devices: tuple[PciAddress, ...]
    # What --insecure would bind: every non-bridge member of the group.
    group_devices: tuple[PciAddress, ...]


@dataclass(frozen=True)
class GpuSurvey:
    iommu: bool
    gpus: tuple[GpuReport, ...]

    def find(self, address: PciAddress) -> GpuReport | None:
        return next((r for r in self.gpus if r.gpu.address == address), None)

    def isolated(self) -> tuple[GpuReport, ...]:
        return tuple(r for r in self.gpus if r.isolated)

    def to_json(self) -> dict[str, object]:
        return {
            "iommu": self.iommu,
            "gpus": [
                {
                    "slot": str(r.gpu.address),
                    "class": f"0x{r.gpu.class_code:06x}",
                    "description": r.description,
                    "iommu_group": r.gpu.iommu_group,
                    "isolated": r.isolated,
                    "reason": r.reason,
                    "vfio_devices": [str(a) for a in r.vfio_devices],
                }
                for r in self.gpus
            ],
        }


def _describe(device: PciDevice) -> str:
    return f"{device.address} ({device.kind})"


def _assess(sysfs_root: Path, gpu: PciDevice, relax_bridges: bool,
            iommu: bool) -> tuple[bool, str, tuple[PciAddress, ...]]:
    """(isolated, reason, non-bridge group members) for one GPU."""
    if not iommu:
        return False, IOMMU_OFF_HELP, (gpu.address,)
    if gpu.iommu_group is None:
        return False, "the kernel put this GPU in no IOMMU group", (gpu.address,)
    listed = group_members(sysfs_root, gpu.iommu_group)
    # Fail closed: a group whose member list is missing or empty, or that does not list
    # the GPU itself, says nothing about what else shares it.
    if not listed:
        return False, (f"IOMMU group {gpu.iommu_group} lists no devices, so its isolation "
                       "cannot be checked"), (gpu.address,)
    if gpu.address not in listed:
        return False, (f"IOMMU group {gpu.iommu_group} does not list this GPU among its "
                       "devices, so its isolation cannot be checked"), (gpu.address,)
    members = [read_device(sysfs_root, a) for a in listed]
    intruders = []
    for member in members:
        if member.address.same_card(gpu.address) or member.address in gpu.consumers:
            continue
        if relax_bridges and (member.is_bridge or member.is_passive_host_bridge()):
            continue
        intruders.append(member)
    # Bridges and passive host bridges stay as they are: vfio-pci is for endpoints.
    non_bridges = tuple(m.address for m in members
                        if not (m.is_bridge or m.is_passive_host_bridge())) or (gpu.address,)
    if not intruders:
        bridges = [str(m.address) for m in members if m.is_bridge]
        hosts = [str(m.address) for m in members if m.is_passive_host_bridge()]
        reason = f"IOMMU group {gpu.iommu_group} holds only this card"
        reason += f" and PCI bridge {', '.join(bridges)}" if bridges else ""
        reason += f" and host bridge {', '.join(hosts)}" if hosts else ""
        return True, reason, non_bridges
    listing = ", ".join(_describe(m) for m in members)
    reason = (f"IOMMU group {gpu.iommu_group} is shared with "
              + ", ".join(_describe(m) for m in intruders)
              + f" (group: {listing}); move the card to another slot")
    if all(m.is_bridge or m.is_passive_host_bridge() for m in intruders):
        reason += " or allow bridges (drop --no-relax-gpu-isolation)"
    elif any(m.base_class == HOST_BRIDGE_CLASS and m.driver for m in intruders):
        reason += " (a host bridge with a driver is in use by the host)"
    return False, reason, non_bridges


def survey_gpus(sysfs_root: Path, *, relax_bridges: bool = True,
                pci_ids_file: Path | None = None) -> GpuSurvey:
    """Every NVIDIA GPU (VGA or 3D controller) and whether it can be passed through."""
    iommu = iommu_enabled(sysfs_root)
    reports = []
    for device in list_devices(sysfs_root):
        if not device.is_nvidia_gpu():
            continue
        isolated, reason, group_devices = _assess(sysfs_root, device, relax_bridges, iommu)
        name = pci_ids_name(pci_ids_file, device.vendor, device.device_id) if pci_ids_file else None
        description = (f"NVIDIA {name}" if name else
                       f"NVIDIA {device.vendor:04x}:{device.device_id:04x} {device.kind}")
        reports.append(GpuReport(
            gpu=device,
            description=description,
            isolated=isolated,
            reason=reason,
            vfio_devices=group_devices if isolated else (),
            group_devices=group_devices,
        ))
    return GpuSurvey(iommu=iommu, gpus=tuple(reports))
