"""Release assets need a verifiable SHA-256 (issue 10 item 10); the manifest records it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from apt_repo.assemble import RepoOutcome, write_manifest
from apt_repo.components import Component, Selection
from apt_repo.github import Fetched, GitHubClient, GitHubSettings, parse_sums
from builder.errors import BuildError

from .conftest import FakeGitHub, make_deb

pytestmark = pytest.mark.tools

REPO = "golemfactory/yagna"
COMPONENT = Component("yagna", REPO, Selection("^v", False), ("golem-provider_*.deb",))


def client(fake: FakeGitHub) -> GitHubClient:
    return GitHubClient(GitHubSettings(api_url=fake.base, attempts=2, backoff=0, timeout=5),
                        sleep=lambda _: None)


def add_text_asset(fake: FakeGitHub, tag: str, name: str, text: str) -> None:
    """A plain asset (no API digest) in the release `tag` of REPO."""
    path = f"/download/{REPO}/{tag}/{name}"
    fake.blobs[path] = text.encode()
    release = next(r for r in fake.releases[REPO] if r["tag_name"] == tag)
    asset: dict[str, Any] = {"name": name, "size": len(text.encode()),
                             "browser_download_url": fake.base + path}
    release["assets"].append(asset)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def deb(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    return make_deb(src, "golem-provider", "0.17.0", "amd64")


def test_an_asset_without_any_checksum_is_refused(fake_github: FakeGitHub, deb: Path,
                                                  tmp_path: Path) -> None:
    fake_github.add_release(REPO, "v0.17.0", [deb], digest=None)
    with pytest.raises(BuildError, match="has no published SHA-256") as refused:
        client(fake_github).fetch(COMPONENT, "release", tmp_path / "out")
    assert "--packages-dir" in refused.value.fix
    assert not (tmp_path / "out" / deb.name).exists()
    assert not any(path.endswith(deb.name) for path, _ in fake_github.requests)  # not fetched


def test_a_sha256sums_asset_verifies_it(fake_github: FakeGitHub, deb: Path,
                                        tmp_path: Path) -> None:
    fake_github.add_release(REPO, "v0.17.0", [deb], digest=None)
    add_text_asset(fake_github, "v0.17.0", "SHA256SUMS", f"{sha256(deb)}  {deb.name}\n")
    got = client(fake_github).fetch(COMPONENT, "release", tmp_path / "out")
    assert [p.name for p in got.files] == [deb.name]
    (name, url, digest), = got.sources
    assert (name, digest) == (deb.name, sha256(deb)) and url.endswith(f"/v0.17.0/{deb.name}")


def test_a_per_file_sha256_asset_verifies_it(fake_github: FakeGitHub, deb: Path,
                                             tmp_path: Path) -> None:
    fake_github.add_release(REPO, "v0.17.0", [deb], digest=None)
    add_text_asset(fake_github, "v0.17.0", f"{deb.name}.sha256", sha256(deb) + "\n")
    got = client(fake_github).fetch(COMPONENT, "release", tmp_path / "out")
    assert got.sources[0][2] == sha256(deb)


def test_a_wrong_sums_file_refuses_the_download(fake_github: FakeGitHub, deb: Path,
                                                tmp_path: Path) -> None:
    fake_github.add_release(REPO, "v0.17.0", [deb], digest=None)
    add_text_asset(fake_github, "v0.17.0", "SHA256SUMS", f"{'1' * 64} *{deb.name}\n")
    with pytest.raises(BuildError, match="does not match the published"):
        client(fake_github).fetch(COMPONENT, "release", tmp_path / "out")
    assert not (tmp_path / "out" / deb.name).exists()


def test_api_digest_and_sums_file_must_agree(fake_github: FakeGitHub, deb: Path,
                                             tmp_path: Path) -> None:
    fake_github.add_release(REPO, "v0.17.0", [deb])  # with the API's digest
    add_text_asset(fake_github, "v0.17.0", "SHA256SUMS", f"{'2' * 64}  {deb.name}\n")
    with pytest.raises(BuildError, match="disagree"):
        client(fake_github).fetch(COMPONENT, "release", tmp_path / "out")


def test_parse_sums_reads_sha256sum_output() -> None:
    text = f"{'a' * 64}  one.deb\n{'B' * 64} *./two.deb\nnot a line\n"
    assert parse_sums(text) == {"one.deb": "a" * 64, "two.deb": "b" * 64}


def test_the_manifest_records_each_assets_sha256_and_url(tmp_path: Path) -> None:
    from apt_repo.archive import ArchiveResult, DebInfo

    archive = ArchiveResult(tmp_path, tmp_path / "dists/bookworm/Release",
                            (DebInfo("golem-provider", "0.17.0", "amd64"),), "F" * 40)
    fetched = Fetched("yagna", REPO, "v0.17.0", (tmp_path / "golem-provider.deb",),
                      (("golem-provider.deb", "https://example.org/g.deb", "c" * 64),))
    manifest = tmp_path / "manifest.json"
    write_manifest(manifest, RepoOutcome(archive, (fetched,)))
    (entry,) = json.loads(manifest.read_text())["github"]
    assert entry["assets"] == [{"name": "golem-provider.deb",
                                "url": "https://example.org/g.deb", "sha256": "c" * 64}]
