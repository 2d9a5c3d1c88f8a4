"""The final screen: what it says, when the password hash is kept, how the boot VT is held.

FakeScreen stands in for the boot VT (boot_console.BootScreen): it records sd_notify
states, waits and clears, and answers key waits from a script.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golemwz import final_screen
from golemwz.cli import main
from golemwz.errors import WizardError
from golemwz.layout import GOLEM_STORAGE_PARTUUID
from golemwz.wizard import FRAMEBUFFER_DEADLINE_SECONDS
from wizard_fakes import (
    ACCOUNT,
    FULL_FIRST_BOOT,
    PASSWORD,
    FakeMachine,
    FakeScreen,
    ScriptedUI,
    image_partitions,
    lsblk_json,
)

FINAL_TITLE = "GOLEM provider wizard: "


class WatchingUI(ScriptedUI):
    """Notes, whenever the final screen is drawn, whether the password hash exists yet."""

    def __init__(self, machine: FakeMachine, answers: list[object] | None = None) -> None:
        super().__init__(answers or [])
        self.machine = machine
        self.hash_existed_at_final: list[bool] = []

    def info(self, title: str, text: str) -> None:
        if title.startswith(FINAL_TITLE):
            self.hash_existed_at_final.append(self.machine.layout.conf_password_hash.exists())
        super().info(title, text)

    def finals(self) -> list[tuple[str, str]]:
        return [(title, text) for kind, title, text in self.shown
                if kind == "info" and title.startswith(FINAL_TITLE)]


def no_gpu_machine(tmp_path: Path) -> FakeMachine:
    machine = FakeMachine(tmp_path, golem=False, gpu=False)
    machine.write_first_boot(FULL_FIRST_BOOT)
    return machine


def test_unattended_success_shows_password_node_addresses_and_what_was_configured(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    ui = WatchingUI(machine)
    assert main([], machine.services(ui)) == 0
    [(title, text)] = ui.finals()
    assert title == "GOLEM provider wizard: done"
    assert "The GOLEM provider is configured and started." in text
    assert f"\n    {PASSWORD}\n" in text and "generated at this boot" in text
    assert "Node name: rig-7" in text
    assert "ssh golem@192.168.1.20" in text and "fe80" not in text
    for item in ("  - storage /dev/sda5 Golem storage (ext4", "  - GPU 0000:01:00.0",
                 "  - SSH keys: 1 added", "  - configuration saved on Golem conf storage",
                 "  - golem-provider.service started"):
        assert item in text, text
    assert "Error" not in text
    assert "~golem/golemwz.log" in text
    assert "Press any key" not in text  # not at boot: nothing waits
    assert ui.hash_existed_at_final == [False]  # kept only once it was on screen
    assert machine.layout.conf_password_hash.exists()


def test_unattended_failure_shows_the_error_its_fix_and_the_password(tmp_path: Path) -> None:
    machine = no_gpu_machine(tmp_path)
    ui = WatchingUI(machine)
    assert main([], machine.services(ui)) == 1
    [(title, text)] = ui.finals()
    assert title == "GOLEM provider wizard: FAILED"
    assert "Error: no compatible GPU: this machine has no NVIDIA GPU" in text
    assert "Fix:   install an NVIDIA card; `golemwz gpus` shows what the wizard sees" in text
    assert PASSWORD in text
    assert "Configured before the error:\n  - storage /dev/sda5 Golem storage" in text
    assert "Node name: rig-7" in text
    assert ui.hash_existed_at_final == [False]
    assert machine.layout.conf_password_hash.exists()  # it was shown: kept for the next boot
    # The hash is kept after the screen was drawn; the error is the run's last line.
    lines = machine.console_lines()
    shown = next(i for i, line in enumerate(lines) if "final screen shown" in line)
    kept = next(i for i, line in enumerate(lines) if "password hash saved" in line)
    assert shown < kept
    assert lines[-1].startswith("golemwz: error: no compatible GPU")


def test_a_failure_leaves_the_error_in_the_motd_and_a_success_clears_it(
        tmp_path: Path) -> None:
    machine = no_gpu_machine(tmp_path)
    assert main([], machine.services(ScriptedUI())) == 1
    motd = machine.layout.motd_notice.read_text()
    assert "no compatible GPU: this machine has no NVIDIA GPU (VGA or 3D controller) — " \
           "install an NVIDIA card" in motd
    assert "~golem/golemwz.log" in motd
    assert not machine.layout.issue_notice.exists()
    assert PASSWORD not in motd
    # A later run in the same boot succeeds (a card was found): the note goes.
    machine.sysfs.add_rtx_card(group=2, bus="02")
    assert main([], machine.services(ScriptedUI())) == 0
    assert not machine.layout.motd_notice.exists()
    issue = machine.layout.issue_notice.read_text()
    assert "node configured by golemwz" in issue and "ssh golem@\\4" in issue
    assert PASSWORD not in issue


def test_a_config_error_before_any_step_still_reaches_screen_and_motd(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT.replace('"0.36"', '"-1"'))
    ui = WatchingUI(machine)
    assert main([], machine.services(ui)) == 2
    [(title, text)] = ui.finals()
    assert text.startswith("Error: ") and "glm_per_hour = '-1'" in text.splitlines()[0]
    assert "glm_per_hour = '-1'" in machine.layout.motd_notice.read_text()


def test_interrupted_before_the_final_screen_the_password_is_not_kept(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)

    def power_cut(_argv: tuple[str, ...]) -> None:
        raise KeyboardInterrupt  # the run stops between chpasswd and the final screen

    machine.runner.side_effects[("nm-online",)] = power_cut
    assert main([], machine.services(ScriptedUI())) == 130
    assert not machine.layout.conf_password_hash.exists()
    machine.reboot()
    del machine.runner.side_effects[("nm-online",)]
    ui = ScriptedUI()
    assert main([], machine.services(ui)) == 0
    chpasswd = [c.argv for c in machine.runner.calls if c.argv[0] == "chpasswd"]
    assert chpasswd == [("chpasswd",)]  # a new password, not a restored hash
    assert PASSWORD in ui.texts("info")[-1]


def test_a_final_screen_that_cannot_be_drawn_keeps_no_password(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)

    class BrokenScreenUI(ScriptedUI):
        def info(self, title: str, text: str) -> None:
            if title.startswith(FINAL_TITLE):
                raise OSError("dialog: cannot open the terminal")
            super().info(title, text)

    assert main([], machine.services(BrokenScreenUI())) == 0
    assert not machine.layout.conf_password_hash.exists()
    assert any("the new password could not be shown: it is not kept" in line
               for line in machine.console_lines())


def test_interactive_password_is_kept_once_acknowledged_and_shown_again_at_the_end(
        machine: FakeMachine) -> None:
    hash_when_asked_for_account: list[bool] = []

    class NotingUI(WatchingUI):
        def ask_text(self, title: str, text: str, default: str = "") -> str | None:
            if title == "GLM account":
                hash_when_asked_for_account.append(machine.layout.conf_password_hash.exists())
            return super().ask_text(title, text, default)

    ui = NotingUI(machine, [True, GOLEM_STORAGE_PARTUUID, ACCOUNT, "0.25", "0",
                            ["0000:01:00.0"]])
    assert main([], machine.services(ui)) == 0
    assert hash_when_asked_for_account == [True]  # right after the Password message
    assert PASSWORD in ui.finals()[0][1]


def test_restored_password_is_not_shown_and_the_screen_says_so(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    machine.reboot()
    ui = WatchingUI(machine)
    assert main([], machine.services(ui)) == 0
    text = ui.finals()[0][1]
    assert PASSWORD not in text
    assert "Password of user 'golem': the one shown at an earlier boot." in text


def test_storage_is_reported_with_its_grown_size(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    grown = [dict(p, size=31 * 2**30) if p["partlabel"] == "Golem storage" else p
             for p in image_partitions()]
    small = [dict(p, size=100 * 2**20) if p["partlabel"] == "Golem storage" else p
             for p in image_partitions()]
    machine.runner.responses[("lsblk",)] = (0, lsblk_json(*small))

    def grow(_argv: tuple[str, ...]) -> None:
        machine.runner.responses[("lsblk",)] = (0, lsblk_json(*grown))

    machine.runner.side_effects[("resize2fs",)] = grow
    ui = WatchingUI(machine)
    assert main([], machine.services(ui)) == 0
    configured = [line for line in machine.console_lines() if "storage configured" in line]
    assert configured == [f"golemwz: storage configured: /dev/sda5 Golem storage (ext4, 31.0 GiB)"
                          f" on {machine.layout.local_dir}"]
    assert "Golem storage (ext4, 31.0 GiB)" in ui.finals()[0][1]


# --- at boot: the VT held until a key ---------------------------------------------


def test_at_boot_systemd_hears_ready_after_the_screen_then_a_key_then_the_login(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    order: list[str] = []
    screen = FakeScreen([True], on_event=lambda event: order.append(
        f"{event.split()[0]} after {len(machine.runner.calls)} commands"))
    ui = WatchingUI(machine)
    assert main([], machine.services(ui, screen)) == 0
    assert [e.split()[0] for e in screen.events] == ["notify", "wait", "clear"]
    assert screen.events[0].startswith("notify READY=1\nSTATUS=golemwz configured this node")
    assert screen.events[1] == "wait None"  # no deadline: the screen stays until a key
    assert "Press any key when you have read this: the login prompt replaces this screen." \
        in ui.finals()[0][1]
    # The conf partition is left (remounted read-only) before the wait, and the login
    # prompt is started only after the key.
    argvs = machine.runner.argvs
    remount = argvs.index(("mount", "-o", "remount,ro", str(machine.layout.conf_mount_dir)))
    assert order[0] == f"notify after {remount + 1} commands"
    assert argvs[-1] == ("systemctl", "start", "--no-block", "golem-login.service")
    lines = machine.console_lines()
    assert lines.index("golemwz: the final screen stays on tty1 until a key is pressed") \
        < lines.index("golemwz: a key was pressed on tty1")


def test_at_boot_a_failure_waits_for_the_key_and_leaves_tty1_to_the_autologin(
        tmp_path: Path) -> None:
    machine = no_gpu_machine(tmp_path)
    screen = FakeScreen([True])
    ui = WatchingUI(machine)
    assert main([], machine.services(ui, screen)) == 1
    assert screen.events[0].startswith("notify READY=1\nSTATUS=golemwz failed")
    assert screen.events[1:] == ["wait None", "clear"]
    assert machine.runner.matching("systemctl") == []  # OnFailure= starts the autologin
    assert "golem is logged in on tty1 to fix it" in ui.finals()[0][1]
    umount = machine.runner.argvs.index(("umount", str(machine.layout.conf_mount_dir)))
    assert umount == len(machine.runner.argvs) - 1  # unmounted before the wait


def test_not_at_boot_nothing_waits_and_systemd_is_not_told(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    screen = FakeScreen(holds=False)
    assert main([], machine.services(ScriptedUI(), screen)) == 0
    assert screen.events == []
    assert machine.runner.matching("systemctl", "start", "--no-block",
                                   "golem-login.service") == []


def test_the_provider_may_start_only_after_a_successful_run(tmp_path: Path) -> None:
    failed = no_gpu_machine(tmp_path / "failed")
    assert main([], failed.services(ScriptedUI())) == 1
    assert not failed.layout.provider_ready_marker.exists()
    machine = FakeMachine(tmp_path / "ok")
    machine.write_first_boot(FULL_FIRST_BOOT)
    starts: list[bool] = []
    machine.runner.side_effects[("systemctl", "start", "--no-block",
                                 "golem-provider.service")] = \
        lambda _argv: starts.append(machine.layout.provider_ready_marker.exists())
    assert main([], machine.services(ScriptedUI())) == 0
    assert starts == [True]


# --- a single-GPU machine: the screen goes with the GPU ---------------------------


def single_gpu_machine(tmp_path: Path) -> FakeMachine:
    machine = FakeMachine(tmp_path, boot_vga=True)
    vtcon = machine.layout.sysfs_root / "class/vtconsole/vtcon1"
    vtcon.mkdir(parents=True)
    (vtcon / "name").write_text("(M) frame buffer device\n")
    machine.write_first_boot(FULL_FIRST_BOOT)
    return machine


@pytest.mark.parametrize("pressed", [True, False])
def test_single_gpu_final_screen_and_kept_password_come_before_the_framebuffer_goes(
        tmp_path: Path, pressed: bool) -> None:
    machine = single_gpu_machine(tmp_path)
    at_wait: list[tuple[int, bool]] = []
    screen = FakeScreen([pressed], on_event=lambda event: at_wait.append(
        (len(machine.kernel.writes), machine.layout.conf_password_hash.exists()))
        if event.startswith("wait") else None)
    ui = WatchingUI(machine)
    assert main([], machine.services(ui, screen)) == 0
    assert screen.events[0] == f"wait {FRAMEBUFFER_DEADLINE_SECONDS}"
    assert at_wait[0] == (0, True)  # nothing released yet; the shown password is kept
    [(title, text)] = ui.finals()  # drawn once: after the release there is no screen
    assert PASSWORD in text
    assert f"This screen goes dark when a key is pressed or in {FRAMEBUFFER_DEADLINE_SECONDS}" \
        in text
    assert machine.kernel.writes[0][0] == "class/vtconsole/vtcon1/bind"
    # The boot goes on; no second wait on a screen that is dark now.
    assert [e.split()[0] for e in screen.events] == ["wait", "notify"]
    assert machine.runner.argvs[-1] == ("systemctl", "start", "--no-block",
                                        "golem-login.service")
    expected = "a key was pressed" if pressed else "no key pressed before the deadline"
    assert f"golemwz: {expected}" in machine.console_lines()


# --- the text itself ------------------------------------------------------------


def report(**changes: object) -> final_screen.FinalReport:
    values: dict[str, object] = dict(
        error=None, password=PASSWORD, password_note="", node_name="rig-7",
        hostname="golem-gpu-live", addresses=["192.168.1.20", "10.0.2.15", "fd00::1", "x"],
        configured=[f"step number {n} with a longish description of it" for n in range(12)],
        golem=True, holds=True)
    values.update(changes)
    return final_screen.FinalReport(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [None, WizardError("no compatible GPU: this machine has no "
                                                     "NVIDIA GPU (VGA or 3D controller)",
                                                     "install an NVIDIA card")])
def test_the_final_screen_fits_a_vga_text_screen(error: WizardError | None) -> None:
    lines = final_screen.body(report(error=error)).splitlines()
    assert len(lines) <= 25 - 4  # the box's frame and the dialog's back title
    assert "10.0.2.15" in "\n".join(lines) and "fd00::1" in "\n".join(lines)
    assert "ssh golem@x" not in "\n".join(lines)  # at most three addresses
    assert "step number 11" in lines[-4] and "step number 3 " not in "\n".join(lines)


def test_without_node_name_or_address_the_screen_says_what_it_knows() -> None:
    text = final_screen.body(report(node_name=None, addresses=[], golem=False, password=None,
                                    password_note="set before this run, unchanged"))
    assert "Node name: golem-gpu-live (the host name; glm_node_name is not set)" in text
    assert "no IP address yet" in text
    assert "This node is configured (no GOLEM provider packages on this image)." in text
    assert "Password of user 'golem': set before this run, unchanged." in text


def test_notes_for_the_login_never_hold_the_password() -> None:
    failed = WizardError("boom", "fix it")
    assert PASSWORD not in final_screen.motd_text(failed)
    assert "boom — fix it" in final_screen.motd_text(failed)
    assert PASSWORD not in final_screen.issue_text(report())
    assert json.dumps(final_screen.issue_text(report())).count("\\\\4") == 1
