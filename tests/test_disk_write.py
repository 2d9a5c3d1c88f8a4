"""Writing a stick: every refusal on system trees the tests build, the block map, and
(as root) real writes to loop devices read back and compared."""

from __future__ import annotations

import hashlib
import lzma
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from builder.errors import BuildError
from disk.write import block_device, open_image, parse_bmap, refusal

GIB = 2**30


def fake_system(tmp_path: Path, *, size_gib: float = 8, ro: bool = False,
                mounted: dict[str, str] | None = None, swap: str | None = None,
                holder: str | None = None) -> Path:
    """A system root with disk sdb (partitions sdb1, sdb2) and the running system on sda."""
    root = tmp_path / "root"
    block = root / "sys/class/block"
    # As in sysfs: a partition is a directory inside its disk's, linked from class/block.
    for name, number in (("sda", "8:0"), ("sda/sda1", "8:1"), ("sdb", "8:16")):
        (block / name).mkdir(parents=True)
        (block / name / "dev").write_text(number + "\n")
    (block / "sda/sda1/partition").write_text("1\n")
    (block / "sda1").symlink_to(block / "sda/sda1")
    disk = block / "sdb"
    (disk / "size").write_text(f"{int(size_gib * GIB / 512)}\n")
    (disk / "ro").write_text("1\n" if ro else "0\n")
    (disk / "device").mkdir()
    (disk / "device/model").write_text("SanDisk Ultra  \n")
    for index in (1, 2):
        part = disk / f"sdb{index}"
        part.mkdir()
        (part / "partition").write_text(f"{index}\n")
        (part / "dev").write_text(f"8:{16 + index}\n")
        (part / "holders").mkdir()
        (block / f"sdb{index}").symlink_to(part)
    (disk / "holders").mkdir()
    if holder:
        (disk / "sdb2/holders" / holder).mkdir()
    numbers = {"sda1": "8:1", "sdb": "8:16", "sdb1": "8:17", "sdb2": "8:18"}
    mounts = {"sda1": "/", **(mounted or {})}
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/mountinfo").write_text("".join(
        f"{i} 1 {numbers[dev]} / {point} rw - ext4 /dev/{dev} rw\n"
        for i, (dev, point) in enumerate(mounts.items(), start=20)))
    (root / "proc/swaps").write_text(
        "Filename Type Size Used Priority\n" + (f"/dev/{swap} partition 1 0 -2\n" if swap else ""))
    return root


def why(root: Path, device: str, image_gib: float = 1) -> str | None:
    return refusal(root, block_device(root, Path(device)), int(image_gib * GIB))


def test_a_whole_unused_disk_large_enough_is_accepted(tmp_path: Path) -> None:
    root = fake_system(tmp_path)
    target = block_device(root, Path("/dev/sdb"))
    assert target.model == "SanDisk Ultra" and target.partitions == ("sdb1", "sdb2")
    assert why(root, "/dev/sdb") is None


@pytest.mark.parametrize(("setup", "device", "expected"), [
    ({}, "/dev/sdb1", "/dev/sdb1 is a partition"),
    ({"ro": True}, "/dev/sdb", "read-only"),
    ({"mounted": {"sdb1": "/media/stick"}}, "/dev/sdb", "mounted at /media/stick"),
    ({"mounted": {"sdb2": "/"}}, "/dev/sdb", "running system's root"),
    ({}, "/dev/sda", "running system's root"),
    ({"swap": "sdb2"}, "/dev/sdb", "running system's swap"),
    ({"holder": "dm-0"}, "/dev/sdb", "in use by dm-0"),
    ({"size_gib": 0.5}, "/dev/sdb", "use a larger stick"),
])
def test_unsafe_targets_are_refused_in_one_line(tmp_path: Path, setup: dict, device: str,
                                                expected: str) -> None:
    reason = why(fake_system(tmp_path, **setup), device)
    assert reason is not None and expected in reason and "\n" not in reason


def test_a_device_that_is_not_a_block_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="/dev/nope is not a block device"):
        block_device(fake_system(tmp_path), Path("/dev/nope"))


BMAP = """<?xml version="1.0" ?>
<bmap version="2.0">
    <ImageSize> 8388608 </ImageSize>
    <BlockSize> 4096 </BlockSize>
    <BlocksCount> 2048 </BlocksCount>
    <MappedBlocksCount> 3 </MappedBlocksCount>
    <ChecksumType> sha256 </ChecksumType>
    <BlockMap>
        <Range chksum="aa"> 0-1 </Range>
        <Range chksum="bb"> 256 </Range>
    </BlockMap>
</bmap>
"""


def test_a_block_map_lists_the_mapped_ranges(tmp_path: Path) -> None:
    bmap = parse_bmap(BMAP)
    assert (bmap.image_bytes, bmap.block_size) == (8388608, 4096)
    assert bmap.ranges == ((0, 1, "aa"), (256, 256, "bb"))
    image = tmp_path / "x.img"
    image.write_bytes(b"")
    os.truncate(image, 8388608)
    (tmp_path / "x.bmap").write_text(BMAP)
    opened = open_image(image, None, lambda p: "")
    assert opened.extents() == [(0, 8192, "aa"), (256 * 4096, 4096, "bb")]


@pytest.mark.parametrize(("text", "problem"), [
    ("<bmap>", "not a valid bmap"),
    (BMAP.replace("sha256", "md5"), "only sha256"),
    (BMAP.replace("0-1", "zero"), "bad range"),
    (BMAP.replace("256 </Range>", "99999 </Range>"), "does not fit"),
])
def test_a_broken_block_map_is_refused(text: str, problem: str) -> None:
    with pytest.raises(BuildError, match=problem):
        parse_bmap(text)


def test_a_block_map_for_another_image_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(b"\0" * 4096)
    (tmp_path / "x.bmap").write_text(BMAP)
    with pytest.raises(BuildError, match="is for a 8388608-byte image"):
        open_image(image, None, lambda p: "")


def test_only_images_are_written(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BuildError, match="neither an .img nor an .img.xz"):
        open_image(tmp_path / "notes.txt", None, lambda p: "")
    with pytest.raises(BuildError, match="no image at"):
        open_image(tmp_path / "missing.img", None, lambda p: "")


# --- as root, on loop devices ------------------------------------------------------


def run(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def loop_device(backing: Path, *extra: str) -> Iterator[Path]:
    device = Path(run("losetup", "--find", "--show", *extra, str(backing)))
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", str(device)], check=False)


def golem_live_write(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "golem_live.cli", "write", *args],
                          capture_output=True, input=stdin, timeout=300)


def make_image(path: Path) -> bytes:
    """An 8 MiB image: data at the start and at 5 MiB, a hole between."""
    with open(path, "wb") as handle:
        handle.write(os.urandom(1 << 20))
        handle.seek(5 << 20)
        handle.write(os.urandom(64 << 10))
        handle.truncate(8 << 20)
    return path.read_bytes()


@pytest.fixture
def stick(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices")
    backing = tmp_path / "stick"
    backing.write_bytes(b"\xaa" * (16 << 20))  # old content everywhere
    with loop_device(backing) as device:
        yield device


def device_bytes(device: Path, length: int) -> bytes:
    with open(device, "rb") as handle:
        return handle.read(length)


@pytest.mark.root
def test_write_puts_the_image_on_the_stick_and_verifies_it(tmp_path: Path, stick: Path) -> None:
    content = make_image(tmp_path / "golem.img")
    result = golem_live_write(str(tmp_path / "golem.img"), str(stick), "--yes")
    assert result.returncode == 0, result.stderr
    assert b"wrote and verified 8 MiB on " + str(stick).encode() in result.stdout
    assert device_bytes(stick, len(content)) == content


@pytest.mark.root
def test_write_decompresses_an_xz_image(tmp_path: Path, stick: Path) -> None:
    content = make_image(tmp_path / "golem.img")
    (tmp_path / "golem.img.xz").write_bytes(lzma.compress(content))
    result = golem_live_write(str(tmp_path / "golem.img.xz"), str(stick), "--yes")
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(device_bytes(stick, len(content))).digest() == \
        hashlib.sha256(content).digest()


@pytest.mark.root
def test_with_a_block_map_only_mapped_blocks_are_written(tmp_path: Path, stick: Path) -> None:
    content = make_image(tmp_path / "golem.img")
    (tmp_path / "golem.bmap").write_text(run("bmaptool", "create", str(tmp_path / "golem.img")))
    for image in ("golem.img", "golem.img.xz"):
        if image.endswith(".xz"):
            (tmp_path / image).write_bytes(lzma.compress(content))
            (tmp_path / "golem.img").unlink()
        result = golem_live_write(str(tmp_path / image), str(stick), "--yes")
        assert result.returncode == 0, result.stderr
        assert b"(mapped blocks only)" in result.stdout
        written = device_bytes(stick, 8 << 20)
        assert written[: 1 << 20] == content[: 1 << 20]
        assert written[5 << 20: (5 << 20) + (64 << 10)] == content[5 << 20: (5 << 20) + (64 << 10)]
        assert written[2 << 20: 3 << 20] == b"\xaa" * (1 << 20)  # the hole was not written


@pytest.mark.root
@pytest.mark.parametrize("case", ["partition", "mounted", "read-only", "too small",
                                  "no confirmation"])
def test_write_refuses_unsafe_targets_and_writes_nothing(tmp_path: Path, case: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices")
    make_image(tmp_path / "golem.img")
    backing = tmp_path / "stick"
    backing.write_bytes(b"\xaa" * ((4 if case == "too small" else 32) << 20))
    if case in ("partition", "mounted"):
        subprocess.run(["sfdisk", "--quiet", str(backing)],
                       input="label: gpt\nstart=2048, size=40960\n", text=True, check=True)
    flags = ("-r",) if case == "read-only" else ("-P",)
    with loop_device(backing, *flags) as device:
        if case in ("partition", "mounted"):
            # This kernel has no partition-table parsers: add the partitions by ioctl.
            run("partx", "--add", str(device))
        target = Path(f"{device}p1") if case == "partition" else device
        mount_point = tmp_path / "mnt"
        if case == "mounted":
            run("mkfs.ext4", "-q", f"{device}p1")  # this kernel has ext4, not vfat
            mount_point.mkdir()
            run("mount", f"{device}p1", str(mount_point))
        try:
            result = golem_live_write(str(tmp_path / "golem.img"), str(target),
                                      *([] if case == "no confirmation" else ["--yes"]),
                                      stdin=b"y\n")
        finally:
            if case == "mounted":
                run("umount", str(mount_point))
        assert result.returncode == 2
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        expected = {"partition": "is a partition", "mounted": "is mounted at",
                    "read-only": "read-only", "too small": "use a larger stick",
                    "no confirmation": "add --yes"}[case]
        assert expected in lines[0]
    assert backing.read_bytes()[:4096] != Path(tmp_path / "golem.img").read_bytes()[:4096]


def test_write_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import golem_live.write as write_command

    monkeypatch.setattr(write_command, "is_root", lambda: False)
    result = CliRunner().invoke(write_command.write, [str(tmp_path / "x.img"), "/dev/sdz"])
    assert isinstance(result.exception, BuildError)
    assert "writing a stick needs root" in str(result.exception)
