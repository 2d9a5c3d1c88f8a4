"""Release artifacts: the imager's meta.json, checksums, signature, xz and block map."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from apt_repo.keys import ephemeral_key
from builder.errors import BuildError
from builder.runner import SubprocessRunner
from release.artifacts import (
    MetaVersion,
    block_map,
    compress,
    created_stamp,
    sign,
    updated_meta,
    write_sums,
)
from tests.conftest import PROJECT_ROOT

SCHEMA = json.loads((PROJECT_ROOT / "release/meta.schema.json").read_text())


def version(id_: str, created: int) -> MetaVersion:
    return MetaVersion(id=id_, path=f"golem-gpu-live-{id_}.img.xz", sha256="a" * 64,
                       created=created_stamp(created))


def test_meta_lists_the_version_in_its_channel_in_the_imagers_format() -> None:
    meta = updated_meta(None, "testing", version("1.0", 1700000000))
    jsonschema.validate(meta, SCHEMA)
    assert meta == {"channels": [{"name": "testing", "versions": [
        {"id": "1.0", "path": "golem-gpu-live-1.0.img.xz", "sha256": "a" * 64,
         "created": "2023-11-14T22:13:20Z"}]}]}


def test_meta_keeps_other_versions_and_channels_and_replaces_a_rebuilt_one() -> None:
    meta = updated_meta(None, "release", version("1.0", 100))
    meta = updated_meta(meta, "testing", version("1.1-rc1", 200))
    meta = updated_meta(meta, "release", version("1.1", 300))
    meta = updated_meta(meta, "release", version("1.0", 50))  # 1.0 again: replaced
    jsonschema.validate(meta, SCHEMA)
    assert [c["name"] for c in meta["channels"]] == ["release", "testing"]
    assert [v["id"] for v in meta["channels"][0]["versions"]] == ["1.0", "1.1"]
    assert meta["channels"][0]["versions"][0]["created"] == created_stamp(50)


@pytest.mark.parametrize("previous", [
    {"channel": []},
    {"channels": [{"name": "nightly", "versions": []}]},
    {"channels": [{"name": "release", "versions": [{"id": "1"}]}]},
    [],
])
def test_a_previous_meta_in_another_format_is_refused(previous: object) -> None:
    with pytest.raises(BuildError, match="not in the imager's format"):
        updated_meta(previous, "release", version("1", 1))  # type: ignore[arg-type]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(previous, SCHEMA)


@pytest.mark.tools
def test_sums_and_signature_verify_with_the_standard_tools(tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    key = ephemeral_key(home)
    (tmp_path / "a.img.xz").write_bytes(b"image")
    (tmp_path / "meta.json").write_text("{}\n")
    sums = write_sums(tmp_path, [tmp_path / "meta.json", tmp_path / "a.img.xz"], lambda m: None)
    signature = sign(key, sums)
    check = subprocess.run(["sha256sum", "-c", sums.name], cwd=tmp_path, capture_output=True,
                           text=True)
    assert check.returncode == 0 and "a.img.xz: OK" in check.stdout
    verify = subprocess.run(["gpg", "--homedir", str(home), "--verify", str(signature),
                             str(sums)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    sums.write_text(sums.read_text().replace("a.img.xz", "b.img.xz"))  # tampered
    assert subprocess.run(["gpg", "--homedir", str(home), "--verify", str(signature),
                           str(sums)], capture_output=True).returncode != 0
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


@pytest.mark.tools
def test_the_image_is_compressed_and_mapped(tmp_path: Path) -> None:
    image = tmp_path / "golem-gpu-live-1.img"
    with open(image, "wb") as handle:
        handle.write(os.urandom(1 << 20))
        handle.truncate(16 << 20)
    out = tmp_path / "out"
    out.mkdir()
    runner = SubprocessRunner(tmp_path / "log")
    compressed = compress(runner, image, out)
    assert compressed == out / "golem-gpu-live-1.img.xz" and image.exists()
    assert not (tmp_path / "golem-gpu-live-1.img.xz").exists()
    assert subprocess.run(["xz", "-dc", str(compressed)], capture_output=True,
                          check=True).stdout == image.read_bytes()
    bmap = block_map(runner, image, out)
    assert bmap.name == "golem-gpu-live-1.bmap"
    text = bmap.read_text()
    assert "<ImageSize> 16777216 </ImageSize>" in text and "<MappedBlocksCount> 256" in text
