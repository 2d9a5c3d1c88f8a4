"""The golem-provider profile end to end: GOLEM's components come from a fake GitHub
releases API on 127.0.0.1, go through the signed repository stage, and are installed
by apt (signatures checked) into the image."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_repo.github import GitHubSettings
from builder.config import make_config
from builder.pipeline import make_plan
from stages.catalog import stage_list
from tests.apt_repo.conftest import FakeGitHub, make_deb, start_fake_github
from tests.conftest import PROJECT_ROOT, golem_live, require_root

pytestmark = pytest.mark.root

# (GitHub repository, a tag its pattern in apt_repo/components.toml selects,
#  the package its release carries)
RELEASES = [
    ("golemfactory/yagna", "pre-rel-v0.14.0-rc1", "golem-provider", "0.14.0~rc1"),
    ("golemfactory/ya-runtime-wasi", "pre-rel-v0.2.4", "ya-runtime-wasi-cli", "0.2.4"),
    ("golemfactory/ya-runtime-vm", "pre-rel-v0.4.0-ITL-1", "ya-runtime-vm", "0.4.0"),
    ("golemfactory/ya-runtime-vm-nvidia", "pre-rel-v0.1.3-2", "ya-runtime-vm-nvidia", "0.1.3"),
    ("golemfactory/golem-nvidia-kernel", "v6.1.0", "golem-nvidia-kernel", "6.1.0"),
    ("golemfactory/ya-installer-resources", "v0.1.5", "ya-installer-resources", "0.1.5"),
]


@pytest.fixture(scope="module")
def fake_golem_github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGitHub]:
    debs = tmp_path_factory.mktemp("golem-debs")
    for fake in start_fake_github():
        for repo, tag, package, version in RELEASES:
            files = {f"usr/share/{package}/VERSION": version + "\n"}
            if package == "golem-provider":
                files["usr/bin/golemsp"] = "#!/bin/sh\necho fake golemsp \"$@\"\n"
            fake.add_release(repo, tag, [make_deb(debs, package, version, files=files)],
                             prerelease=tag.startswith("pre-rel"))
        yield fake


def unsquashfs_bytes(squashfs: Path, path: str) -> bytes:
    return subprocess.run(["unsquashfs", "-cat", str(squashfs), path], capture_output=True,
                          check=True).stdout


def unsquashfs_cat(squashfs: Path, path: str) -> str:
    return unsquashfs_bytes(squashfs, path).decode()


def test_golem_provider_image_installs_golem_components_from_the_signed_repository(
        fake_golem_github: FakeGitHub, build_base: Path, tmp_path: Path) -> None:
    require_root()
    work = tmp_path / "work"
    args = ["--profile", "golem-provider", "--version", "test", "--tmp-dir",
            str(build_base / "tmp"), "--work-dir", str(work),
            "--github-api", fake_golem_github.base]
    # forced: a reused --build-cache must still exercise the downloads
    result = golem_live("build", *args, "--until", "squashfs", "--force", "repository")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "[repository] running" in result.stderr
    downloads = [path for path, _ in fake_golem_github.requests if path.startswith("/download")]
    assert len(downloads) == len(RELEASES)
    config = make_config(PROJECT_ROOT, "golem-provider", "test", build_base / "tmp", work)
    stages = stage_list(config, GitHubSettings(api_url=fake_golem_github.base))
    step = make_plan(config, stages).step("squashfs")
    assert step.cached
    squashfs = step.cache.entry(step.key) / "live/filesystem.squashfs"
    status = unsquashfs_cat(squashfs, "var/lib/dpkg/status")
    for _, _, package, version in RELEASES:
        if package == "ya-runtime-vm":
            continue  # in the repository, but not on the profile's list
        assert f"Package: {package}\nStatus: install ok installed" in status
        assert unsquashfs_cat(squashfs, f"usr/share/{package}/VERSION").strip() == version
    assert "Package: golemwz\nStatus: install ok installed" in status
    assert "golemwz.cli" in unsquashfs_cat(squashfs, "usr/bin/golemwz")
    sources = unsquashfs_cat(squashfs, "etc/apt/sources.list.d/golem-gpu-live.sources")
    assert "Signed-By: /usr/share/keyrings/golem-gpu-live.gpg" in sources
    assert "trusted" not in sources
    keyring = unsquashfs_bytes(squashfs, "usr/share/keyrings/golem-gpu-live.gpg")
    assert keyring == (step.cache.dir.parent / "repository").joinpath(
        make_plan(config, stages).step("repository").key, "repo.gpg").read_bytes()
    listing = subprocess.run(["unsquashfs", "-l", str(squashfs)], capture_output=True,
                             text=True, check=True).stdout
    assert "etc/apt/trusted.gpg.d/golem" not in listing
    assert "var/lib/golem-live/build-repo" not in listing
