"""The saved configuration survives a reboot: it lives on `Golem conf storage`.

The fake machine's conf_mount_dir stands for the FAT partition (the mount itself
is a recorded command); `machine.reboot()` wipes what the live system keeps in RAM.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from golemwz.cli import main
from golemwz.confstore import CONF_MOUNT_OPTIONS
from golemwz.layout import GOLEM_STORAGE_PARTUUID
from wizard_fakes import (
    ACCOUNT,
    FULL_FIRST_BOOT,
    FakeMachine,
    ScriptedUI,
    image_partitions,
    lsblk_json,
)

CONF_DEVICE = "/dev/sda3"


def console(machine: FakeMachine) -> str:
    return "\n".join(machine.console_lines())


def without_conf_partition(machine: FakeMachine) -> None:
    """Booted from the ISO: no `Golem conf storage` partition."""
    partitions = [p for p in image_partitions() if p["partlabel"] != "Golem conf storage"]
    machine.runner.responses[("lsblk",)] = (0, lsblk_json(*partitions))


def test_saved_file_is_on_the_conf_partition_and_home_links_to_it(
        machine: FakeMachine) -> None:
    first_boot = machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    layout = machine.layout
    on_partition = layout.conf_mount_dir / "golemwz-saved.toml"
    assert tomllib.loads(on_partition.read_text())["glm_account"] == ACCOUNT
    assert layout.saved_config.is_symlink()
    assert Path(os.readlink(layout.saved_config)) == on_partition
    assert on_partition.stat().st_mode & 0o777 == 0o600
    assert not first_boot.exists()
    assert sorted(os.listdir(layout.conf_mount_dir)) == [  # no temporary
        "golemwz-partition-table.sfdisk", "golemwz-password.hash", "golemwz-saved.toml"]
    mounts = [m for m in machine.runner.matching("mount", "-o")
              if m[-1] == str(layout.conf_mount_dir)]
    assert mounts[0] == ("mount", "-o", CONF_MOUNT_OPTIONS, CONF_DEVICE,
                         str(layout.conf_mount_dir))
    assert len(mounts) == 2  # and the remount below
    assert "uid=golem" in CONF_MOUNT_OPTIONS and "umask=0077" in CONF_MOUNT_OPTIONS
    # Mounted for the whole run; after success left mounted read-only, so the link
    # resolves: the very last command.
    assert machine.runner.argvs[-1] == ("mount", "-o", "remount,ro", str(layout.conf_mount_dir))
    assert machine.runner.matching("umount") == []
    assert f"golemwz: configuration saved to {on_partition}" in console(machine)


def test_after_a_reboot_the_saved_configuration_is_read_and_nothing_is_asked(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main(["--init-price", "0.5"], machine.services(ScriptedUI())) == 0
    machine.reboot()
    assert not machine.layout.saved_config.exists()  # home was in RAM
    later = machine.write_first_boot(FULL_FIRST_BOOT.replace('"0.36"', '"9"'))
    assert main([], machine.services(ScriptedUI())) == 0  # no question asked
    text = console(machine)
    on_partition = machine.layout.conf_mount_dir / "golemwz-saved.toml"
    assert f"golemwz: read saved configuration {on_partition}" in text
    assert "read first-boot configuration" not in text
    assert later.exists()  # a later first-boot file is ignored, and left alone
    create = machine.runner.matching("runuser", "-u", "golem", "--", "ya-provider", "preset",
                                     "create")
    assert "Init price=0.5" in create[0]  # the flag of the first boot was saved
    assert "Duration=0.0001" in create[0]  # 0.36 from the first-boot file, not 9
    assert machine.layout.saved_config.is_symlink()  # visible in home again


def test_without_conf_partition_the_file_stays_in_home_and_the_log_says_so_once(
        machine: FakeMachine) -> None:
    without_conf_partition(machine)
    ui = ScriptedUI([True, GOLEM_STORAGE_PARTUUID, ACCOUNT, "0.25", "0", ["0000:01:00.0"]])
    assert main([], machine.services(ui)) == 0
    saved = machine.layout.saved_config
    assert saved.is_file() and not saved.is_symlink()
    assert tomllib.loads(saved.read_text())["glm_account"] == ACCOUNT
    assert ("chown", "golem:golem", str(saved)) in machine.runner.argvs
    warnings = [line for line in machine.console_lines() if "lost at reboot" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("golemwz: warning: no 'Golem conf storage' partition")
    assert "not persistent" in console(machine)
    assert machine.runner.matching("umount") == []
    assert not machine.layout.conf_saved_config.exists()


def test_a_conf_partition_mounted_before_is_used_and_left_mounted(
        machine: FakeMachine) -> None:
    conf_dir = str(machine.layout.conf_mount_dir)
    machine.runner.responses[("mountpoint", "--quiet", conf_dir)] = (0, "")
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    assert [m for m in machine.runner.matching("mount", "-o") if m[-1] == conf_dir] == []
    assert machine.runner.matching("umount") == []
    assert machine.layout.conf_saved_config.exists()


def test_no_gpu_keeps_what_was_configured_and_deletes_the_first_boot_file(
        tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path, golem=False, gpu=False)
    first_boot = machine.write_first_boot(FULL_FIRST_BOOT)
    assert main(["--log-to-console"], machine.services(ScriptedUI())) == 1
    lines = machine.console_lines()
    assert any(line.startswith("golemwz: no compatible GPU") for line in lines)
    assert any("keeping what was configured before the failure" in line for line in lines)
    assert lines[-1].startswith("golemwz: error: no compatible GPU")  # still the error shown
    assert not first_boot.exists()
    saved = tomllib.loads(machine.layout.conf_saved_config.read_text())
    assert saved["storage_partition"] == GOLEM_STORAGE_PARTUUID
    assert saved["accepted_terms"] is True
    assert machine.runner.argvs[-1] == ("umount", str(machine.layout.conf_mount_dir))
    machine.reboot()
    assert main([], machine.services(ScriptedUI())) == 1  # the same failure, no question
    text = console(machine)
    assert "golemwz: read saved configuration" in text
    assert "read first-boot configuration" not in text


def test_interactive_answers_are_kept_when_a_later_step_fails(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path, gpu=False)
    ui = ScriptedUI([True, GOLEM_STORAGE_PARTUUID, ACCOUNT, "0.25", "0"])
    assert main([], machine.services(ui)) == 1
    saved = tomllib.loads(machine.layout.saved_config.read_text())
    assert saved["glm_account"] == ACCOUNT
    assert "gpu_pci_slot" not in saved  # asked again once a GPU is there


def test_bad_value_or_declined_terms_save_nothing(machine: FakeMachine) -> None:
    first_boot = machine.write_first_boot(FULL_FIRST_BOOT.replace('"auto"', '["0000:02:00.0"]'))
    assert main([], machine.services(ScriptedUI())) == 2
    assert first_boot.exists()  # to be fixed by the user
    assert not machine.layout.conf_saved_config.exists()
    first_boot.unlink()
    assert main([], machine.services(ScriptedUI([False]))) == 1
    assert not machine.layout.conf_saved_config.exists()
    assert not machine.layout.saved_config.exists()


def test_failed_save_is_not_retried_and_the_conf_partition_is_unmounted(
        machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    from golemwz import confstore

    attempts: list[Path] = []

    def full_disk(settings: object, path: Path) -> None:
        attempts.append(path)
        raise OSError("No space left on device")

    monkeypatch.setattr(confstore, "save_atomically", full_disk)
    first_boot = machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 1
    assert attempts == [machine.layout.conf_saved_config]
    assert first_boot.exists()
    assert machine.runner.argvs[-1] == ("umount", str(machine.layout.conf_mount_dir))


def test_a_plain_home_file_of_this_session_is_read_then_moved_to_the_partition(
        machine: FakeMachine) -> None:
    machine.layout.saved_config.write_text(FULL_FIRST_BOOT.replace('"0.36"', '"0.42"'))
    machine.layout.conf_mount_dir.mkdir(parents=True)
    assert main([], machine.services(ScriptedUI())) == 0
    assert machine.layout.saved_config.is_symlink()
    saved = tomllib.loads(machine.layout.conf_saved_config.read_text())
    assert saved["glm_per_hour"] == "0.42"

