"""TOML validation, precedence and the atomic save."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from golemwz.config import AUTO, Settings, parse_layer, read_toml, save_atomically
from golemwz.errors import ConfigError
from golemwz.pci import PciAddress

ACCOUNT = "0x" + "ab" * 20


def only_error(data: dict[str, object]) -> ConfigError:
    settings, errors = parse_layer(data, "golemwz.toml")
    assert len(errors) == 1, errors
    assert settings == Settings()  # the bad value is dropped, not half-used
    return errors[0]


@pytest.mark.parametrize("data, names", [
    ({"glm_acount": ACCOUNT}, ["unknown key 'glm_acount'", "glm_account"]),
    ({"accepted_terms": "yes"}, ["accepted_terms = 'yes'", "true or false"]),
    ({"glm_account": "0x1234"}, ["glm_account = '0x1234'", "40 hex digits"]),
    ({"glm_account": "ab" * 21}, ["glm_account", "0x followed by"]),
    ({"glm_account": 0x12}, ["glm_account = 18", "in quotes"]),  # TOML reads 0x12 as 18
    ({"glm_per_hour": "-0.25"}, ["glm_per_hour = '-0.25'", "non-negative"]),
    ({"glm_per_hour": "cheap"}, ["glm_per_hour = 'cheap'", "decimal number"]),
    ({"init_price": True}, ["init_price = True", "a number"]),
    ({"init_price": "nan"}, ["init_price = 'nan'", "decimal number"]),
    ({"gpu_pci_slot": "0000:01:00"}, ["gpu_pci_slot", "'0000:01:00' is not a PCI address"]),
    ({"gpu_pci_slot": 1}, ["gpu_pci_slot = 1", "list of strings"]),
    ({"vfio_devices": ["01:00.1", "x"]}, ["vfio_devices", "'x' is not a PCI address"]),
    ({"ssh_keys": ["not a key"]}, ["ssh_keys = 'not a key'", "SSH public key"]),
    ({"env": {"YA_NET_TYPE": 1}}, ["env.YA_NET_TYPE = 1", "one-line string"]),
    ({"env": {"BAD-NAME": "x"}}, ["env.BAD-NAME", "variable name"]),
    ({"env": "YA_NET_TYPE=hybrid"}, ["env = 'YA_NET_TYPE=hybrid'", "a table"]),
    ({"storage_partition": "/dev/sda5"}, ["storage_partition = '/dev/sda5'", "PARTUUID"]),
    ({"glm_node_name": "my node!"}, ["glm_node_name = 'my node!'", "node name"]),
    ({"non_interactive_install": 1}, ["non_interactive_install = 1", "true or false"]),
])
def test_each_bad_value_gets_one_message_naming_key_and_value(data, names) -> None:
    error = only_error(data)
    for name in names:
        assert name in error.line()
    assert error.line().startswith("golemwz.toml: ")
    assert error.fix  # always says how to fix it
    assert error.exit_status == 2


def test_good_values_are_typed() -> None:
    settings, errors = parse_layer({
        "accepted_terms": True,
        "glm_account": ACCOUNT,
        "glm_per_hour": "0.25",
        "init_price": 0,
        "gpu_pci_slot": ["01:00.0", "0000:02:00.0"],
        "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx you@laptop"],
        "env": {"YA_NET_TYPE": "hybrid", "SUBNET": "public"},
        "storage_partition": "2A5AE4B8-3B4C-4B5E-9A43-90F3E6C1C0DE",
    }, "golemwz.toml")
    assert errors == []
    assert settings.glm_per_hour == Decimal("0.25")
    assert settings.init_price == Decimal(0)
    assert settings.gpu_pci_slot == (PciAddress(0, 1, 0, 0), PciAddress(0, 2, 0, 0))
    assert settings.env == (("SUBNET", "public"), ("YA_NET_TYPE", "hybrid"))
    assert settings.storage_partition == "2a5ae4b8-3b4c-4b5e-9a43-90f3e6c1c0de"
    assert parse_layer({"gpu_pci_slot": "auto"}, "x")[0].gpu_pci_slot == AUTO


def test_good_keys_survive_next_to_a_bad_one() -> None:
    settings, errors = parse_layer({"glm_account": "0xbad", "glm_per_hour": "0.5"}, "f")
    assert [e.key for e in errors] == ["glm_account"]
    assert settings.glm_per_hour == Decimal("0.5")


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "golemwz.toml"
    broken.write_text("accepted_terms = true\nglm_per_hour = 0.25 GLM\n")
    with pytest.raises(ConfigError) as raised:
        read_toml(broken, "first-boot golemwz.toml")
    line = raised.value.line()
    assert str(broken) in line and "line 2" in line and "quotes" in line


def test_missing_file_is_no_layer(tmp_path: Path) -> None:
    assert read_toml(tmp_path / "absent.toml", "saved configuration") is None


def test_flags_over_saved_over_first_boot() -> None:
    first, _ = parse_layer({"glm_account": ACCOUNT, "glm_per_hour": "1", "init_price": "2",
                            "accepted_terms": True}, "first")
    saved, _ = parse_layer({"glm_per_hour": "0.5", "init_price": "3"}, "saved")
    flags, _ = parse_layer({"init_price": "0"}, "flags")
    merged = flags.merged_over(saved.merged_over(first))
    assert merged.glm_account == ACCOUNT
    assert merged.accepted_terms is True
    assert merged.glm_per_hour == Decimal("0.5")
    assert merged.init_price == Decimal("0")


def test_save_then_read_gives_the_same_settings(tmp_path: Path) -> None:
    settings, _ = parse_layer({"glm_account": ACCOUNT, "glm_per_hour": "0.25",
                               "gpu_pci_slot": ["0000:01:00.0"], "env": {"SUBNET": "public"},
                               "ssh_keys": ["ssh-ed25519 AAAAC3Nz you@laptop"]}, "x")
    target = tmp_path / ".golemwz.toml"
    save_atomically(settings, target)
    data = read_toml(target, "saved")
    assert data is not None and data["glm_per_hour"] == "0.25"
    assert parse_layer(data, "saved") == (settings, [])
    assert target.stat().st_mode & 0o777 == 0o600


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / ".golemwz.toml"
    target.write_text('glm_per_hour = "0.1"\n')
    new, _ = parse_layer({"glm_per_hour": "0.9"}, "x")
    written: list[str] = []

    def crash_before_rename(temporary: str, final: Path) -> None:
        written.append(Path(temporary).read_text())
        raise OSError("power cut")

    with pytest.raises(OSError, match="power cut"):
        save_atomically(new, target, rename=crash_before_rename)
    assert written == ['glm_per_hour = "0.9"\n']  # the new content was fully written first
    assert target.read_text() == 'glm_per_hour = "0.1"\n'
    assert os.listdir(tmp_path) == [".golemwz.toml"]
