"""The whole wizard against a fake machine: steps, precedence, exits, console lines."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from golemwz import confstore
from golemwz.cli import main
from golemwz.config import save_atomically
from golemwz.layout import GOLEM_STORAGE_PARTUUID
from wizard_fakes import ACCOUNT, FULL_FIRST_BOOT, PASSWORD, FakeMachine, ScriptedUI

RTX_FUNCTIONS = ["0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3"]


def saved(machine: FakeMachine) -> dict[str, object]:
    return tomllib.loads(machine.layout.saved_config.read_text())


def programs(machine: FakeMachine) -> list[str]:
    """Each command's program, with runuser's target program instead of runuser."""
    names = []
    for argv in machine.runner.argvs:
        names.append(" ".join(argv[4:6]) if argv[0] == "runuser" else argv[0])
    return names


def test_complete_first_boot_file_runs_all_steps_without_a_question(
        machine: FakeMachine) -> None:
    first_boot = machine.write_first_boot(FULL_FIRST_BOOT)
    ui = ScriptedUI()  # no answers: any question fails the test
    assert main([], machine.services(ui)) == 0
    order = programs(machine)
    expected_order = ["lsblk", "mount", "sfdisk", "resize2fs", "mount", "chpasswd", "nm-online",
                      "golemsp setup", "ya-provider preset", "modprobe", "systemctl", "mount"]
    positions = [order.index(p, order.index(expected_order[i - 1]) if i else 0)
                 for i, p in enumerate(expected_order)]
    assert positions == sorted(positions), order
    assert machine.runner.matching("systemctl") == [
        ("systemctl", "start", "--no-block", "golem-provider.service")]
    assert not first_boot.exists()
    config = saved(machine)
    assert config["glm_account"] == ACCOUNT
    assert config["storage_partition"] == GOLEM_STORAGE_PARTUUID
    assert config["gpu_pci_slot"] == "auto"
    assert config["env"] == {"SUBNET": "public", "YA_NET_TYPE": "hybrid"}
    console = "\n".join(machine.console_lines())
    for expected in ("golemwz: read first-boot configuration", "golemwz: storage configured",
                     "golemwz: grew Golem storage", "golemwz: selected GPU 0000:01:00.0",
                     "golemwz: attached to vfio-pci: " + ", ".join(RTX_FUNCTIONS),
                     "golemwz: started golem-provider.service"):
        assert expected in console
    assert ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx ops@example"
            in machine.layout.authorized_keys.read_text())
    assert 'YA_NET_TYPE="hybrid"' in machine.layout.provider_env_file.read_text()
    assert not any("framebuffer" in path for path, _ in machine.kernel.writes)


def test_password_reaches_chpasswd_stdin_and_the_screen_only(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    ui = ScriptedUI()
    assert main(["--debug"], machine.services(ui)) == 0
    chpasswd = [c for c in machine.runner.calls if c.argv[0] == "chpasswd"]
    assert [c.input for c in chpasswd] == [f"golem:{PASSWORD}\n".encode()]
    assert all(PASSWORD not in " ".join(argv) for argv in machine.runner.argvs)
    assert PASSWORD not in machine.log_text()
    assert PASSWORD not in machine.console.read_text()
    # Unattended: shown once, on the final screen, which stays until a key.
    assert [PASSWORD in text for text in ui.texts("info")][-1:] == [True]
    assert sum(PASSWORD in text for _kind, _title, text in ui.shown) == 1


def test_a_password_set_before_is_kept(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    machine.runner.responses[("passwd", "--status")] = (0, "golem P 2024-01-01 0 99999 7 -1\n")
    assert main([], machine.services(ScriptedUI())) == 0
    assert machine.runner.matching("chpasswd") == []


def test_interactive_run_asks_each_missing_value_and_asks_again_on_bad_input(
        machine: FakeMachine) -> None:
    ui = ScriptedUI([
        True,                    # terms of use
        GOLEM_STORAGE_PARTUUID,  # storage
        "0x1234",                # a bad account...
        ACCOUNT,                 # ...asked again
        "0.25", "0",             # GLM per hour, initial price
        ["0000:01:00.0"],        # GPU
    ])
    assert main([], machine.services(ui)) == 0
    assert ui.answers == []
    assert any("glm_account = '0x1234'" in text for text in ui.texts("message"))
    # Someone is answering questions: the password waits until it has been read,
    # and the final screen shows it once more.
    assert sum(PASSWORD in text for text in ui.texts("message")) == 1
    assert [PASSWORD in text for text in ui.texts("info")] == \
        [False] * (len(ui.texts("info")) - 1) + [True]
    config = saved(machine)
    assert config["gpu_pci_slot"] == ["0000:01:00.0"]
    assert config["glm_per_hour"] == "0.25"
    assert config["accepted_terms"] is True


def test_declined_terms_stop_with_status_1(machine: FakeMachine) -> None:
    ui = ScriptedUI([False])
    assert main([], machine.services(ui)) == 1
    assert "golemwz: error: the terms of use were not accepted" in machine.console_lines()[-1]
    assert machine.runner.matching("mount", "/dev/sda5") == []  # storage untouched
    assert not machine.layout.saved_config.exists()


def test_bad_value_non_interactive_exits_2_with_one_clear_line(
        machine: FakeMachine, capsys: pytest.CaptureFixture[str]) -> None:
    first_boot = machine.write_first_boot(FULL_FIRST_BOOT.replace('"0.36"', '"-1"'))
    assert main([], machine.services(ScriptedUI())) == 2
    last = machine.console_lines()[-1]
    assert "glm_per_hour = '-1' is not a non-negative number" in last
    assert "Traceback" not in machine.log_text() + capsys.readouterr().err
    assert first_boot.exists()
    assert machine.runner.matching("chpasswd") == []


def test_bad_value_interactive_is_shown_and_asked_again(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT.replace("non_interactive_install = true", "")
                             .replace(ACCOUNT, "0xnope"))
    ui = ScriptedUI([ACCOUNT])
    assert main([], machine.services(ui)) == 0
    assert "glm_account = '0xnope'" in ui.texts("message")[0]
    assert saved(machine)["glm_account"] == ACCOUNT
    assert saved(machine)["glm_per_hour"] == "0.36"  # the rest of the file was kept


def test_malformed_first_boot_file_exits_2_naming_the_line(machine: FakeMachine) -> None:
    machine.write_first_boot("accepted_terms = yes\n")
    assert main([], machine.services(ScriptedUI())) == 2
    assert "is not valid TOML" in machine.console_lines()[-1]
    assert "line 1" in machine.console_lines()[-1]


def test_bad_flag_value_exits_2(machine: FakeMachine, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--gpu-pci-slot", "first"], machine.services(ScriptedUI())) == 2
    err = capsys.readouterr().err
    assert "gpu_pci_slot: 'first' is not a PCI address" in err
    assert machine.runner.argvs == []


def test_saved_configuration_wins_and_a_later_first_boot_file_is_ignored(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    later = machine.write_first_boot(FULL_FIRST_BOOT.replace('"0.36"', '"9"'))
    machine.runner.calls.clear()
    assert main(["--init-price", "0.5"], machine.services(ScriptedUI())) == 0
    assert later.exists()
    config = saved(machine)
    assert config["glm_per_hour"] == "0.36"
    assert config["init_price"] == "0.5"  # the flag wins over the saved file
    create = machine.runner.matching("runuser", "-u", "golem", "--", "ya-provider", "preset",
                                     "create")
    assert "Init price=0.5" in create[0]
    assert "Duration=0.0001" in create[0]  # 0.36 GLM per hour / 3600


def test_failed_save_keeps_the_first_boot_file(machine: FakeMachine,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first_boot = machine.write_first_boot(FULL_FIRST_BOOT)

    def crash_before_rename(temporary: str, final: Path) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(confstore, "save_atomically",
                        lambda settings, path: save_atomically(settings, path,
                                                               rename=crash_before_rename))
    assert main([], machine.services(ScriptedUI())) == 1
    assert first_boot.exists()
    assert "cannot save" in machine.console_lines()[-1]
    assert not machine.layout.saved_config.exists()
    assert machine.runner.matching("systemctl") == []


def test_no_gpu_reports_no_compatible_gpu_and_exits_1(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path, golem=False, gpu=False)
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main(["--log-to-console"], machine.services(ScriptedUI())) == 1
    console = machine.console_lines()
    assert any(line.startswith("golemwz: GOLEM provider packages are not installed")
               for line in console)
    assert any(line.startswith("golemwz: no compatible GPU: this machine has no NVIDIA GPU")
               for line in console)
    assert any(line.startswith("golemwz: grew Golem storage") for line in console)
    assert machine.runner.matching("runuser") == []


def test_gpu_node_profile_skips_provider_steps_and_succeeds(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path, golem=False)
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    assert machine.runner.matching("runuser") == []
    assert machine.runner.matching("systemctl") == []
    assert machine.runner.matching("modprobe") == [("modprobe", "vfio-pci")]


def test_storage_only_mounts_storage_and_does_nothing_else(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main(["--storage-only"], machine.services(ScriptedUI())) == 0
    assert set(programs(machine)) <= {"lsblk", "mountpoint", "mount", "sfdisk", "partx",
                                      "udevadm", "dumpe2fs", "blockdev", "e2fsck",
                                      "resize2fs", "chown", "umount"}
    # Only the conf partition, mounted to read golemwz.toml, is unmounted; storage stays.
    assert machine.runner.matching("umount") == [("umount", str(machine.layout.conf_mount_dir))]
    assert ("mount", "--bind", str(machine.layout.storage_mount_dir / "golem-gpu-live"),
            str(machine.layout.local_dir)) in machine.runner.argvs


def test_no_passthrough_and_no_save(machine: FakeMachine) -> None:
    first_boot = machine.write_first_boot(FULL_FIRST_BOOT)
    assert main(["--no-passthrough", "--no-save"], machine.services(ScriptedUI())) == 0
    assert machine.runner.matching("modprobe") == []
    assert machine.kernel.writes == []
    assert not machine.layout.saved_config.exists()
    assert first_boot.exists()


def test_boot_vga_gpu_releases_the_console_framebuffer_first(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path, boot_vga=True)
    vtcon = machine.layout.sysfs_root / "class/vtconsole/vtcon1"
    vtcon.mkdir(parents=True)
    (vtcon / "name").write_text("(M) frame buffer device\n")
    efifb = machine.layout.sysfs_root / "bus/platform/drivers/efi-framebuffer"
    (efifb / "efi-framebuffer.0").mkdir(parents=True)
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    written = [path for path, _value in machine.kernel.writes]
    assert written[:2] == ["class/vtconsole/vtcon1/bind",
                           "bus/platform/drivers/efi-framebuffer/unbind"]
    assert "bus/pci/devices/0000:01:00.0/driver_override" in written[2:]


def test_saved_gpu_that_is_gone_is_rejected_non_interactive(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT.replace('"auto"', '["0000:02:00.0"]'))
    assert main([], machine.services(ScriptedUI())) == 2
    assert "gpu_pci_slot: 0000:02:00.0 is not a usable GPU here" in machine.console_lines()[-1]


def test_complete_configuration_without_non_interactive_flag_never_waits(
        tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path, gpu=False)
    machine.write_first_boot(FULL_FIRST_BOOT.replace("non_interactive_install = true", ""))
    ui = ScriptedUI()
    assert main([], machine.services(ui)) == 1  # no GPU in this machine
    assert ui.texts("message") == []  # a message box would block the boot unit
    assert PASSWORD in ui.texts("info")[-1]
    assert "no compatible GPU" in ui.texts("info")[-1]


def test_shared_group_needs_insecure(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path)
    machine.sysfs.add("0000:00:14.0", vendor=0x8086, cls=0x0C0330, group=1, driver="xhci_hcd")
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 1
    assert "none is isolated" in "\n".join(machine.console_lines())
    machine.runner.calls.clear()
    assert main(["--insecure"], machine.services(ScriptedUI())) == 0
    console = "\n".join(machine.console_lines())
    assert "golemwz: warning: --insecure: using 0000:01:00.0" in console
    assert "0000:00:14.0" in console.split("attached to vfio-pci: ")[-1]


def test_network_progress_and_addresses_to_ssh_to(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    ui = ScriptedUI()
    assert main([], machine.services(ui)) == 0
    assert ui.texts("progress")[-1] == "100"
    network_info = [text for kind, title, text in ui.shown if title == "Network" and
                    kind == "info"]
    assert network_info == ["Connect with: ssh golem@ADDRESS\n\n192.168.1.20"]  # no fe80::


def test_no_network_is_a_warning_and_the_wizard_goes_on(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    machine.runner.responses[("nm-online",)] = (1, "")
    ui = ScriptedUI()
    assert main([], machine.services(ui)) == 0
    assert len(machine.runner.matching("nm-online")) == 12
    assert [int(p) for p in ui.texts("progress")] == sorted(int(p) for p in ui.texts("progress"))
    assert any("golemwz: warning: NetworkManager reports no connection" in line
               for line in machine.console_lines())
