"""The gevulot-node profile's wizard (its spec in rootfs/overlay/gevulot-node) on fake
machines: storage, the persistent /var/lib/gevulot, the GPU and its companion functions
to vfio-pci with `options vfio-pci ids=`, the quadlet drop-in with the GPU's
/dev/vfio/N, the node's environment file and its start; a machine without a GPU."""

from __future__ import annotations

import re
import shutil
import stat
import tomllib
from pathlib import Path

import pytest
from golemwz.check import check_file
from golemwz.cli import main, vfio_bind
from golemwz.errors import WizardError
from golemwz.profile_spec import load_spec, parse_spec
from wizard_fakes import FakeMachine, RecordingRunner, ScriptedUI

OVERLAY = Path(__file__).resolve().parents[2] / "rootfs/overlay/gevulot-node"
SPEC = OVERLAY / "usr/share/golemwz/profile.toml"
EXAMPLE = OVERLAY / "usr/share/golemwz/golemwz-example.toml"
DROPIN = "etc/containers/systemd/gevulot-node.container.d/50-gpu.conf"
FIRST_BOOT = """
non_interactive_install = true
gpu_pci_slot = "auto"
ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx ops@example"]

[profile]
gevulot_psk_passphrase = "network secret 42"
"""


def uncommented(text: str) -> str:
    """A profile's example with its commented settings and tables switched on (the first
    of alternatives)."""
    lines, seen = [], set()
    for line in text.splitlines():
        match = re.fullmatch(r"# (\[[a-z_]+\]|[a-z_]+ = .*)", line)
        if match and match.group(1).split(" = ")[0] not in seen:
            seen.add(match.group(1).split(" = ")[0])
            lines.append(match.group(1))
    return "\n".join(lines)


def gevulot_machine(root: Path, *, gpu: bool = True) -> FakeMachine:
    machine = FakeMachine(root, golem=False, gpu=gpu)
    machine.layout.profile_spec_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SPEC, machine.layout.profile_spec_file)
    return machine


def test_example_documents_every_profile_key_and_passes_the_check(tmp_path: Path) -> None:
    spec = load_spec(SPEC)
    assert spec is not None and spec.name == "gevulot-node"
    first_boot = tmp_path / "golemwz.toml"
    first_boot.write_text(uncommented(EXAMPLE.read_text()) + "\n")
    data = tomllib.loads(first_boot.read_text())
    assert set(data["profile"]) == set(spec.keys)
    assert tomllib.loads(EXAMPLE.read_text()) == {}  # all comments as shipped
    assert check_file(first_boot, spec) == ([], [])


def test_check_knows_the_profile_keys(tmp_path: Path) -> None:
    spec = load_spec(SPEC)
    path = tmp_path / "golemwz.toml"
    path.write_text('[profile]\ngevulot_psk_passphrase = "a\\"; rm -rf /"\n')
    errors, _notes = check_file(path, spec)
    assert [e.key for e in errors] == ["profile.gevulot_psk_passphrase"]
    assert "without quotes" in errors[0].line()
    path.write_text('[profile]\nzfs_pool = "file"\n')
    errors, _notes = check_file(path, spec)
    assert [e.key for e in errors] == ["profile.zfs_pool"]
    assert "unknown key of the gevulot-node profile" in errors[0].line()
    # GOLEM's images have no profile keys: the table is refused there.
    path.write_text('[profile]\ngevulot_psk_passphrase = "x"\n')
    errors, _notes = check_file(path, None)
    assert [e.key for e in errors] == ["profile"]


def test_check_command_reads_the_spec_given(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "golemwz.toml"
    path.write_text('[profile]\ngevulot_psk_passphrase = "fine secret"\n')
    assert main(["check", "--profile", str(SPEC), str(path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_first_boot_binds_the_gpu_group_writes_the_dropin_and_starts_the_node(
        tmp_path: Path) -> None:
    machine = gevulot_machine(tmp_path)
    machine.write_first_boot(FIRST_BOOT)
    ui = ScriptedUI()
    assert main([], machine.services(ui)) == 0  # no terms, no question
    assert ("info", "gevulot-node wizard: done") in [shown[:2] for shown in ui.shown]
    root = machine.layout.root
    assert (root / "etc/modprobe.d/golemwz-vfio-ids.conf").read_text().endswith(
        "options vfio-pci ids=10de:10fa,10de:1ad8,10de:1ad9,10de:2684\n")
    assert (root / "etc/golemwz/vfio-devices").read_text().split() == [
        "0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3"]
    dropin = (root / DROPIN).read_text()
    assert "Environment=GEVULOT_GPU_DEVICES=0000:01:00.0\n" in dropin
    assert "AddDevice=/dev/vfio/1:rw\nAddDevice=/dev/vfio/vfio:rw\n" in dropin
    # The card's USB controller lost its built-in xhci_hcd driver to vfio-pci.
    usb = machine.sysfs.root / "bus/pci/devices/0000:01:00.2/driver"
    assert usb.resolve().name == "vfio-pci"
    env_file = root / "etc/gevulot/node.env"
    assert env_file.read_text() == "GEVULOT_PSK_PASSPHRASE=network secret 42\n"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert (root / "run/golemwz/gevulot-node-configured").exists()
    persistent = machine.layout.storage_mount_dir / "persistent/var/lib/gevulot"
    assert persistent.is_dir()
    assert ("mount", "--bind", str(persistent), str(root / "var/lib/gevulot")) \
        in machine.runner.argvs
    assert ("chown", "gevulot:gevulot", str(persistent)) in machine.runner.argvs
    assert machine.runner.matching("systemctl") == [
        ("systemctl", "daemon-reload"),
        ("systemctl", "start", "--no-block", "gevulot-node.service")]
    assert not machine.runner.matching("golemsp")
    assert "ssh-ed25519" in machine.layout.authorized_keys.read_text()
    console = "\n".join(machine.console_lines())
    assert "golemwz: started gevulot-node.service" in console


def test_a_machine_without_gpu_runs_the_node_without_one(tmp_path: Path) -> None:
    machine = gevulot_machine(tmp_path, gpu=False)
    machine.write_first_boot(FIRST_BOOT.replace('gpu_pci_slot = "auto"\n', ""))
    assert main([], machine.services(ScriptedUI())) == 0
    root = machine.layout.root
    assert not (root / DROPIN).exists()
    assert not (root / "etc/golemwz/vfio-devices").exists()
    assert not machine.runner.matching("modprobe")
    assert "no NVIDIA GPU on this machine" in machine.log_text()
    assert ("systemctl", "start", "--no-block", "gevulot-node.service") in machine.runner.argvs


def test_a_configured_gpu_that_is_missing_is_an_error(tmp_path: Path) -> None:
    machine = gevulot_machine(tmp_path, gpu=False)
    machine.write_first_boot(FIRST_BOOT.replace('"auto"', '"0000:01:00.0"'))
    assert main([], machine.services(ScriptedUI())) == 1
    assert "no compatible GPU" in machine.log_text()
    assert not machine.runner.matching("systemctl", "start")


def test_without_the_passphrase_the_node_is_not_started(tmp_path: Path) -> None:
    machine = gevulot_machine(tmp_path)
    machine.write_first_boot(FIRST_BOOT.split("[profile]")[0])
    assert main([], machine.services(ScriptedUI())) == 0
    assert not machine.runner.matching("systemctl", "start")
    assert not (machine.layout.root / "run/golemwz/gevulot-node-configured").exists()
    assert ("gevulot-node.service is not started: set gevulot_psk_passphrase"
            in machine.log_text())


def test_a_symlink_on_the_storage_is_not_bound(tmp_path: Path) -> None:
    machine = gevulot_machine(tmp_path)
    machine.write_first_boot(FIRST_BOOT)
    persistent = machine.layout.storage_mount_dir / "persistent/var"
    persistent.parent.mkdir(parents=True)
    persistent.symlink_to(machine.layout.root / "etc")
    assert main([], machine.services(ScriptedUI())) == 1
    assert "is a symbolic link" in machine.log_text()
    assert not machine.runner.matching("mount", "--bind", str(persistent / "lib/gevulot"))


def test_vfio_bind_unit_command_binds_the_listed_functions(tmp_path: Path) -> None:
    machine = gevulot_machine(tmp_path)
    listing = tmp_path / "vfio-devices"
    listing.write_text("0000:01:00.0\n0000:01:00.2\n")
    runner = RecordingRunner()
    import golemwz.cli as cli
    original = cli.bind_to_vfio

    def with_kernel(sysfs_root, dev_root, addresses, run, reporter):  # type: ignore[no-untyped-def]
        original(sysfs_root, dev_root, addresses, run, reporter, machine.kernel)

    cli.bind_to_vfio = with_kernel  # type: ignore[assignment]
    try:
        assert vfio_bind(listing, machine.layout, runner) == 0  # type: ignore[arg-type]
    finally:
        cli.bind_to_vfio = original
    assert runner.argvs == [("modprobe", "vfio-pci")]
    for slot in ("0000:01:00.0", "0000:01:00.2"):
        driver = machine.sysfs.root / f"bus/pci/devices/{slot}/driver"
        assert driver.resolve().name == "vfio-pci"
    listing.write_text("0000:01:00.0; reboot\n")
    assert vfio_bind(listing, machine.layout, runner) == 2  # type: ignore[arg-type]


def test_a_broken_spec_is_one_clear_error() -> None:
    with pytest.raises(WizardError, match="steps must be a list"):
        parse_spec({"name": "x", "steps": ["storage", "rm -rf"]}, Path("profile.toml"))
    with pytest.raises(WizardError, match="keys.size needs kind"):
        parse_spec({"name": "x", "steps": [], "keys": {"size": {"kind": "python"}}},
                   Path("profile.toml"))
    with pytest.raises(WizardError, match="persistent.path must be an absolute path"):
        parse_spec({"name": "x", "steps": [], "persistent": [
            {"path": "/var/../etc", "owner": "root"}]}, Path("profile.toml"))
