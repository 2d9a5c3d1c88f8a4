"""Relaxed IOMMU isolation accepts host bridges (issue 9 item 6), fail-closed.

Upstream's relaxed mode accepts PCI class 0600 (host bridge) as well as 0604 (golem-gpu-live
rootfs/golemwz.py RELAXED_PCI_CLASSES): on AMD boards the GPU's group holds a
"Dummy Host Bridge" (1022:1482, no driver) next to its GPP bridge (1022:1483). Bridges
are still judged by header type or pci_bus/ (issue 10 item 5), and a host bridge only
counts with a readable type 0 header and no driver.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from golemwz.pci import survey_gpus
from wizard_fakes import FakeSysfs

AMD = 0x1022


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path / "sys").with_iommu()


def amd_group(sysfs: FakeSysfs, *, host_header: int | None = 0,
              host_driver: str | None = None) -> None:
    sysfs.add("0000:00:01.0", vendor=AMD, device=0x1482, cls=0x060000, group=4,
              header_type=host_header, driver=host_driver)
    sysfs.add("0000:00:01.1", vendor=AMD, device=0x1483, cls=0x060400, group=4, bridge=True,
              driver="pcieport", header_type=1)
    sysfs.add_rtx_card(group=4)


def only_report(sysfs: FakeSysfs, relax: bool = True):
    (report,) = survey_gpus(sysfs.root, relax_bridges=relax).gpus
    return report


def test_an_amd_dummy_host_bridge_in_the_group_is_accepted_and_not_bound(
        sysfs: FakeSysfs) -> None:
    amd_group(sysfs)
    report = only_report(sysfs)
    assert report.isolated, report.reason
    assert "PCI bridge 0000:00:01.1" in report.reason
    assert "host bridge 0000:00:01.0" in report.reason
    # Neither bridge goes to vfio-pci (an unbound device is viable for vfio).
    assert [str(a) for a in report.vfio_devices] == [f"0000:01:00.{f}" for f in range(4)]


def test_without_relaxed_mode_the_host_bridge_is_an_intruder(sysfs: FakeSysfs) -> None:
    amd_group(sysfs)
    report = only_report(sysfs, relax=False)
    assert not report.isolated
    assert "0000:00:01.0 (host bridge)" in report.reason
    assert "drop --no-relax-gpu-isolation" in report.reason


@pytest.mark.parametrize("header", [None, 0x05])
def test_a_host_bridge_class_without_a_provable_type_0_header_is_not_accepted(
        sysfs: FakeSysfs, header: int | None) -> None:
    """Unreadable config space (None) or an unknown header type: fail closed."""
    amd_group(sysfs, host_header=header)
    report = only_report(sysfs)
    assert not report.isolated
    assert "shared with 0000:00:01.0 (host bridge)" in report.reason
    assert report.vfio_devices == ()


def test_a_host_bridge_with_a_driver_is_in_use_by_the_host(sysfs: FakeSysfs) -> None:
    amd_group(sysfs, host_driver="ie31200_edac")
    report = only_report(sysfs)
    assert not report.isolated
    assert "in use by the host" in report.reason


def test_a_class_0600_endpoint_does_not_excuse_another_device(sysfs: FakeSysfs) -> None:
    amd_group(sysfs)
    sysfs.add("0000:00:14.0", vendor=0x8086, cls=0x0C0330, group=4, driver="xhci_hcd",
              header_type=0)
    report = only_report(sysfs)
    assert not report.isolated
    assert "shared with 0000:00:14.0 (USB controller)" in report.reason
