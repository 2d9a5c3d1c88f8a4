"""Package updates kept on `Golem storage` with live-boot persistence (golemwz.updates),
and the storage steps that must cope with live-boot holding the partition mounted."""

from __future__ import annotations

from pathlib import Path

import pytest
from golemwz.layout import SystemLayout
from golemwz.storage import grow_golem_storage, parse_lsblk, storage_candidates
from golemwz.updates import (
    CONF_NAME,
    STAMP_NAME,
    PersistenceRequest,
    image_stamp,
    keep_updates,
    parse_cmdline,
    persistence_conf,
    prepare,
)
from wizard_fakes import (
    IMAGE_SECTORS,
    RecordingRunner,
    image_partitions,
    lsblk_json,
    quiet_reporter,
    sfdisk_json,
)

LIVE_BOOT_ARGS = ("persistence quickusbmodules persistence-storage=directory "
                  "persistence-path=/golem-live-updates persistence-label=golem-gpu-live-1.2.3")
REQUEST = PersistenceRequest("golem-live-updates", "golem-gpu-live-1.2.3")


@pytest.mark.parametrize("cmdline", [
    "boot=live",
    f"boot=live {LIVE_BOOT_ARGS} nopersistence",
    LIVE_BOOT_ARGS.replace("persistence-storage=directory", "persistence-storage=filesystem"),
    LIVE_BOOT_ARGS.replace("persistence-label=golem-gpu-live-1.2.3", "persistence-label=.."),
    LIVE_BOOT_ARGS.replace("persistence-label=golem-gpu-live-1.2.3", "persistence-label=a/b"),
    LIVE_BOOT_ARGS.replace("/golem-live-updates", "/x/../.."),
    LIVE_BOOT_ARGS.replace("persistence-path=/golem-live-updates", ""),
])
def test_no_request_without_a_safe_directory_persistence(cmdline: str) -> None:
    assert parse_cmdline(cmdline) is None


def test_persistence_conf_lists_only_what_the_package_manager_owns() -> None:
    lines = [line for line in persistence_conf().splitlines() if not line.startswith("#")]
    assert lines == ["/usr union", "/var/lib/dpkg union"]


def squashfs_layers(root: Path, *statuses: str) -> Path:
    rootfs = root / "run/live/rootfs"
    for number, status in enumerate(statuses):
        path = rootfs / f"{number}-layer.squashfs/var/lib/dpkg/status"
        path.parent.mkdir(parents=True)
        path.write_text(status)
    return rootfs


def test_image_stamp_follows_every_layers_package_list(tmp_path: Path) -> None:
    one = image_stamp(squashfs_layers(tmp_path / "a", "Package: a\n"))
    assert one is not None
    assert image_stamp(squashfs_layers(tmp_path / "b", "Package: a\n")) == one
    assert image_stamp(squashfs_layers(tmp_path / "c", "Package: a\nVersion: 2\n")) != one
    assert image_stamp(squashfs_layers(tmp_path / "d", "Package: a\n", "Package: b\n")) != one
    assert image_stamp(tmp_path / "none") is None


def test_prepare_writes_the_stamp_then_persistence_conf(tmp_path: Path) -> None:
    directory = REQUEST.directory(tmp_path)
    assert prepare(tmp_path, REQUEST, "abc", quiet_reporter())
    assert directory == tmp_path / "golem-live-updates/golem-gpu-live-1.2.3"
    assert (directory / STAMP_NAME).read_text() == "abc\n"
    assert (directory / CONF_NAME).read_text() == persistence_conf()
    # the next boot (same image): kept as it is, updates included
    (directory / "usr/rw/bin").mkdir(parents=True)
    (directory / "usr/rw/bin/upgraded").write_text("new")
    assert prepare(tmp_path, REQUEST, "abc", quiet_reporter())
    assert (directory / "usr/rw/bin/upgraded").read_text() == "new"


def test_updates_of_another_image_name_are_removed(tmp_path: Path) -> None:
    old = tmp_path / "golem-live-updates/golem-gpu-live-1.2.2"
    (old / "usr/rw").mkdir(parents=True)
    prepare(tmp_path, REQUEST, "abc", quiet_reporter())
    assert not old.exists()
    assert sorted(p.name for p in (tmp_path / "golem-live-updates").iterdir()) == [
        "golem-gpu-live-1.2.3"]


def test_updates_of_another_build_with_the_same_name_are_set_aside(tmp_path: Path) -> None:
    log = tmp_path / "log"
    storage = tmp_path / "storage"
    directory = REQUEST.directory(storage)
    prepare(storage, REQUEST, "first-build", quiet_reporter())
    (directory / "var/lib/dpkg/rw").mkdir(parents=True)
    (directory / "var/lib/dpkg/rw/status").write_text("stale")
    assert prepare(storage, REQUEST, "second-build", quiet_reporter(log))
    aside = directory.with_name(directory.name + ".stale")
    assert (aside / "var/lib/dpkg/rw/status").read_text() == "stale"  # renamed, in use now
    assert not (directory / "var").exists()
    assert (directory / STAMP_NAME).read_text() == "second-build\n"
    assert "set aside" in log.read_text() and "reboot" in log.read_text()
    # the boot after: the set-aside directory goes
    prepare(storage, REQUEST, "second-build", quiet_reporter())
    assert not aside.exists()


def test_keep_updates_reads_the_boot_entry_and_the_image(tmp_path: Path) -> None:
    layout = SystemLayout.under(tmp_path)
    layout.kernel_cmdline_file.parent.mkdir(parents=True)
    squashfs_layers(tmp_path, "Package: golemwz\n")
    layout.storage_mount_dir.mkdir(parents=True)
    layout.kernel_cmdline_file.write_text("boot=live quiet\n")
    assert not keep_updates(layout, quiet_reporter())
    assert list(layout.storage_mount_dir.iterdir()) == []
    layout.kernel_cmdline_file.write_text(f"boot=live {LIVE_BOOT_ARGS}\n")
    assert keep_updates(layout, quiet_reporter())
    stamp = REQUEST.directory(layout.storage_mount_dir) / STAMP_NAME
    assert stamp.read_text().strip() == image_stamp(layout.live_rootfs_dir)


def test_storage_held_by_live_boot_is_offered_and_not_grown(tmp_path: Path) -> None:
    held = "/run/live/persistence/sda5"
    devices = parse_lsblk(lsblk_json(*image_partitions(held)))
    (candidate,) = [c for c in storage_candidates(devices, tmp_path / "mnt")
                    if c.is_golem_storage()]
    assert candidate.mountpoint == held
    layout = SystemLayout.under(tmp_path)
    size_file = layout.sysfs_root / "class/block/sda/size"
    size_file.parent.mkdir(parents=True)
    for disk_sectors, said in ((IMAGE_SECTORS, "already reaches the end of /dev/sda; it holds "
                                               "the package updates"),
                               (2 * IMAGE_SECTORS, "warning: Golem storage (/dev/sda5) holds "
                                                   "this boot's package updates")):
        size_file.write_text(f"{disk_sectors}\n")
        runner = RecordingRunner(responses={("sfdisk", "--json"): (0, grown_table())})
        log = tmp_path / f"log-{disk_sectors}"
        grow_golem_storage(candidate, layout, runner, quiet_reporter(log))
        # the table is read; nothing written, no e2fsck or resize2fs on a mounted filesystem
        assert [argv[:2] for argv in runner.argvs] == [("sfdisk", "--json")]
        assert said in log.read_text()


def grown_table() -> str:
    """The image's table with `Golem storage` up to the end of the image."""
    storage_start = 8 * 2**20
    return sfdisk_json((IMAGE_SECTORS - 34 - 1) // 2048 * 2048 - storage_start)
