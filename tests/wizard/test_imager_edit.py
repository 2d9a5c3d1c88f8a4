"""The imager's edit mode reformats the conf partition (issue 9 item 5); and the two
upstream extras of item 6: the legacy BIOS warning and GOLEM's terms tag.

golem-gpu-imager's edit workflow writes the configuration with the same
write_configuration_to_partition as a fresh image (src/disk.rs): fatfs::format_volume,
then golemwz.toml and golem.env only. The saved configuration (golemwz-saved.toml) and
the password hash (golemwz-password.hash) that lived there are gone at the next boot.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
from golemwz.cli import main
from golemwz.layout import legacy_bios_boot
from golemwz.provider import duration_price
from test_imager import IMAGER_ENV, IMAGER_TOML, as_golem, imager_partition
from wizard_fakes import (
    FULL_FIRST_BOOT,
    PASSWORD,
    PASSWORD_HASH,
    FakeMachine,
    ScriptedUI,
)

# The imager writes both files from one configuration: an edit changes both.
EDITED_TOML = IMAGER_TOML.replace('glm_per_hour = "0.25"', 'glm_per_hour = "0.5"').replace(
    'YA_PAYMENT_NETWORK_GROUP = "testnet"', 'YA_PAYMENT_NETWORK_GROUP = "mainnet"')
EDITED_ENV = IMAGER_ENV.replace("YA_PAYMENT_NETWORK_GROUP=testnet",
                                "YA_PAYMENT_NETWORK_GROUP=mainnet")


def configured_then_edited(machine: FakeMachine, toml: str = EDITED_TOML) -> None:
    """A node configured at an earlier boot, then its stick edited with the imager."""
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    assert machine.layout.conf_saved_config.exists()
    assert machine.layout.conf_password_hash.exists()
    machine.reboot()
    imager_partition(machine, toml, EDITED_ENV)  # reformatted: saved file and hash gone


def test_after_an_edit_the_new_golemwz_toml_is_read_as_a_first_boot_file(
        machine: FakeMachine) -> None:
    configured_then_edited(machine)
    assert main([], machine.services(ScriptedUI())) == 0
    lines = machine.console_lines()
    assert ("golemwz: read first-boot configuration golemwz.toml and golem.env from "
            "Golem conf storage") in lines
    assert not any("read saved configuration" in line for line in lines)
    # The edited values are the ones used, not those of the earlier boot.
    (create,) = machine.runner.matching(*as_golem("ya-provider", "preset", "create"))
    assert f"Duration={duration_price(Decimal('0.5'))}" in create
    env = machine.layout.provider_env_file.read_text()
    assert 'YA_PAYMENT_NETWORK_GROUP="mainnet"' in env and "rig-7" not in env
    saved = tomllib.loads(machine.layout.conf_saved_config.read_text())
    assert saved["glm_per_hour"] == "0.5" and "glm_node_name" not in saved
    assert not machine.layout.first_boot_config.exists()


def test_a_lost_password_hash_means_a_new_password_shown_and_kept(
        machine: FakeMachine) -> None:
    configured_then_edited(machine)
    ui = ScriptedUI()
    assert main([], machine.services(ui)) == 0
    chpasswd = [c for c in machine.runner.calls if c.argv[0] == "chpasswd"]
    assert [(c.argv, c.input) for c in chpasswd] == [(("chpasswd",),
                                                      f"golem:{PASSWORD}\n".encode())]
    assert not any("password restored" in line for line in machine.console_lines())
    # Unattended: the new password is on the final screen, and only then kept.
    (final,) = [text for kind, title, text in ui.shown if kind == "info"
                and title.startswith("GOLEM provider wizard")]
    assert PASSWORD in final and "generated at this boot" in final
    assert machine.layout.conf_password_hash.read_text() == PASSWORD_HASH + "\n"
    # And at the boot after that it is restored, not generated again.
    machine.reboot()
    assert main([], machine.services(ScriptedUI())) == 0
    assert "golemwz: password restored from Golem conf storage" in machine.console_lines()


def test_an_interactive_edit_shows_the_new_password_in_a_message(
        machine: FakeMachine) -> None:
    configured_then_edited(machine, EDITED_TOML.replace("non_interactive_install = true",
                                                        "non_interactive_install = false"))
    ui = ScriptedUI(["9b06e23f-74bb-4c49-b83d-d3b0c0c2bb01", "0", ["0000:01:00.0"]])
    assert main([], machine.services(ui)) == 0
    assert sum(PASSWORD in text for text in ui.texts("message")) == 1


def test_only_the_hash_lost_with_the_saved_file_kept_still_gives_a_shown_password(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    machine.reboot()
    machine.layout.conf_password_hash.unlink()
    ui = ScriptedUI()
    assert main([], machine.services(ui)) == 0
    assert any(PASSWORD in text for text in ui.texts("info"))
    assert machine.layout.conf_password_hash.read_text() == PASSWORD_HASH + "\n"


# -- item 6: legacy BIOS (upstream golem-gpu-live rootfs/golemwz.py run(), their #29) ---

def test_legacy_bios_is_told_by_the_missing_efi_directory(tmp_path: Path) -> None:
    assert legacy_bios_boot(tmp_path) is True
    (tmp_path / "firmware/efi").mkdir(parents=True)
    assert legacy_bios_boot(tmp_path) is False


@pytest.mark.parametrize("unattended", [True, False])
def test_a_legacy_bios_boot_is_warned_about_on_screen_and_in_the_log(
        tmp_path: Path, unattended: bool) -> None:
    machine = FakeMachine(tmp_path, uefi=False)
    text = FULL_FIRST_BOOT if unattended else FULL_FIRST_BOOT.replace(
        'gpu_pci_slot = "auto"\n', "")
    machine.write_first_boot(text.replace("non_interactive_install = true",
                                          "non_interactive_install = false"))
    ui = ScriptedUI([] if unattended else [["0000:01:00.0"]])
    assert main([], machine.services(ui)) == 0
    warnings = [line for line in machine.console_lines() if "legacy BIOS" in line]
    assert len(warnings) == 1 and warnings[0].startswith("golemwz: warning: ")
    assert "UEFI" in warnings[0]
    assert "legacy BIOS mode" in machine.log_text()
    # Before the terms; a message to acknowledge only when questions are asked anyway.
    kind, title, _text = ui.shown[0]
    assert title == "Legacy BIOS"
    assert kind == ("info" if unattended else "message")


def test_a_uefi_boot_says_nothing_about_it(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    ui = ScriptedUI()
    assert main([], machine.services(ui)) == 0
    assert not any("legacy BIOS" in line for line in machine.console_lines())
    assert not any(title == "Legacy BIOS" for _kind, title, _text in ui.shown)


# -- item 6: the terms tag of GOLEM's installer (join.golem.network as-provider) ------

def test_accepted_terms_leave_the_installers_tag(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    tag = str(machine.layout.local_dir / "share/ya-installer/terms/testnet-01.tag")
    assert as_golem("touch", tag) in machine.runner.argvs


def test_declined_terms_leave_no_tag(machine: FakeMachine) -> None:
    assert main([], machine.services(ScriptedUI([False]))) == 1
    assert not any("ya-installer" in " ".join(argv) for argv in machine.runner.argvs)
