"""The generated password survives reboots: its crypt hash is kept on `Golem conf storage`.

/etc/shadow is in RAM on the live system; `machine.reboot()` resets the fake one to
an account without a password, as a real boot does. The plain password is never stored.
"""

from __future__ import annotations

import os

import pytest
from golemwz import confstore
from golemwz.accounts import is_crypt_hash, read_password_hash, restore_password_hash
from golemwz.cli import main
from golemwz.layout import GOLEM_STORAGE_PARTUUID
from wizard_fakes import (
    ACCOUNT,
    FULL_FIRST_BOOT,
    PASSWORD,
    PASSWORD_HASH,
    FakeMachine,
    RecordingRunner,
    ScriptedUI,
    image_partitions,
    lsblk_json,
)

RESTORED = "golemwz: password restored from Golem conf storage"


def everything_logged(machine: FakeMachine) -> str:
    """Log, console and every command line: where neither password nor hash may appear."""
    argvs = "\n".join(" ".join(argv) for argv in machine.runner.argvs)
    console = machine.console.read_text() if machine.console.exists() else ""
    return "\n".join([machine.log_text(), console, argvs])


def chpasswd_calls(machine: FakeMachine) -> list[tuple[tuple[str, ...], bytes | None]]:
    return [(c.argv, c.input) for c in machine.runner.calls if c.argv[0] == "chpasswd"]


def test_generated_password_hash_is_saved_on_the_conf_partition_and_never_logged(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main(["--debug"], machine.services(ScriptedUI())) == 0
    saved = machine.layout.conf_password_hash
    assert saved == machine.layout.conf_mount_dir / "golemwz-password.hash"
    assert saved.read_text() == PASSWORD_HASH + "\n"  # read back from the fake /etc/shadow
    assert saved.stat().st_mode & 0o777 == 0o600
    assert chpasswd_calls(machine) == [(("chpasswd",), f"golem:{PASSWORD}\n".encode())]
    logged = everything_logged(machine)
    assert PASSWORD_HASH not in logged and PASSWORD not in logged
    assert PASSWORD not in saved.read_text()
    assert f"golemwz: password hash saved to {saved} on Golem conf storage" in logged
    assert not [name for name in os.listdir(saved.parent) if name.startswith(".golemwz-")]


def test_after_a_reboot_the_password_is_restored_from_its_hash_not_generated_again(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    machine.reboot()  # fresh home and /etc/shadow; the conf partition stays
    assert "golem:!:" in machine.layout.shadow_file.read_text()
    ui = ScriptedUI()
    services = machine.services(ui)

    def no_new_password() -> str:
        raise AssertionError("a new password was generated")

    object.__setattr__(services, "new_password", no_new_password)
    assert main([], services) == 0
    # The hash on standard input only, never on the command line.
    assert chpasswd_calls(machine) == [(("chpasswd", "--encrypted"),
                                        f"golem:{PASSWORD_HASH}\n".encode())]
    assert read_password_hash(machine.layout.shadow_file, "golem") == PASSWORD_HASH
    logged = everything_logged(machine)
    assert RESTORED in machine.console_lines()
    assert PASSWORD_HASH not in logged
    assert "generated a password" not in logged
    assert not any(PASSWORD in text for _kind, _title, text in ui.shown)  # nothing to show
    assert machine.layout.conf_password_hash.read_text() == PASSWORD_HASH + "\n"


@pytest.mark.parametrize("content", [
    "hunter2",  # a plain password someone put there
    "!",  # a locked account
    "",
    "$y$j9T$salt:0:0\nroot:$6$rounds=5000$abcdefgh$ijklmnop",  # a second chpasswd line
])
def test_a_malformed_hash_file_is_ignored_with_one_warning_and_a_password_generated(
        machine: FakeMachine, content: str) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    machine.layout.conf_password_hash.write_text(content + "\n")
    assert main([], machine.services(ScriptedUI())) == 0
    warnings = [line for line in machine.console_lines() if "not a crypt hash" in line]
    assert warnings == [f"golemwz: warning: {machine.layout.conf_password_hash} is not a "
                        "crypt hash ($id$...): ignored; a new password is generated"]
    assert chpasswd_calls(machine) == [(("chpasswd",), f"golem:{PASSWORD}\n".encode())]
    assert RESTORED not in machine.console_lines()
    if content:
        assert content not in everything_logged(machine)
    assert machine.layout.conf_password_hash.read_text() == PASSWORD_HASH + "\n"


def test_without_conf_partition_a_password_is_generated_as_before(
        machine: FakeMachine) -> None:
    partitions = [p for p in image_partitions() if p["partlabel"] != "Golem conf storage"]
    machine.runner.responses[("lsblk",)] = (0, lsblk_json(*partitions))
    # Left over in the directory, but no partition is mounted there: never read.
    machine.layout.conf_mount_dir.mkdir(parents=True)
    machine.layout.conf_password_hash.write_text(PASSWORD_HASH + "\n")
    ui = ScriptedUI([True, GOLEM_STORAGE_PARTUUID, ACCOUNT, "0.25", "0", ["0000:01:00.0"]])
    assert main([], machine.services(ui)) == 0
    assert chpasswd_calls(machine) == [(("chpasswd",), f"golem:{PASSWORD}\n".encode())]
    assert sum(PASSWORD in text for text in ui.texts("message")) == 1
    logged = everything_logged(machine)
    assert RESTORED not in logged
    assert "password hash" not in logged  # neither saved nor a warning about it
    assert machine.layout.conf_password_hash.read_text() == PASSWORD_HASH + "\n"  # untouched
    assert machine.runner.matching("umount") == []
    assert machine.runner.matching("mount", "-o", "remount,ro") == []


def test_a_hash_that_cannot_be_read_back_is_a_warning_and_the_run_goes_on(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    machine.runner.side_effects.clear()  # chpasswd leaves no crypt hash in /etc/shadow
    assert main([], machine.services(ScriptedUI())) == 0
    warnings = [line for line in machine.console_lines() if "password hash" in line]
    assert len(warnings) == 1
    assert "a new password will be generated at the next boot" in warnings[0]
    assert not machine.layout.conf_password_hash.exists()


def test_a_second_run_in_the_same_boot_remounts_the_kept_partition_rw_then_ro(
        machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = str(machine.layout.conf_mount_dir)
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    assert machine.runner.argvs[-1] == ("mount", "-o", "remount,ro", conf_dir)
    machine.runner.calls.clear()
    machine.runner.responses[("mountpoint", "--quiet", conf_dir)] = (0, "")  # still mounted
    monkeypatch.setattr(confstore.os, "access", lambda path, mode: False)  # EROFS
    machine.runner.responses[("passwd", "--status")] = (0, "golem P 2024-01-01 0 99999 7 -1\n")
    assert main([], machine.services(ScriptedUI())) == 0
    conf_mounts = [m for m in machine.runner.matching("mount", "-o") if m[-1] == conf_dir]
    assert conf_mounts == [("mount", "-o", "remount,rw,noexec,nosuid,nodev", conf_dir),
                           ("mount", "-o", "remount,ro", conf_dir)]
    assert machine.runner.matching("umount") == []


@pytest.mark.parametrize("text,expected", [
    (PASSWORD_HASH, True),
    ("$6$rounds=5000$abcdefgh$" + "x" * 86, True),
    ("$2b$12$" + "a" * 53, True),
    ("!", False), ("*", False), ("", False), ("!" + PASSWORD_HASH, False),
    (PASSWORD_HASH + ":0", False), (PASSWORD_HASH + "\nroot:x", False), ("$6$ab cdefghij", False),
])
def test_crypt_hash_format(text: str, expected: bool) -> None:
    assert is_crypt_hash(text) is expected


def test_restoring_refuses_a_malformed_hash_without_running_anything() -> None:
    runner = RecordingRunner()
    with pytest.raises(ValueError) as raised:
        restore_password_hash(runner, "golem", "x\nroot:" + PASSWORD_HASH)
    assert PASSWORD_HASH not in str(raised.value)
    assert runner.calls == []
