"""The Debian archive's state as a cache input: index hashes, newer packages, versions."""

from __future__ import annotations

import lzma
import subprocess
from pathlib import Path

import pytest

from apt_repo.archive_state import (
    Source,
    archive_state,
    compare_versions,
    newer_packages,
    release_hashes,
    sources_of,
)
from builder.config import make_config
from builder.errors import BuildError
from stages.packages import PackagesStage

MIRROR = "http://deb.example/debian"
SECURITY = "http://security.example/debian-security"


def in_release(packages_sha: str, date: str = "Sat, 21 Nov 2026 09:15:44 UTC") -> bytes:
    return (f"Origin: Debian\nSuite: stable\nDate: {date}\nSHA256:\n"
            f" {packages_sha}  2271147 main/binary-amd64/Packages\n"
            f" {'1' * 64}   312784 main/binary-amd64/Packages.xz\n"
            f" {'2' * 64}   100 contrib/binary-amd64/Packages\n"
            f"MD5Sum:\n {'3' * 32} 12 main/binary-amd64/Packages\n").encode()


class FakeArchive:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {
            f"{MIRROR}/dists/trixie/InRelease": in_release("a" * 64),
            f"{MIRROR}/dists/trixie-updates/InRelease": in_release(
                "b" * 64, "Tue, 01 Dec 2026 20:11:05 UTC"),
            f"{SECURITY}/dists/trixie-security/InRelease": in_release("c" * 64),
        }
        self.fetched: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url not in self.files:
            raise BuildError(f"cannot read {url} (ConnectionError)", "check the network")
        return self.files[url]


SOURCES = sources_of(MIRROR, SECURITY, "trixie")


def test_the_state_is_the_hash_of_every_packages_index_of_every_suite() -> None:
    state = archive_state(SOURCES, ("main", "contrib", "non-free"), "amd64", FakeArchive())
    assert state == {
        "debian:trixie/main/binary-amd64": "a" * 64,
        "debian:trixie/contrib/binary-amd64": "2" * 64,
        "debian:trixie-updates/main/binary-amd64": "b" * 64,
        "debian:trixie-updates/contrib/binary-amd64": "2" * 64,
        "debian:trixie-security/main/binary-amd64": "c" * 64,
        "debian:trixie-security/contrib/binary-amd64": "2" * 64,
        # the newest Release date: the installed system's timestamps (SOURCE_DATE_EPOCH)
        "debian-date": "1796155865",
    }


def test_only_the_sha256_section_counts() -> None:
    assert set(release_hashes(in_release("a" * 64).decode())) == {
        "main/binary-amd64/Packages", "main/binary-amd64/Packages.xz",
        "contrib/binary-amd64/Packages"}


def test_an_unreachable_archive_is_a_clear_error() -> None:
    archive = FakeArchive()
    del archive.files[f"{SECURITY}/dists/trixie-security/InRelease"]
    with pytest.raises(BuildError, match="cannot read .*trixie-security/InRelease"):
        archive_state(SOURCES, ("main",), "amd64", archive)


def packages_xz(*entries: tuple[str, str]) -> bytes:
    return lzma.compress("".join(f"Package: {p}\nVersion: {v}\nArchitecture: amd64\n\n"
                                 for p, v in entries).encode(), format=lzma.FORMAT_XZ)


def test_newer_packages_are_the_installed_ones_a_changed_index_has_newer() -> None:
    archive = FakeArchive()
    archive.files[f"{SECURITY}/dists/trixie-security/main/binary-amd64/Packages.xz"] = \
        packages_xz(("openssl", "3.5.1-1+deb13u1"), ("libc6", "2.41-12"),
                    ("curl", "8.14.1-2+deb13u1"))
    installed = {"openssl": "3.5.1-1", "libc6": "2.41-12", "bash": "5.2.37-2"}
    assert newer_packages(installed, ["debian:trixie-security/main/binary-amd64"], SOURCES,
                          archive) == [("openssl", "3.5.1-1", "3.5.1-1+deb13u1")]
    # the archive's date is no index: a changed date alone names no package
    assert newer_packages(installed, ["debian-date"], SOURCES, archive) == []


def test_plan_says_how_many_installed_packages_are_newer(fake_project: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    archive = FakeArchive()
    archive.files["http://security.debian.org/debian-security/dists/trixie-security/main/"
                  "binary-amd64/Packages.xz"] = packages_xz(
        ("openssl", "3.5.1-1+deb13u1"), ("libssl3t64", "3.5.1-1+deb13u1"))
    monkeypatch.setattr("apt_repo.archive_state.http_fetch", archive)
    previous = tmp_path / "entry"
    previous.mkdir()
    (previous / "packages.txt").write_text("openssl\t3.5.1-1\nlibssl3t64\t3.5.1-1\nbash\t5.2\n")
    config = make_config(fake_project, "gpu-node", "1", tmp_path / "t", tmp_path / "w")
    name = "debian:trixie-security/main/binary-amd64"
    words = PackagesStage().explain(config, {name: "old"}, {name: "new"}, previous)
    assert words == ["Debian archive changed: 2 packages newer (libssl3t64 3.5.1-1 -> "
                     "3.5.1-1+deb13u1, openssl 3.5.1-1 -> 3.5.1-1+deb13u1)"]


PAIRS = [("1.0", "1.0"), ("1.0", "1.1"), ("1.0~rc1", "1.0"), ("1:0.9", "2.0"),
         ("2.41-12", "2.41-12+deb13u1"), ("3.5.1-1", "3.5.1-1+deb13u1"), ("1.0a", "1.0+"),
         ("1.0-1", "1.0-1~bpo1"), ("0.17.6", "0.17.10"), ("6.12.57-1", "6.12.57+deb13-1"),
         ("1.2.3~~", "1.2.3~"), ("a", "b"), ("1.0.0", "1.0"), ("2:1", "10:0"),
         ("1.0-10", "1.0-9"), ("9.7p1-7", "10.0p1-5")]


@pytest.mark.tools
@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_version_order_is_dpkgs(left: str, right: str) -> None:
    for a, b in ((left, right), (right, left)):
        expected = 0
        for relation, value in (("lt", -1), ("gt", 1)):
            if subprocess.run(["dpkg", "--compare-versions", a, relation, b]).returncode == 0:
                expected = value
        assert compare_versions(a, b) == expected, (a, b)


def test_the_sources_follow_the_profile() -> None:
    assert sources_of(MIRROR, "", "trixie") == [Source(MIRROR, "trixie"),
                                                Source(MIRROR, "trixie-updates")]
