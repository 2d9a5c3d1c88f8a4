"""IOMMU isolation fails closed (issue 10 item 5): odd sysfs trees never mean "isolated"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from golemwz.pci import survey_gpus
from wizard_fakes import FakeSysfs


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path / "sys").with_iommu()


def config_space(header_type: int) -> bytes:
    """The first 64 bytes of a configuration space with this header type at 0x0e."""
    data = bytearray(64)
    data[0x0E] = header_type
    return bytes(data)


def only_report(sysfs: FakeSysfs):
    (report,) = survey_gpus(sysfs.root).gpus
    return report


def test_a_group_without_a_devices_directory_is_not_isolated(sysfs: FakeSysfs) -> None:
    sysfs.add("0000:01:00.0", group=7)
    shutil.rmtree(sysfs.root / "kernel/iommu_groups/7/devices")
    report = only_report(sysfs)
    assert not report.isolated
    assert "lists no devices" in report.reason
    assert report.vfio_devices == ()


def test_an_empty_devices_directory_is_not_isolated(sysfs: FakeSysfs) -> None:
    sysfs.add("0000:01:00.0", group=7)
    (sysfs.root / "kernel/iommu_groups/7/devices/0000:01:00.0").unlink()
    report = only_report(sysfs)
    assert not report.isolated and "lists no devices" in report.reason


def test_a_gpu_missing_from_its_own_group_is_not_isolated(sysfs: FakeSysfs) -> None:
    sysfs.add("0000:00:14.0", vendor=0x8086, cls=0x0C0330, group=7, driver="xhci_hcd")
    sysfs.add("0000:01:00.0", group=7)
    (sysfs.root / "kernel/iommu_groups/7/devices/0000:01:00.0").unlink()
    sysfs.add("0000:00:15.0", vendor=0x8086, cls=0x0C0330, group=8)  # another group
    # The group now lists only the USB controller: not a reason to call the GPU alone.
    (sysfs.root / "kernel/iommu_groups/7/devices/0000:00:14.0").unlink()
    (sysfs.root / "kernel/iommu_groups/7/devices/0000:00:15.0").symlink_to(
        sysfs.root / "bus/pci/devices/0000:00:15.0")
    report = only_report(sysfs)
    assert not report.isolated
    assert "does not list this GPU" in report.reason


def test_class_0604_without_a_secondary_bus_is_not_a_bridge(sysfs: FakeSysfs) -> None:
    """A device claiming the bridge class, with an endpoint header and no pci_bus/."""
    fake = sysfs.add("0000:00:01.0", vendor=0x1234, cls=0x060400, group=1)
    (fake / "config").write_bytes(config_space(0x00))
    sysfs.add("0000:01:00.0", group=1)
    report = only_report(sysfs)
    assert not report.isolated
    assert "shared with 0000:00:01.0" in report.reason


def test_a_bridge_header_counts_as_a_bridge_even_without_pci_bus(sysfs: FakeSysfs) -> None:
    port = sysfs.add("0000:00:01.0", vendor=0x8086, cls=0x060400, group=1)
    (port / "config").write_bytes(config_space(0x81))  # multi-function bit + type 1
    sysfs.add("0000:01:00.0", group=1)
    report = only_report(sysfs)
    assert report.isolated
    assert "PCI bridge 0000:00:01.0" in report.reason
    assert [str(a) for a in report.vfio_devices] == ["0000:01:00.0"]
