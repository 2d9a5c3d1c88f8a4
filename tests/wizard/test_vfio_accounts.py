"""VFIO binding through sysfs writes; password generation; SSH keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from golemwz.accounts import (
    MIN_PASSWORD_BITS,
    UNAMBIGUOUS_ALPHABET,
    generate_password,
    install_ssh_keys,
    password_is_set,
)
from golemwz.errors import WizardError
from golemwz.pci import PciAddress
from golemwz.vfio import bind_to_vfio
from wizard_fakes import FakeSysfs, KernelStandIn, RecordingRunner, quiet_reporter


def test_binding_overrides_unbinds_probes_in_that_order(tmp_path: Path) -> None:
    sysfs = FakeSysfs(tmp_path / "sys").with_iommu()
    functions = sysfs.add_rtx_card(group=4)
    kernel = KernelStandIn(sysfs, tmp_path / "dev")
    runner = RecordingRunner()
    bind_to_vfio(sysfs.root, tmp_path / "dev", [PciAddress.parse(f) for f in functions],
                 runner, quiet_reporter(), kernel)
    assert runner.argvs == [("modprobe", "vfio-pci")]
    first = functions[0]
    assert kernel.writes[:3] == [
        (f"bus/pci/devices/{first}/driver_override", "vfio-pci"),
        (f"bus/pci/devices/{first}/driver/unbind", first),
        ("bus/pci/drivers_probe", first),
    ]
    assert len(kernel.writes) == 12


def test_device_the_kernel_did_not_bind_is_an_error(tmp_path: Path) -> None:
    sysfs = FakeSysfs(tmp_path / "sys").with_iommu()
    sysfs.add("0000:01:00.0", group=4, driver="nvidia")
    writes: list[tuple[Path, str]] = []
    with pytest.raises(WizardError, match="0000:01:00.0 is bound to nvidia, not vfio-pci"):
        bind_to_vfio(sysfs.root, tmp_path / "dev", [PciAddress.parse("0000:01:00.0")],
                     RecordingRunner(), quiet_reporter(),
                     lambda path, value: writes.append((path, value)))
    assert len(writes) == 3


def test_password_has_enough_entropy_and_no_ambiguous_characters() -> None:
    password = generate_password()
    characters = password.replace("-", "")
    assert len(characters) * math.log2(len(UNAMBIGUOUS_ALPHABET)) >= MIN_PASSWORD_BITS
    assert set(characters) <= set(UNAMBIGUOUS_ALPHABET)
    assert not set("0O1lI") & set(UNAMBIGUOUS_ALPHABET)
    assert generate_password() != password


@pytest.mark.parametrize("status, expected", [("golem P 2024-01-01 0 99999 7 -1", True),
                                              ("golem L 2024-01-01 0 99999 7 -1", False),
                                              ("golem NP 2024-01-01 0 99999 7 -1", False)])
def test_password_status(status: str, expected: bool) -> None:
    runner = RecordingRunner(responses={("passwd",): (0, status)})
    assert password_is_set(runner, "golem") is expected


def test_ssh_keys_are_added_once_and_existing_ones_kept(tmp_path: Path) -> None:
    keys_file = tmp_path / ".ssh/authorized_keys"
    keys_file.parent.mkdir()
    keys_file.write_text("ssh-rsa AAAAB3 old@desk\n")
    runner = RecordingRunner()
    new = ["ssh-ed25519 AAAAC3 ops@example", "ssh-rsa AAAAB3 renamed-comment"]
    assert install_ssh_keys(keys_file, new, runner, "golem") == 1
    assert install_ssh_keys(keys_file, new, runner, "golem") == 0
    assert keys_file.read_text() == "ssh-rsa AAAAB3 old@desk\nssh-ed25519 AAAAC3 ops@example\n"
    assert keys_file.stat().st_mode & 0o777 == 0o600
    assert runner.argvs[0] == ("chown", "-R", "golem:golem", str(keys_file.parent))
