"""`golem-live release` on the real gpu-node build: the files verify with the standard
tools, meta.json is in the imager's format, and bmaptool writes the image faithfully."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest

from apt_repo.keys import ephemeral_key
from tests.conftest import PROJECT_ROOT, BuiltImage, build_args, golem_live

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def released(gpu_node_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    home = tmp_path_factory.mktemp("gpg")
    home.chmod(0o700)
    ephemeral_key(home)
    out = tmp_path_factory.mktemp("release")
    result = golem_live("release", *build_args(gpu_node_image.tmp_dir, gpu_node_image.work_dir),
                        "--channel", "testing", "--out", str(out), "--gnupghome", str(home))
    yield out, home, result
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def test_release_files_verify(released: tuple[Path, Path, subprocess.CompletedProcess[str]]
                              ) -> None:
    out, home, result = released
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["SHA256SUMS", "SHA256SUMS.asc", "golem-gpu-live-test.bmap",
                     "golem-gpu-live-test.img.xz", "golem-gpu-live-test.iso",
                     "golem-gpu-live-test.packages.lock", "meta.json"]
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    verify = subprocess.run(["gpg", "--homedir", str(home), "--verify", "SHA256SUMS.asc",
                             "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    meta = json.loads((out / "meta.json").read_text())
    jsonschema.validate(meta, json.loads((PROJECT_ROOT / "release/meta.schema.json")
                                         .read_text()))
    [entry] = meta["channels"][0]["versions"]
    assert meta["channels"][0]["name"] == "testing" and entry["id"] == "test"
    assert entry["path"] == "golem-gpu-live-test.img.xz"
    assert f"{entry['sha256']}  golem-gpu-live-test.img.xz" in (out / "SHA256SUMS").read_text()


def test_the_lock_names_every_installed_package_with_its_digest(
        released: tuple[Path, Path, subprocess.CompletedProcess[str]]) -> None:
    lock = (released[0] / "golem-gpu-live-test.packages.lock").read_text().splitlines()
    packages = {line.split()[0]: line.split()[1:] for line in lock}
    assert {"linux-image-amd64", "live-boot", "systemd", "python3-dialog"} <= set(packages)
    digests = [digest for _, digest in packages.values()]
    assert sum(bool(re.fullmatch(r"[0-9a-f]{64}", d)) for d in digests) > 0.95 * len(digests)


def test_bmaptool_writes_the_image_as_built(
        released: tuple[Path, Path, subprocess.CompletedProcess[str]],
        gpu_node_image: BuiltImage, tmp_path: Path) -> None:
    out = released[0]
    target = tmp_path / "stick.raw"
    target.write_bytes(b"")
    result = subprocess.run(["bmaptool", "copy", "--bmap", str(out / "golem-gpu-live-test.bmap"),
                             str(out / "golem-gpu-live-test.img.xz"), str(target)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert subprocess.run(["cmp", str(target), str(gpu_node_image.img)]).returncode == 0


def test_an_edited_published_image_is_not_released(gpu_node_image: BuiltImage,
                                                   tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    ephemeral_key(home)
    args = build_args(gpu_node_image.tmp_dir, gpu_node_image.work_dir)
    try:
        with open(gpu_node_image.img, "r+b") as handle:  # a loop mount would do the same
            handle.seek(4 << 20)
            handle.write(b"someone's wallet")
        result = golem_live("release", *args, "--gnupghome", str(home),
                            "--out", str(tmp_path / "out"))
        assert result.returncode == 2
        assert "differs from the build's image" in result.stderr
    finally:
        # The next build publishes the pristine image again (the cache was never touched).
        rebuilt = golem_live("build", *args, "--offline")
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    with open(gpu_node_image.img, "rb") as handle:
        handle.seek(4 << 20)
        assert handle.read(16) != b"someone's wallet"
