"""The systemd units and notes of the overlay agree with what the wizard does at boot.

The wizard cannot import the builder, nor the builder the wizard's runtime: the
names both sides use (units, paths, flags) are checked here, on the unit files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from golemwz.cli import build_parser
from golemwz.layout import LOGIN_SERVICE, PROVIDER_SERVICE, SystemLayout

UNITS = Path(__file__).resolve().parents[2] / "rootfs/overlay/common/etc/systemd/system"


def unit_text(name: str) -> str:
    plain = UNITS / name
    return (plain if plain.exists() else UNITS / f"{name}.j2").read_text()


def settings(text: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, re.MULTILINE)


def test_the_wizard_owns_tty1_and_tells_systemd_when_it_is_done() -> None:
    unit = unit_text("golemwz.service")
    assert settings(unit, "TTYPath") == ["/dev/tty1"]
    assert settings(unit, "Type") == ["notify"]
    assert settings(unit, "StandardInput") == ["tty"]
    exec_start = settings(unit, "ExecStart")[0].split()
    assert "--at-boot" in exec_start and "--log-to-console" in exec_start
    build_parser().parse_args(exec_start[1:])  # flags the wizard knows
    assert settings(unit, "OnFailure") == ["golem-autologin.service"]
    # A Conflicts= with a getty would let that getty stop the wizard.
    assert not settings(unit, "Conflicts")


def test_no_getty_can_start_on_tty1_while_the_wizard_runs() -> None:
    for masked in ("getty@tty1.service", "autovt@tty1.service"):
        path = UNITS / masked
        assert path.is_symlink() and os.readlink(path) == "/dev/null", masked


def test_after_success_the_login_the_wizard_starts_takes_tty1_and_clears_it() -> None:
    unit = unit_text(LOGIN_SERVICE)
    assert settings(unit, "TTYPath") == ["/dev/tty1"]
    agetty = settings(unit, "ExecStart")[0]
    assert "tty1" in agetty and "--noclear" not in agetty  # the password must go
    assert "--autologin" not in agetty


def test_the_provider_starts_only_after_a_successful_run() -> None:
    provider = unit_text(PROVIDER_SERVICE)
    assert f"ConditionPathExists={SystemLayout().provider_ready_marker}" in provider


def test_the_motd_note_is_where_pam_motd_reads_and_the_issue_note_where_agetty_does() -> None:
    layout = SystemLayout()
    assert layout.motd_notice.parent == Path("/run/motd.d")  # pam_motd's motd_dir
    assert layout.issue_notice.parent == Path("/etc/issue.d")
    assert layout.issue_notice.suffix == ".issue"  # agetty reads only *.issue there
