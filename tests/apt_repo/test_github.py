"""GOLEM's releases through a fake GitHub API on 127.0.0.1 serving real .debs."""

from __future__ import annotations

from pathlib import Path

import pytest

from apt_repo.components import Component, Selection
from apt_repo.github import GitHubClient, GitHubSettings
from builder.errors import BuildError

from .conftest import FakeGitHub, make_deb

pytestmark = pytest.mark.tools

REPO = "golemfactory/yagna"


def component(tag: str, prerelease: bool = False,
              assets: tuple[str, ...] = ("golem-provider_*.deb",)) -> Component:
    return Component("yagna", REPO, Selection(tag, prerelease), assets)


def client(fake: FakeGitHub, sleeps: list[float] | None = None, attempts: int = 3,
           token: str | None = None) -> GitHubClient:
    waits = sleeps if sleeps is not None else []
    return GitHubClient(GitHubSettings(api_url=fake.base, attempts=attempts, backoff=0.5,
                                       timeout=5, token=token), sleep=waits.append)


@pytest.fixture
def yagna(fake_github: FakeGitHub, tmp_path: Path) -> FakeGitHub:
    src = tmp_path / "src"
    src.mkdir()
    for tag, version, pre, published in [("v0.15.0", "0.15.0", False, "2024-01-01T00:00:00Z"),
                                         ("v0.15.1", "0.15.1", False, "2024-02-01T00:00:00Z"),
                                         ("v0.16.0-rc1", "0.16.0~rc1", True,
                                          "2024-03-01T00:00:00Z"),
                                         ("v1.0.0", "1.0.0", False, "2024-04-01T00:00:00Z")]:
        debs = [make_deb(src, "golem-provider", version, "amd64"),
                make_deb(src, "golem-requestor", version, "amd64")]
        fake_github.add_release(REPO, tag, debs, prerelease=pre, published=published)
    return fake_github


def test_pattern_selects_latest_match_and_only_wanted_assets(yagna: FakeGitHub,
                                                             tmp_path: Path) -> None:
    got = client(yagna).fetch(component(r"^v0\.15\."), "release", tmp_path / "out")
    assert got.tag == "v0.15.1"
    assert [f.name for f in got.files] == ["golem-provider_0.15.1_amd64.deb"]
    assert got.files[0].read_bytes() == yagna.blobs[
        "/download/golemfactory/yagna/v0.15.1/golem-provider_0.15.1_amd64.deb"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "golem-provider_0.15.1_amd64.deb"]  # no partial files left behind


def test_prerelease_flag(yagna: FakeGitHub, tmp_path: Path) -> None:
    assert client(yagna).fetch(component(r"^v0\."), "release", tmp_path / "a").tag == "v0.15.1"
    assert client(yagna).fetch(component(r"^v0\.", prerelease=True), "release",
                               tmp_path / "b").tag == "v0.16.0-rc1"


def test_no_matching_tag(yagna: FakeGitHub, tmp_path: Path) -> None:
    with pytest.raises(BuildError) as err:
        client(yagna).fetch(component(r"^v2\."), "release", tmp_path)
    assert str(err.value).startswith(
        "no release of golemfactory/yagna has a tag matching '^v2\\\\.' (prereleases excluded)"
        "; newest tags: v1.0.0, v0.16.0-rc1, v0.15.1, v0.15.0 — adjust the pattern")


def test_retries_with_backoff_then_succeeds(yagna: FakeGitHub, tmp_path: Path) -> None:
    yagna.fail_next = 2
    sleeps: list[float] = []
    got = client(yagna, sleeps).fetch(component(r"^v1\."), "release", tmp_path)
    assert got.tag == "v1.0.0"
    assert sleeps == [0.5, 1.0]
    assert [p for p, _ in yagna.requests[:3]] == ["/repos/golemfactory/yagna/releases"] * 3


def test_gives_up_after_the_attempts(yagna: FakeGitHub, tmp_path: Path) -> None:
    yagna.fail_next = 10
    sleeps: list[float] = []
    with pytest.raises(BuildError) as err:
        client(yagna, sleeps, attempts=3).fetch(component(r"^v1\."), "release", tmp_path)
    assert str(err.value).startswith(
        f"cannot reach the GitHub API at {yagna.base}: HTTP 503 (after 3 attempts) — ")
    assert len(yagna.requests) == 3 and sleeps == [0.5, 1.0]
    assert yagna.fail_next == 7


def test_download_is_retried_too(yagna: FakeGitHub, tmp_path: Path) -> None:
    c = client(yagna)
    releases = c.releases(REPO)
    asset = next(r for r in releases if r.tag == "v1.0.0").assets[0]
    yagna.fail_next = 1
    assert c.download(asset, tmp_path).read_bytes() == yagna.blobs[
        asset.url.removeprefix(yagna.base)]


def test_unreachable_host(closed_port: int, tmp_path: Path) -> None:
    sleeps: list[float] = []
    c = GitHubClient(GitHubSettings(api_url=f"http://127.0.0.1:{closed_port}", attempts=2,
                                    backoff=0.1, timeout=5), sleep=sleeps.append)
    with pytest.raises(BuildError) as err:
        c.fetch(component("."), "release", tmp_path)
    line = str(err.value)
    assert line.startswith(f"cannot reach the GitHub API at http://127.0.0.1:{closed_port}: "
                           "connection refused (after 2 attempts) — check the network")
    assert "LOCAL_DEBS" in line and "\n" not in line
    assert sleeps == [0.1]
    with pytest.raises(BuildError, match="connection refused"):
        c.check_reachable()


def test_size_mismatch_is_retried_then_refused(fake_github: FakeGitHub,
                                               tmp_path: Path) -> None:
    deb = make_deb(tmp_path, "golem-provider", "1", "amd64")
    fake_github.add_release(REPO, "v1", [deb], size_delta=7)
    sleeps: list[float] = []
    with pytest.raises(BuildError, match=r"golem-provider_1_amd64.deb: got \d+ bytes, "
                                         r"GitHub lists \d+ \(after 3 attempts\)"):
        client(fake_github, sleeps).fetch(component("v1"), "release", tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_checksum_mismatch_is_refused(fake_github: FakeGitHub, tmp_path: Path) -> None:
    deb = make_deb(tmp_path, "golem-provider", "1", "amd64")
    fake_github.add_release(REPO, "v1", [deb], digest="sha256:" + "0" * 64)
    with pytest.raises(BuildError, match="SHA-256 [0-9a-f]{64} does not match the published"):
        client(fake_github).fetch(component("v1"), "release", tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_token_is_sent_only_when_given(yagna: FakeGitHub, tmp_path: Path) -> None:
    client(yagna).releases(REPO)
    client(yagna, token="s3cret").releases(REPO)
    assert [auth for _, auth in yagna.requests] == [None, "Bearer s3cret"]
    assert "s3cret" not in repr(GitHubSettings(token="s3cret"))


def test_unknown_repository(yagna: FakeGitHub, tmp_path: Path) -> None:
    c = Component("nope", "golemfactory/nope", Selection(".", False))
    with pytest.raises(BuildError, match="GitHub answered HTTP 404 .* check `repo`"):
        client(yagna).fetch(c, "release", tmp_path)


def test_pages_are_followed(fake_github: FakeGitHub, tmp_path: Path) -> None:
    deb = make_deb(tmp_path, "golem-provider", "1", "amd64")
    for i in range(150):
        fake_github.add_release(REPO, f"v0.{i}", [deb], published=f"2024-01-01T00:{i // 60:02d}"
                                f":{i % 60:02d}Z")
    releases = client(fake_github).releases(REPO)
    assert len(releases) == 150
    assert [p for p, _ in fake_github.requests] == ["/repos/golemfactory/yagna/releases"] * 2
