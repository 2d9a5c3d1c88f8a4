"""The USB layout (layout.toml), seeded identifiers, the sfdisk script and the
mount-free assembly helpers; no root and no real tools needed."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from pathlib import Path

import pytest
from golemwz.layout import GOLEM_STORAGE_PARTUUID

from builder.errors import BuildError
from builder.runner import SubprocessRunner
from disk.assemble import (
    BLOCKLIST_OFFSET,
    assemble_disk,
    copy_sparse_into,
    ext4_content_bytes,
    fat_directories,
    install_grub_bios,
    make_ext4_image,
    make_fat_image,
    patch_boot_sector,
    patch_core_image,
)
from disk.layout import (
    MIB,
    SECTOR_BYTES,
    derive_ids,
    load_layout,
    plan_disk,
)
from tests.fakes import RecordingRunner

STORAGE_PARTUUID = GOLEM_STORAGE_PARTUUID
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
SEED = "gpu-node/1.2.3"


@pytest.fixture
def layout():
    return load_layout()


def test_layout_names_the_partitions_in_the_required_order(layout) -> None:
    assert [p.name for p in layout.partitions] == [
        "EFI System", "BIOS boot partition", "Golem conf storage",
        "Golem root filesystem", "Golem storage"]


def test_layout_types_and_filesystems(layout) -> None:
    assert layout.spec("esp").type_guid == ESP_TYPE
    assert layout.spec("esp").filesystem == "vfat"
    assert layout.spec("bios").type_guid == BIOS_BOOT_TYPE
    assert layout.spec("bios").filesystem == "none"
    assert layout.spec("conf").filesystem == "vfat"
    assert layout.spec("storage").filesystem == "ext4"
    assert layout.spec("root").size_mib is None  # sized from content


def test_storage_partuuid_is_the_fixed_constant(layout) -> None:
    assert derive_ids(layout, SEED).partitions["storage"].partuuid == STORAGE_PARTUUID
    assert derive_ids(layout, "other/9").partitions["storage"].partuuid == STORAGE_PARTUUID


def test_ids_are_a_function_of_the_seed(layout) -> None:
    first, again, other = (derive_ids(layout, s) for s in (SEED, SEED, "gpu-node/1.2.4"))
    assert first == again
    assert first.disk_guid != other.disk_guid
    for key in ("esp", "root"):
        assert first.partitions[key].partuuid != other.partitions[key].partuuid
    for key in ("esp", "conf", "root"):
        assert first.partitions[key].fs_uuid != other.partitions[key].fs_uuid
    # GOLEM's imager finds the conf partition by a PARTUUID fixed for every image.
    assert first.partitions["conf"].partuuid == other.partitions["conf"].partuuid


def test_ids_are_distinct_within_one_disk(layout) -> None:
    ids = derive_ids(layout, SEED)
    partuuids = [p.partuuid for p in ids.partitions.values()]
    assert len(set(partuuids + [ids.disk_guid])) == len(partuuids) + 1


def test_fat_volume_ids_are_eight_hex_digits_shown_with_a_dash(layout) -> None:
    esp = derive_ids(layout, SEED).partitions["esp"]
    int(esp.fs_uuid, 16)
    assert len(esp.fs_uuid) == 8
    assert esp.blkid_uuid == f"{esp.fs_uuid[:4]}-{esp.fs_uuid[4:]}"
    root = derive_ids(layout, SEED).partitions["root"]
    assert root.blkid_uuid == root.fs_uuid


def test_plan_places_aligned_partitions_back_to_back(layout) -> None:
    plan = plan_disk(layout, SEED, {"root": 300 * MIB + 1})
    align = MIB // SECTOR_BYTES
    assert plan.partitions[0].start_sector == align
    for before, after in zip(plan.partitions, plan.partitions[1:], strict=False):
        assert after.start_sector == before.start_sector + before.size_sectors
    for placed in plan.partitions:
        assert placed.start_sector % align == 0
    last = plan.partitions[-1]
    assert plan.size_bytes == last.offset_bytes + last.size_bytes + MIB  # backup GPT room


def test_root_size_follows_content_plus_margin(layout) -> None:
    margin = layout.spec("root").margin_mib
    small = plan_disk(layout, SEED, {"root": 100 * MIB}).part("root")
    large = plan_disk(layout, SEED, {"root": 900 * MIB}).part("root")
    assert small.size_bytes == (100 + margin) * MIB
    assert large.size_bytes == (900 + margin) * MIB
    assert plan_disk(layout, SEED, {"root": 100 * MIB}).part("storage").size_bytes == 64 * MIB


def test_plan_without_content_size_for_root_is_an_error(layout) -> None:
    with pytest.raises(BuildError, match="sized from its content"):
        plan_disk(layout, SEED, {})


def test_sfdisk_script_carries_names_types_and_uuids(layout) -> None:
    plan = plan_disk(layout, SEED, {"root": 10 * MIB})
    script = plan.sfdisk_script()
    assert script.startswith("label: gpt\n")
    assert f"label-id: {plan.disk_guid.upper()}" in script
    lines = [line for line in script.splitlines() if line.startswith("start=")]
    assert len(lines) == 5
    assert 'name="Golem storage"' in lines[4]
    assert f"uuid={STORAGE_PARTUUID.upper()}" in lines[4]
    assert f"type={BIOS_BOOT_TYPE}" in lines[1]
    assert f"start={plan.part('root').start_sector}, size={plan.part('root').size_sectors}" \
        in lines[3]


def test_layout_without_a_size_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "layout.toml"
    bad.write_text('[disk]\nalignment_mib = 1\n[[partition]]\nkey = "a"\nname = "A"\n'
                   'type = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"\nfilesystem = "ext4"\n')
    with pytest.raises(BuildError, match="size_mib"):
        load_layout(bad)


def test_layout_with_a_repeated_name_is_rejected(tmp_path: Path) -> None:
    part = ('[[partition]]\nkey = "{key}"\nname = "Same"\nsize_mib = 1\n'
            'type = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"\nfilesystem = "ext4"\n')
    bad = tmp_path / "layout.toml"
    bad.write_text("[disk]\nalignment_mib = 1\n" + part.format(key="a") + part.format(key="b"))
    with pytest.raises(BuildError, match="repeats a partition name"):
        load_layout(bad)


# --- assembly helpers ---------------------------------------------------------------


def test_fat_directories_lists_parents_first_once() -> None:
    assert fat_directories(["/EFI/BOOT/a.efi", "/EFI/BOOT/b.efi", "/boot/grub/grub.cfg"]) == [
        "/EFI", "/EFI/BOOT", "/boot", "/boot/grub"]
    assert fat_directories(["/top.toml"]) == []


def test_make_fat_image_argv(tmp_path: Path, layout) -> None:
    runner = RecordingRunner()
    source = tmp_path / "example.toml"
    source.write_text("x = 1\n")
    image = tmp_path / "conf.img"
    make_fat_image(runner, image, layout.spec("conf"), "ABCD1234", 16 * MIB,
                   {"/golemwz-example.toml": source}, epoch=1700000000)
    mkfs, mcopy = runner.argvs
    assert mkfs == ("mkfs.vfat", "-C", "--invariant", "-i", "ABCD1234", "-F", "16",
                    "-n", "GOLEMCONF", str(image), str(16 * 1024))
    # no -m (keep the source's time): mtools dates the entry SOURCE_DATE_EPOCH
    assert mcopy == ("mcopy", "-i", str(image), str(source), "::/golemwz-example.toml")
    assert runner.calls[1].env == {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": "1700000000"}


def test_make_ext4_image_argv_sets_uuid_label_and_content(tmp_path: Path, layout) -> None:
    runner = RecordingRunner()
    ids = derive_ids(layout, SEED).partitions["root"]
    image = tmp_path / "root.img"
    tree = tmp_path / "tree"
    (tree / "live").mkdir(parents=True)
    (tree / "live/vmlinuz").write_text("kernel")
    make_ext4_image(runner, image, layout.spec("root"), ids, 40 * MIB, content=tree,
                    epoch=1700000000)
    argv, debugfs = runner.argvs
    assert runner.calls[0].env == {"E2FSPROGS_FAKE_TIME": "1700000000"}
    assert debugfs[:3] == ("debugfs", "-w", "-f") and debugfs[-1] == str(image)
    assert argv[0] == "mkfs.ext4"
    assert argv[argv.index("-U") + 1] == ids.fs_uuid
    assert argv[argv.index("-L") + 1] == "golem-live"
    assert argv[argv.index("-d") + 1] == str(tree)
    assert argv[argv.index("-b") + 1] == "4096"
    assert argv[-2:] == (str(image), f"{40 * 1024}k")
    assert image.stat().st_size == 40 * MIB
    assert image.stat().st_blocks == 0  # sparse until mkfs writes


def test_ext4_inodes_are_dated_by_the_epoch_and_the_content_is_left_alone(
        tmp_path: Path, layout) -> None:
    """The content may be hard links into other cache entries that another stage reads
    at the same time: mke2fs copies their atimes, so the image's inodes are dated
    afterwards and the content's own times are neither used nor changed."""
    tree = tmp_path / "tree"
    (tree / "live").mkdir(parents=True)
    (tree / "live/vmlinuz").write_text("kernel")
    os.utime(tree / "live/vmlinuz", (1234567890, 1600000000))  # read since its copy
    image = tmp_path / "root.img"
    ids = derive_ids(layout, SEED).partitions["root"]
    make_ext4_image(SubprocessRunner(tmp_path / "log"), image, layout.spec("root"), ids,
                    8 * MIB, content=tree, epoch=1700000000)
    assert (tree / "live/vmlinuz").stat().st_mtime == 1600000000
    for name in ("/", "/live", "/live/vmlinuz"):
        shown = subprocess.run(["debugfs", "-R", f"stat {name}", str(image)],
                               capture_output=True, text=True, check=True).stdout
        stamps = re.findall(r"^ *([acm])time: (0x[0-9a-f]+)", shown, re.MULTILINE)
        assert sorted(stamps) == [(f, hex(1700000000)) for f in "acm"], (name, shown)


def test_ext4_content_estimate_covers_the_data(tmp_path: Path) -> None:
    (tmp_path / "live").mkdir()
    with open(tmp_path / "live/filesystem.squashfs", "wb") as handle:
        handle.truncate(50 * MIB)
    estimate = ext4_content_bytes(tmp_path)
    assert estimate > 50 * MIB
    with open(tmp_path / "live/filesystem.squashfs", "wb") as handle:
        handle.truncate(500 * MIB)
    assert ext4_content_bytes(tmp_path) > estimate + 450 * MIB


def _sparse_file(path: Path, size: int, chunks: dict[int, bytes]) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, data in chunks.items():
            handle.seek(offset)
            handle.write(data)


def test_copy_sparse_into_places_data_and_keeps_holes(tmp_path: Path) -> None:
    source, target = tmp_path / "part.img", tmp_path / "disk.img"
    _sparse_file(source, 32 * MIB, {0: b"head", 20 * MIB: b"middle"})
    _sparse_file(target, 64 * MIB, {})
    copy_sparse_into(source, target, 8 * MIB)
    with open(target, "rb") as handle:
        handle.seek(8 * MIB)
        assert handle.read(4) == b"head"
        handle.seek(28 * MIB)
        assert handle.read(6) == b"middle"
    assert target.stat().st_size == 64 * MIB
    assert target.stat().st_blocks * 512 < 4 * MIB  # not 32 MiB of written zeros


def test_patch_boot_sector_keeps_the_partition_table() -> None:
    boot_img = bytes(range(256)) * 2
    mbr = bytearray(SECTOR_BYTES)
    mbr[0x1B8:0x1FE] = b"\xaa" * (0x1FE - 0x1B8)
    patched = patch_boot_sector(boot_img, bytes(mbr), 2048)
    assert patched[0x1B8:0x1FE] == bytes(mbr[0x1B8:0x1FE])
    assert struct.unpack_from("<Q", patched, 0x5C)[0] == 2048
    assert patched[0x64] == 0xFF
    assert patched[0x66:0x68] == b"\x90\x90"
    assert patched[:0x5C] == boot_img[:0x5C]
    assert patched[0x1FE:] == boot_img[0x1FE:]


def test_patch_core_image_points_the_blocklist_at_the_rest_of_core() -> None:
    core = bytearray(SECTOR_BYTES * 3 + 100)
    struct.pack_into("<QHH", core, BLOCKLIST_OFFSET, 2, 0, 0x820)
    patched = patch_core_image(bytes(core), 133120)
    assert len(patched) == SECTOR_BYTES * 4
    assert struct.unpack_from("<QHH", patched, BLOCKLIST_OFFSET) == (133121, 3, 0x820)


def test_patch_core_image_rejects_a_truncated_core() -> None:
    with pytest.raises(BuildError, match="unexpected size"):
        patch_core_image(b"\0" * 100, 2048)


def test_install_grub_bios_writes_core_into_the_bios_partition(tmp_path: Path, layout) -> None:
    plan = plan_disk(layout, SEED, {"root": MIB})
    disk = tmp_path / "disk.img"
    _sparse_file(disk, plan.size_bytes, {0x1BE: b"\x00\x00\x02\x00\xee"})
    core = bytearray(SECTOR_BYTES * 2)
    core[:4] = b"CORE"
    install_grub_bios(disk, plan, b"\x11" * SECTOR_BYTES, bytes(core))
    bios = plan.part("bios")
    with open(disk, "rb") as handle:
        mbr = handle.read(SECTOR_BYTES)
        handle.seek(bios.offset_bytes)
        written = handle.read(SECTOR_BYTES)
    assert mbr[0x1BE:0x1C3] == b"\x00\x00\x02\x00\xee"  # protective entry kept
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == bios.start_sector
    assert written[:4] == b"CORE"
    assert struct.unpack_from("<Q", written, BLOCKLIST_OFFSET)[0] == bios.start_sector + 1


def test_install_grub_bios_refuses_a_core_larger_than_the_partition(tmp_path: Path,
                                                                     layout) -> None:
    plan = plan_disk(layout, SEED, {"root": MIB})
    disk = tmp_path / "disk.img"
    _sparse_file(disk, plan.size_bytes, {})
    with pytest.raises(BuildError, match="does not fit"):
        install_grub_bios(disk, plan, b"\0" * SECTOR_BYTES, b"\0" * (2 * MIB))


def test_assemble_disk_partitions_then_copies_each_image(tmp_path: Path, layout) -> None:
    plan = plan_disk(layout, SEED, {"root": MIB})
    images = {}
    for key in ("esp", "conf", "root", "storage"):
        images[key] = tmp_path / f"{key}.img"
        _sparse_file(images[key], plan.part(key).size_bytes, {0: key.encode()})
    runner = RecordingRunner()
    disk = tmp_path / "disk.img"
    assemble_disk(runner, plan, disk, images)
    (call,) = runner.calls
    assert call.argv[0] == "sfdisk" and call.argv[-1] == str(disk)
    assert call.input == plan.sfdisk_script().encode()
    assert disk.stat().st_size == plan.size_bytes
    with open(disk, "rb") as handle:
        for key in images:
            handle.seek(plan.part(key).offset_bytes)
            assert handle.read(len(key)) == key.encode()


def test_assemble_disk_rejects_an_image_larger_than_its_partition(tmp_path: Path,
                                                                  layout) -> None:
    plan = plan_disk(layout, SEED, {"root": MIB})
    big = tmp_path / "conf.img"
    _sparse_file(big, plan.part("conf").size_bytes + SECTOR_BYTES, {})
    with pytest.raises(BuildError, match="larger than its partition"):
        assemble_disk(RecordingRunner(), plan, tmp_path / "disk.img", {"conf": big})
