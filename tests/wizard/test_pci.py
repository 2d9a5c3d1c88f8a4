"""GPU discovery and IOMMU isolation over fake sysfs trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golemwz.cli import main
from golemwz.pci import IOMMU_OFF_HELP, PciAddress, survey_gpus
from wizard_fakes import FakeSysfs


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path / "sys").with_iommu()


def only_gpu(sysfs: FakeSysfs, relax: bool = True):
    survey = survey_gpus(sysfs.root, relax_bridges=relax)
    assert len(survey.gpus) == 1
    return survey.gpus[0]


def slots(addresses) -> list[str]:
    return [str(a) for a in addresses]


def test_gpu_alone_in_its_group_is_isolated(sysfs: FakeSysfs) -> None:
    sysfs.add("0000:01:00.0", group=12)
    report = only_gpu(sysfs)
    assert report.isolated
    assert report.gpu.iommu_group == 12
    assert slots(report.vfio_devices) == ["0000:01:00.0"]


def test_root_port_in_group_is_allowed_unless_no_relax(sysfs: FakeSysfs) -> None:
    sysfs.add("0000:00:01.0", vendor=0x8086, cls=0x060400, group=1, bridge=True,
              driver="pcieport")
    sysfs.add("0000:01:00.0", group=1)
    relaxed = only_gpu(sysfs, relax=True)
    assert relaxed.isolated
    assert slots(relaxed.vfio_devices) == ["0000:01:00.0"]  # the bridge is never bound
    strict = only_gpu(sysfs, relax=False)
    assert not strict.isolated
    assert "0000:00:01.0 (PCI bridge)" in strict.reason
    assert strict.vfio_devices == ()


def test_group_shared_with_usb_controller_is_not_isolated(sysfs: FakeSysfs) -> None:
    sysfs.add("0000:00:14.0", vendor=0x8086, cls=0x0C0330, group=3, driver="xhci_hcd")
    sysfs.add("0000:01:00.0", group=3)
    report = only_gpu(sysfs)
    assert not report.isolated
    assert "0000:00:14.0 (USB controller)" in report.reason
    assert "group: 0000:00:14.0 (USB controller), 0000:01:00.0 (VGA compatible" in report.reason
    assert report.vfio_devices == ()


def test_four_function_card_binds_every_function(sysfs: FakeSysfs) -> None:
    functions = sysfs.add_rtx_card()
    report = only_gpu(sysfs)
    assert report.isolated
    assert slots(report.vfio_devices) == functions


def test_datacenter_3d_controller_is_a_candidate(sysfs: FakeSysfs) -> None:
    sysfs.add("0000:41:00.0", device=0x20B5, cls=0x030200, group=40)
    sysfs.add("0000:42:00.0", vendor=0x1002, cls=0x030000, group=41)  # not NVIDIA
    sysfs.add("0000:43:00.0", cls=0x040300, group=42)  # NVIDIA, but audio only
    survey = survey_gpus(sysfs.root)
    assert slots(r.gpu.address for r in survey.gpus) == ["0000:41:00.0"]
    assert survey.gpus[0].isolated
    assert survey.gpus[0].gpu.kind == "3D controller"


def test_two_gpus_in_one_group_isolate_neither(sysfs: FakeSysfs) -> None:
    sysfs.add("0000:01:00.0", group=5)
    sysfs.add("0000:02:00.0", group=5)
    survey = survey_gpus(sysfs.root)
    assert [r.isolated for r in survey.gpus] == [False, False]
    assert "0000:02:00.0" in survey.gpus[0].reason
    assert "0000:01:00.0" in survey.gpus[1].reason


def test_without_iommu_nothing_is_isolated(tmp_path: Path) -> None:
    sysfs = FakeSysfs(tmp_path / "sys")  # no kernel/iommu_groups at all
    sysfs.add("0000:01:00.0")
    survey = survey_gpus(sysfs.root)
    assert survey.iommu is False
    assert not survey.gpus[0].isolated
    assert survey.gpus[0].reason == IOMMU_OFF_HELP
    assert "intel_iommu=on" in IOMMU_OFF_HELP


def test_wide_pci_domain_parses_and_groups(sysfs: FakeSysfs) -> None:
    functions = sysfs.add_rtx_card(bus="e1", domain="10000", group=7)
    report = only_gpu(sysfs)
    assert str(report.gpu.address) == "10000:e1:00.0"
    assert report.isolated
    assert slots(report.vfio_devices) == functions


@pytest.mark.parametrize("text, expected", [
    ("0000:01:00.0", "0000:01:00.0"),
    ("01:00.1", "0000:01:00.1"),
    ("E000:C1:1F.7", "e000:c1:1f.7"),
    ("10000:00:02.0", "10000:00:02.0"),
])
def test_pci_address_forms(text: str, expected: str) -> None:
    assert str(PciAddress.parse(text)) == expected


@pytest.mark.parametrize("text", ["", "0000:01:00", "0000:01:00.8", "0000:01:20.0", "gpu0",
                                  "0000:01:00.0; reboot"])
def test_invalid_pci_addresses_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a PCI address"):
        PciAddress.parse(text)


def test_gpus_subcommand_prints_the_survey_as_json(sysfs: FakeSysfs,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sysfs.add("0000:00:01.0", vendor=0x8086, cls=0x060400, group=1, bridge=True)
    sysfs.add_rtx_card(group=1)
    assert main(["gpus", "--sysfs-root", str(sysfs.root), "--json"]) == 0
    relaxed = json.loads(capsys.readouterr().out)
    assert relaxed["iommu"] is True
    assert relaxed["gpus"] == [{
        "slot": "0000:01:00.0", "class": "0x030000",
        "description": "NVIDIA 10de:2684 VGA compatible controller",
        "iommu_group": 1, "isolated": True,
        "reason": "IOMMU group 1 holds only this card and PCI bridge 0000:00:01.0",
        "vfio_devices": ["0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3"],
    }]
    assert main(["gpus", "--sysfs-root", str(sysfs.root), "--no-relax-gpu-isolation",
                 "--json"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert strict["gpus"][0]["isolated"] is False
    assert strict["gpus"][0]["vfio_devices"] == []
