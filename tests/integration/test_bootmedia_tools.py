"""The bootloader, iso and usb stages with the real tools (sfdisk, mkfs, mtools,
grub-mkimage, xorriso), inspected with the real tools too. The live/ files are
small stand-ins: nothing boots here (see test_boot_media.py), so no root needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from golemwz.layout import GOLEM_STORAGE_PARTUUID

from builder.config import BuildConfig, make_config
from builder.runner import SubprocessRunner
from builder.stage import Stage, StageContext
from disk.assemble import clamp_times
from disk.layout import LAYOUT_FILE, MIB, derive_ids, load_layout, seeded_uuid
from stages.bootloader import BootloaderStage
from stages.iso import IsoStage
from stages.usb import EXAMPLE_CONF, UsbImageStage
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.tools

TOOLS = ("sfdisk", "mkfs.vfat", "mkfs.ext4", "mcopy", "mdir", "grub-mkimage", "xorriso",
         "fsck.vfat", "e2fsck", "blkid", "grub-fstest", "grub-script-check")
STORAGE_PARTUUID = GOLEM_STORAGE_PARTUUID
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def build_boot_media(live_dir: Path, work: Path, project_root: Path = PROJECT_ROOT,
                     version: str = "0.0.0-test") -> tuple[BuildConfig, dict[str, Path]]:
    """Run bootloader, iso and usb on a squashfs stage's live/ dir; return the images.

    The engine is bypassed on purpose: these tests are about the media, so they
    take any live/ dir (a real pipeline's, or a hand-made one).
    """
    config = make_config(project_root, "gpu-node", version, work / "tmp", work / "work")
    squashfs_out = work / "squashfs"
    squashfs_out.mkdir(parents=True)
    (squashfs_out / "live").symlink_to(live_dir.resolve())
    inputs = {"squashfs": squashfs_out}
    stages: list[Stage] = [BootloaderStage(), IsoStage(), UsbImageStage()]
    for stage in stages:
        out = work / stage.name
        out.mkdir()
        log = work / f"{stage.name}.log"
        with ExitStack() as stack:
            stage.run(StageContext(config, out, dict(inputs), SubprocessRunner(log), stack,
                                   log, lambda _: None))
        inputs[stage.name] = out
    return config, {"iso": inputs["iso"] / config.image_file("iso"),
                    "usb": inputs["usb"] / config.image_file("usb")}


def run(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, argv))}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildConfig, dict[str, Path]]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs the boot media tools: {', '.join(missing)} missing")
    if not (PROJECT_ROOT / EXAMPLE_CONF).exists():
        pytest.skip(f"{EXAMPLE_CONF} does not exist yet")
    work = tmp_path_factory.mktemp("bootmedia")
    live = work / "live"
    live.mkdir()
    (live / "vmlinuz").write_bytes(b"kernel" * 1000)
    (live / "initrd.img").write_bytes(b"initrd" * 1000)
    with open(live / "filesystem.squashfs", "wb") as handle:
        handle.write(b"hsqs")
        handle.truncate(20 * MIB)
    return build_boot_media(live, work / "out")


@pytest.fixture(scope="module")
def usb_image(built: tuple[BuildConfig, dict[str, Path]]) -> Path:
    return built[1]["usb"]


@pytest.fixture(scope="module")
def partition_table(usb_image: Path) -> dict:
    return json.loads(run("sfdisk", "--json", usb_image))["partitiontable"]


def extract_partition(image: Path, table: dict, index: int, target: Path) -> Path:
    part = table["partitions"][index]
    with open(image, "rb") as src, open(target, "wb") as dst:
        src.seek(part["start"] * 512)
        remaining = part["size"] * 512
        while remaining:
            block = src.read(min(remaining, 4 * MIB))
            dst.write(block)
            remaining -= len(block)
    return target


def test_partition_names_types_and_order(partition_table: dict) -> None:
    assert partition_table["label"] == "gpt"
    parts = partition_table["partitions"]
    assert [p["name"] for p in parts] == [
        "EFI System", "BIOS boot partition", "Golem conf storage",
        "Golem root filesystem", "Golem storage"]
    assert parts[0]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert parts[1]["type"] == "21686148-6449-6E6F-744E-656564454649"
    assert parts[4]["uuid"].lower() == STORAGE_PARTUUID


def test_partition_uuids_come_from_the_seed(built, partition_table: dict) -> None:
    config, _ = built
    layout = load_layout(PROJECT_ROOT / LAYOUT_FILE)
    ids = derive_ids(layout, config.seed)
    assert partition_table["id"].lower() == ids.disk_guid
    for spec, part in zip(layout.partitions, partition_table["partitions"], strict=True):
        assert part["uuid"].lower() == ids.partitions[spec.key].partuuid


def test_filesystems_are_clean_and_carry_seeded_uuids(built, usb_image: Path,
                                                      partition_table: dict,
                                                      tmp_path: Path) -> None:
    config, _ = built
    ids = derive_ids(load_layout(PROJECT_ROOT / LAYOUT_FILE), config.seed).partitions
    for index, key, check in ((0, "esp", "fsck.vfat"), (2, "conf", "fsck.vfat"),
                              (3, "root", "e2fsck"), (4, "storage", "e2fsck")):
        part = extract_partition(usb_image, partition_table, index, tmp_path / f"{key}.img")
        run(check, "-n", part) if check == "fsck.vfat" else run(check, "-fn", part)
        probed = run("blkid", "-p", "-o", "export", part)
        assert f"UUID={ids[key].blkid_uuid}" in probed.splitlines()


def test_conf_partition_holds_the_example(usb_image: Path, partition_table: dict) -> None:
    offset = partition_table["partitions"][2]["start"] * 512
    listing = run("mdir", "-b", "-i", f"{usb_image}@@{offset}", "::/", env=MTOOLS_ENV)
    assert "::/golemwz-example.toml" in listing.split()
    content = run("mtype", "-i", f"{usb_image}@@{offset}", "::/golemwz-example.toml",
                  env=MTOOLS_ENV)
    assert content == (PROJECT_ROOT / EXAMPLE_CONF).read_text()


def test_esp_holds_shim_signed_grub_and_the_root_finder(usb_image: Path,
                                                        partition_table: dict) -> None:
    offset = partition_table["partitions"][0]["start"] * 512
    listing = run("mdir", "-b", "-/", "-i", f"{usb_image}@@{offset}", "::/", env=MTOOLS_ENV)
    for path in ("::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/grubx64.efi", "::/boot/grub/grub.cfg"):
        assert path in listing.split()


def test_grub_reads_the_root_filesystem(usb_image: Path) -> None:
    # GRUB's own filesystem code, as the bootloader will read the stick.
    info = run("grub-fstest", usb_image, "cat", "(loop0,gpt4)/.disk/info")
    assert "Golem GPU Live" in info
    cfg = run("grub-fstest", usb_image, "cat", "(loop0,gpt4)/boot/grub/grub.cfg")
    assert "NO AUTOSTART" in cfg
    listing = run("grub-fstest", usb_image, "ls", "(loop0,gpt4)/live/")
    assert {"vmlinuz", "initrd.img", "filesystem.squashfs"} <= set(listing.split())


def test_grub_cfg_is_valid_grub_script(built) -> None:
    config, images = built
    cfg = images["iso"].parent.parent / "bootloader/media/boot/grub/grub.cfg"
    run("grub-script-check", cfg)


def test_usb_image_is_sparse_and_sized_by_content(usb_image: Path) -> None:
    stat = usb_image.stat()
    assert stat.st_blocks * 512 < stat.st_size
    assert stat.st_size < 400 * MIB  # 20 MiB of squashfs: no gigabytes of zeros


def test_mbr_carries_grub_boot_code(usb_image: Path) -> None:
    mbr = usb_image.read_bytes()[:512]
    assert mbr[510:] == b"\x55\xaa"
    assert mbr[0x1C2] == 0xEE  # sfdisk's protective entry survived the boot code
    assert b"GRUB " in mbr  # boot.img's own error-message prefix


def test_iso_boots_bios_and_uefi_and_is_a_gpt_hybrid(built) -> None:
    config, images = built
    report = run("xorriso", "-indev", images["iso"], "-report_el_torito", "plain")
    assert "El Torito boot img :   1  BIOS" in report
    assert "El Torito boot img :   2  UEFI" in report
    table = json.loads(run("sfdisk", "--json", images["iso"]))["partitiontable"]
    assert table["label"] == "gpt"
    assert table["id"].lower() == seeded_uuid(config.seed, "iso/gpt")
    assert any(p["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" for p in table["partitions"])
    files = run("xorriso", "-indev", images["iso"], "-find", "/", "-type", "f")
    for path in ("/live/filesystem.squashfs", "/boot/grub/grub.cfg", "/.disk/info",
                 "/boot/grub/efi.img"):
        assert f"'{path}'" in files


def test_the_media_are_byte_identical_when_built_again_later(
        built: tuple[BuildConfig, dict[str, Path]], tmp_path: Path) -> None:
    """Same inputs at another time, the inputs' files made anew: the same bytes
    (SOURCE_DATE_EPOCH, seeded identifiers, clamped times)."""
    config, first = built
    images = []
    for run in ("a", "b"):
        live = tmp_path / run / "live"
        shutil.copytree(first["usb"].parents[1] / "squashfs/live", live,
                        copy_function=shutil.copyfile)  # new inodes, new times
        clamp_times(live, config.source_date_epoch)  # as the squashfs stage leaves them
        images.append(build_boot_media(live, tmp_path / run / "out",
                                       version=config.version)[1])
        time.sleep(1.1)
    for media in ("usb", "iso"):
        result = subprocess.run(["cmp", str(images[0][media]), str(images[1][media])],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{media}: {result.stdout}"
