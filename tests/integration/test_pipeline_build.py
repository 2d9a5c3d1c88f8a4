"""The cache's promises on a real gpu-node build: no-op rebuild, one-file edits,
and a build killed mid-stage leaving nothing behind."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from golemwz.layout import GOLEM_STORAGE_PARTUUID

from builder.config import default_source_date_epoch
from builder.mounts import mounts_under
from tests.conftest import MEASUREMENTS, PROJECT_ROOT, BuiltImage, build_args, golem_live

pytestmark = pytest.mark.root

STAGE_LINE = re.compile(r"\[([\w-]+)\] (running|cached)")


def stages_by_status(output: str, status: str) -> list[str]:
    return [m.group(1) for m in STAGE_LINE.finditer(output) if m.group(2) == status]


def loop_devices_backed_by(path: Path) -> list[str]:
    listing = subprocess.run(["losetup", "--list", "--noheadings", "--output",
                              "NAME,BACK-FILE"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if str(path) in line]


def test_cold_build_ran_every_stage(gpu_node_image: BuiltImage) -> None:
    if "cached" in gpu_node_image.output:
        pytest.skip("the build reused a --build-cache; cold behaviour not observable")
    # in dependency order; independent ones (bootloader, the media) start together
    assert sorted(stages_by_status(gpu_node_image.output, "running")) == sorted([
        "bootstrap", "packages", "squashfs-base", "overlay", "squashfs", "bootloader", "iso",
        "usb"])


def test_repeated_build_runs_nothing(gpu_node_image: BuiltImage) -> None:
    started = time.monotonic()
    result = golem_live("build", *build_args(gpu_node_image.tmp_dir, gpu_node_image.work_dir))
    MEASUREMENTS["no-op rebuild"] = f"{time.monotonic() - started:.1f}s"
    assert result.returncode == 0, result.stderr
    assert stages_by_status(result.stderr, "running") == []
    assert "0 of 8 stages ran" in result.stderr
    plan = golem_live("plan", *build_args(gpu_node_image.tmp_dir, gpu_node_image.work_dir))
    assert plan.returncode == 0
    assert "will run" not in plan.stdout and plan.stdout.count("cached") == 8


def project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "rootfs", copy / "rootfs")
    shutil.copytree(PROJECT_ROOT / "disk", copy / "disk")
    return copy


def test_editing_one_overlay_file_rebuilds_from_overlay_on(gpu_node_image: BuiltImage,
                                                           tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    motd = project / "rootfs/overlay/common/etc/motd.j2"
    motd.write_text(motd.read_text() + "  edited by a test\n")
    # The copy is no git checkout: give it the session build's SOURCE_DATE_EPOCH (the last
    # commit's date), else the edit would also move the epoch (the newest file's time).
    epoch = default_source_date_epoch(PROJECT_ROOT)
    args = [*build_args(gpu_node_image.tmp_dir, tmp_path / "work"),
            "--project-root", str(project), "--source-date-epoch", str(epoch)]
    plan = golem_live("plan", *args)
    assert "file changed rootfs/overlay/common/etc/motd.j2" in plan.stdout
    started = time.monotonic()
    result = golem_live("build", *args)
    MEASUREMENTS["one-file edit rebuild"] = f"{time.monotonic() - started:.1f}s"
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(stages_by_status(result.stderr, "running")) == ["iso", "overlay", "squashfs",
                                                                  "usb"]
    # the packages layer (squashfs-base) is reused: only the overlay's layer is compressed
    assert sorted(stages_by_status(result.stderr, "cached")) == [
        "bootloader", "bootstrap", "packages", "squashfs-base"]


def test_killed_build_leaves_no_mounts_and_next_build_succeeds(gpu_node_image: BuiltImage,
                                                               tmp_path: Path) -> None:
    args = build_args(gpu_node_image.tmp_dir, tmp_path / "work")
    proc = subprocess.Popen(
        [sys.executable, "-m", "golem_live.cli", "build", *args, "--force", "packages",
         "--until", "packages"], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until apt is installing inside the mounted chroot
        seen.append(line)
        if "apt-get install" in line:
            break
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + rest
    assert "interrupted" in rest
    packages_cache = gpu_node_image.tmp_dir / "cache" / "packages"
    assert mounts_under(gpu_node_image.tmp_dir) == []
    assert loop_devices_backed_by(gpu_node_image.tmp_dir) == []
    assert [p.name for p in packages_cache.iterdir() if p.name.startswith(".tmp-")] == []
    # The previous good entry is still used: the plan shows packages cached.
    plan = golem_live("plan", *args)
    assert re.search(r"^packages\s+\S+\s+cached", plan.stdout, re.M), plan.stdout
    # And a forced rebuild after the kill completes.
    result = golem_live("build", *args, "--force", "packages", "--until", "packages")
    assert result.returncode == 0, result.stderr[-3000:]


PARTITION_NAMES = ["EFI System", "BIOS boot partition", "Golem conf storage",
                   "Golem root filesystem", "Golem storage"]
STORAGE_PARTUUID = GOLEM_STORAGE_PARTUUID.upper()  # as sfdisk prints it


def test_built_usb_image_layout_and_clean_filesystems(gpu_node_image: BuiltImage,
                                                      tmp_path: Path) -> None:
    import json

    from tests.integration.test_bootmedia_tools import extract_partition

    table = json.loads(subprocess.run(["sfdisk", "--json", str(gpu_node_image.img)],
                                      capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    assert [p["name"] for p in table["partitions"]] == PARTITION_NAMES
    assert table["partitions"][0]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert table["partitions"][1]["type"] == "21686148-6449-6E6F-744E-656564454649"
    assert table["partitions"][4]["uuid"] == STORAGE_PARTUUID
    for index, checker in ((0, ["fsck.vfat", "-n"]), (2, ["fsck.vfat", "-n"]),
                           (3, ["e2fsck", "-fn"]), (4, ["e2fsck", "-fn"])):
        part = extract_partition(gpu_node_image.img, table, index, tmp_path / f"p{index}")
        check = subprocess.run([*checker, str(part)], capture_output=True, text=True)
        assert check.returncode == 0, f"{PARTITION_NAMES[index]}: {check.stdout}{check.stderr}"
        if index == 2:
            listing = subprocess.run(["mdir", "-b", "-i", str(part), "::"],
                                     capture_output=True, text=True, check=True).stdout
            assert "golemwz-example.toml" in listing


def test_clean_sweep_unmounts_and_detaches_what_a_killed_build_left(tmp_path: Path) -> None:
    from tests.conftest import require_root

    require_root()
    tmp_dir = tmp_path / "tmp"
    leftover = tmp_dir / "cache/packages/.tmp-killed/rootfs/proc"
    leftover.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(leftover)], check=True)
    image = tmp_dir / "cache/usb/.tmp-killed/disk.img"
    image.parent.mkdir(parents=True)
    with open(image, "wb") as handle:
        handle.truncate(8 << 20)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                            text=True, check=True).stdout.strip()
    try:
        result = golem_live("clean", "--sweep", "--tmp-dir", str(tmp_dir), "--work-dir",
                            str(tmp_path / "work"))
        assert result.returncode == 0, result.stderr
        assert f"unmounted {leftover}" in result.stdout
        assert f"detached {device}" in result.stdout
        assert mounts_under(tmp_dir) == []
        assert loop_devices_backed_by(tmp_dir) == []
    finally:
        subprocess.run(["umount", str(leftover)], capture_output=True)
        subprocess.run(["losetup", "--detach", device], capture_output=True)
