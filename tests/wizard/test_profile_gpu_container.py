"""The gpu-container-node profile's wizard (its spec in rootfs/overlay/gpu-container-node)
on a fake machine: the shared contract (storage, SSH keys from golemwz.toml, network) and
Podman's storage, /var/lib/containers, kept on the storage partition."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from golemwz.check import check_file
from golemwz.cli import main
from golemwz.profile_spec import load_spec
from test_profile_gevulot import uncommented
from wizard_fakes import FakeMachine, ScriptedUI

OVERLAY = Path(__file__).resolve().parents[2] / "rootfs/overlay/gpu-container-node"
SPEC = OVERLAY / "usr/share/golemwz/profile.toml"
EXAMPLE = OVERLAY / "usr/share/golemwz/golemwz-example.toml"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx ops@example"


def test_example_documents_every_key_and_passes_the_check(tmp_path: Path) -> None:
    spec = load_spec(SPEC)
    assert spec is not None and spec.name == "gpu-container-node" and not spec.keys
    assert tomllib.loads(EXAMPLE.read_text()) == {}  # all comments as shipped
    first_boot = tmp_path / "golemwz.toml"
    first_boot.write_text(uncommented(EXAMPLE.read_text()) + "\n")
    assert set(tomllib.loads(first_boot.read_text())) == {
        "non_interactive_install", "storage_partition", "ssh_keys"}
    assert check_file(first_boot, spec) == ([], [])
    first_boot.write_text('[profile]\nzfs_pool = "file"\n')
    assert [e.key for e in check_file(first_boot, spec)[0]] == ["profile.zfs_pool"]


def test_first_boot_keeps_podman_storage_on_the_storage_partition(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path, golem=False, gpu=False)
    machine.layout.profile_spec_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SPEC, machine.layout.profile_spec_file)
    machine.write_first_boot(f'non_interactive_install = true\nssh_keys = ["{SSH_KEY}"]\n')
    ui = ScriptedUI()
    assert main([], machine.services(ui)) == 0  # no terms, no question
    assert ("info", "gpu-container-node wizard: done") in [shown[:2] for shown in ui.shown]
    persistent = machine.layout.storage_mount_dir / "persistent/var/lib/containers"
    assert persistent.is_dir()
    root = machine.layout.root
    assert ("chown", "root:root", str(persistent)) in machine.runner.argvs
    assert ("mount", "--bind", str(persistent), str(root / "var/lib/containers")) \
        in machine.runner.argvs
    assert SSH_KEY in machine.layout.authorized_keys.read_text()
    assert not machine.runner.matching("golemsp")
    assert not machine.runner.matching("systemctl", "start")
