"""The iluvatar-worker profile's wizard (its spec in rootfs/overlay/iluvatar-worker): the
ZFS pool for containerd's snapshotter (reference 001) as the argv it runs."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from golemwz.check import check_file
from golemwz.cli import main
from golemwz.profile_spec import load_spec
from test_profile_gevulot import uncommented
from wizard_fakes import FakeMachine, ScriptedUI

OVERLAY = Path(__file__).resolve().parents[2] / "rootfs/overlay/iluvatar-worker"
SPEC = OVERLAY / "usr/share/golemwz/profile.toml"
EXAMPLE = OVERLAY / "usr/share/golemwz/golemwz-example.toml"
SNAPSHOTTER = "/var/lib/containerd/io.containerd.snapshotter.v1.zfs"


def worker(root: Path, first_boot: str, *, pool_exists: bool = False) -> FakeMachine:
    machine = FakeMachine(root, golem=False, gpu=False)
    machine.layout.profile_spec_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SPEC, machine.layout.profile_spec_file)
    found = (0, "") if pool_exists else (1, "")
    machine.runner.responses.update({("zpool", "list"): (1, ""), ("zpool", "import"): found,
                                     ("zfs", "list"): found,
                                     ("zfs", "get"): (0, "yes\n")})
    machine.write_first_boot("non_interactive_install = true\n" + first_boot)
    return machine


def zfs_commands(machine: FakeMachine) -> list[tuple[str, ...]]:
    return [argv for argv in machine.runner.argvs
            if argv[0] in ("zpool", "zfs", "fallocate") or argv[:2] == ("systemctl", "restart")]


def test_example_documents_every_profile_key_and_passes_the_check(tmp_path: Path) -> None:
    spec = load_spec(SPEC)
    assert spec is not None
    first_boot = tmp_path / "golemwz.toml"
    first_boot.write_text(uncommented(EXAMPLE.read_text()) + "\n")
    assert set(tomllib.loads(first_boot.read_text())["profile"]) == set(spec.keys)
    assert check_file(first_boot, spec) == ([], [])
    first_boot.write_text('[profile]\nzfs_pool = "yes"\n')
    assert [e.key for e in check_file(first_boot, spec)[0]] == ["profile.zfs_pool"]
    for hostile in ("../../sda", "by-id/../../sda", "/dev/sda", "by-id/x; reboot"):
        first_boot.write_text(f'[profile]\nzfs_device = "{hostile}"\n')
        errors = check_file(first_boot, spec)[0]
        assert [e.key for e in errors] == ["profile.zfs_device"], hostile


def test_no_pool_unless_asked(tmp_path: Path) -> None:
    machine = worker(tmp_path, "")
    assert main([], machine.services(ScriptedUI())) == 0
    assert zfs_commands(machine) == []
    assert "no ZFS pool (zfs_pool is not set)" in machine.log_text()


def test_file_backed_pool_on_the_storage_partition_then_containerd_restarted(
        tmp_path: Path) -> None:
    machine = worker(tmp_path, '[profile]\nzfs_pool = "file"\nzfs_pool_size = "20G"\n')
    assert main([], machine.services(ScriptedUI())) == 0
    directory = machine.layout.storage_mount_dir / "zfs"
    assert zfs_commands(machine) == [
        ("zpool", "list", "-H", "-o", "name", "ilu-pool"),
        ("zpool", "import", "-N", "-d", str(directory), "ilu-pool"),
        ("fallocate", "-l", "20G", str(directory / "ilu-pool")),
        ("zpool", "create", "-m", "none", "ilu-pool", str(directory / "ilu-pool")),
        ("zfs", "list", "-H", "-o", "name", "ilu-pool/containerd"),
        ("zfs", "create", "-o", f"mountpoint={SNAPSHOTTER}", "ilu-pool/containerd"),
        ("systemctl", "restart", "--no-block", "containerd.service"),
    ]
    # The pool comes after the storage is mounted, never before.
    argvs = machine.runner.argvs
    storage_mount = next(i for i, a in enumerate(argvs) if a[0] == "mount")
    assert storage_mount < argvs.index(zfs_commands(machine)[0])


def test_a_pool_of_an_earlier_boot_is_imported_not_made_again(tmp_path: Path) -> None:
    machine = worker(tmp_path, '[profile]\nzfs_pool = "file"\nzfs_pool_name = "tank"\n',
                     pool_exists=True)
    assert main([], machine.services(ScriptedUI())) == 0
    commands = zfs_commands(machine)
    assert ("zpool", "import", "-N", "-d", str(machine.layout.storage_mount_dir / "zfs"),
            "tank") in commands
    assert not [a for a in commands if a[1] == "create" or a[0] == "fallocate"]
    # Whatever the pool on the stick says, only containerd's dataset is mounted, there.
    assert ("zfs", "set", f"mountpoint={SNAPSHOTTER}", "canmount=on", "tank/containerd") \
        in commands
    assert ("zfs", "mount", "tank/containerd") in commands
    assert commands[-1] == ("systemctl", "restart", "--no-block", "containerd.service")


def test_pool_on_a_second_disk(tmp_path: Path) -> None:
    machine = worker(tmp_path, '[profile]\nzfs_pool = "device"\nzfs_device = "by-id/virtio-zfs"\n')
    disk = machine.layout.dev_root / "disk/by-id/virtio-zfs"
    disk.parent.mkdir(parents=True)
    disk.touch()
    assert main([], machine.services(ScriptedUI())) == 0
    assert ("zpool", "create", "-m", "none", "ilu-pool", str(disk)) in zfs_commands(machine)
    assert ("zpool", "import", "-N", "-d", str(disk.parent), "ilu-pool") \
        in zfs_commands(machine)


def test_a_missing_disk_is_an_error_that_names_it(tmp_path: Path) -> None:
    machine = worker(tmp_path, '[profile]\nzfs_pool = "device"\nzfs_device = "by-id/gone"\n')
    assert main([], machine.services(ScriptedUI())) == 1
    assert "zfs_device:" in machine.log_text() and "does not exist here" in machine.log_text()
    assert not machine.runner.matching("zpool", "create")


def test_a_symlinked_pool_directory_on_the_storage_is_refused(tmp_path: Path) -> None:
    machine = worker(tmp_path, '[profile]\nzfs_pool = "file"\n')
    machine.layout.storage_mount_dir.mkdir(parents=True)
    (machine.layout.storage_mount_dir / "zfs").symlink_to(machine.layout.root / "etc")
    assert main([], machine.services(ScriptedUI())) == 1
    assert "is a symbolic link" in machine.log_text()
    assert not machine.runner.matching("fallocate")


def test_an_imported_dataset_that_will_not_mount_is_an_error(tmp_path: Path) -> None:
    machine = worker(tmp_path, '[profile]\nzfs_pool = "file"\n', pool_exists=True)
    machine.runner.responses[("zfs", "get")] = (0, "no\n")
    assert main([], machine.services(ScriptedUI())) == 1
    assert "cannot be mounted" in machine.log_text()
    assert not machine.runner.matching("systemctl", "restart")
