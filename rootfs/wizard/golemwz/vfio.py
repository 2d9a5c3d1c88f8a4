"""Hand GPUs (and their IOMMU group) to vfio-pci through sysfs.

Writes go through open(), never a shell. The writer is a parameter so tests can
stand in for the kernel: a plain file write in a temporary tree changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from golemwz.errors import WizardError
from golemwz.pci import PciAddress, pci_devices_dir, read_device
from golemwz.report import Reporter
from golemwz.runner import Runner

SysfsWriter = Callable[[Path, str], None]
VFIO_DRIVER = "vfio-pci"
# Platform framebuffers that hold the boot GPU's memory until released.
FRAMEBUFFER_DRIVERS = ("simple-framebuffer", "efi-framebuffer", "vesa-framebuffer")


def write_sysfs(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as attribute:
        attribute.write(value)


def release_console_framebuffer(sysfs_root: Path, write: SysfsWriter,
                                reporter: Reporter) -> None:
    """Detach the text console and the firmware framebuffer from the boot GPU."""
    for vtcon in sorted((sysfs_root / "class/vtconsole").glob("vtcon*")):
        name_file = vtcon / "name"
        if name_file.is_file() and "frame buffer" in name_file.read_text():
            write(vtcon / "bind", "0")
    for driver in FRAMEBUFFER_DRIVERS:
        driver_dir = sysfs_root / "bus/platform/drivers" / driver
        for bound in sorted(driver_dir.glob(f"{driver}.*")):
            write(driver_dir / "unbind", bound.name)
    reporter.step("released the console framebuffer of the boot GPU")


def bind_to_vfio(
    sysfs_root: Path,
    dev_root: Path,
    devices: Iterable[PciAddress],
    runner: Runner,
    reporter: Reporter,
    write: SysfsWriter = write_sysfs,
) -> None:
    """Load vfio-pci, move each device to it, then check the kernel agrees."""
    targets = sorted(set(devices))
    runner.run(["modprobe", VFIO_DRIVER])
    devices_dir = pci_devices_dir(sysfs_root)
    for address in targets:
        device = read_device(sysfs_root, address)
        if device.driver == VFIO_DRIVER:
            reporter.detail(f"{address} is already bound to {VFIO_DRIVER}")
            continue
        # driver_override first, so the probe below cannot pick the old driver again.
        write(devices_dir / str(address) / "driver_override", VFIO_DRIVER)
        if device.driver is not None:
            write(devices_dir / str(address) / "driver/unbind", str(address))
        write(sysfs_root / "bus/pci/drivers_probe", str(address))
    _verify(sysfs_root, dev_root, targets)
    reporter.step("attached to vfio-pci: " + ", ".join(str(a) for a in targets))


def _verify(sysfs_root: Path, dev_root: Path, targets: list[PciAddress]) -> None:
    for address in targets:
        device = read_device(sysfs_root, address)
        if device.driver != VFIO_DRIVER:
            raise WizardError(
                f"{address} is bound to {device.driver or 'no driver'}, not {VFIO_DRIVER}",
                "check `dmesg` for vfio errors; the IOMMU must be on")
        group_node = dev_root / "vfio" / str(device.iommu_group)
        if device.iommu_group is None or not os.path.exists(group_node):
            raise WizardError(f"{group_node} does not exist for {address}",
                              "the IOMMU group is not usable by vfio; check `dmesg`")
