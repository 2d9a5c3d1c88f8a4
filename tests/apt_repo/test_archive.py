"""The archive: Release content (recorded argv, then real apt-ftparchive), signing, gpgv."""

from __future__ import annotations

import gzip
import lzma
import re
import subprocess
from pathlib import Path

import pytest

from apt_repo.archive import ArchiveSpec, build_archive, index, rfc2822, verify
from apt_repo.keys import SigningKey
from builder.errors import BuildError
from builder.runner import SubprocessRunner
from tests.fakes import RecordingRunner

from .conftest import make_deb, need_tools

PACKAGES = "Package: foo\nVersion: 1\nFilename: pool/main/f/foo/foo_1_all.deb\n"
RELEASE = ("Origin: golem-gpu-live\nCodename: bookworm\nDate: Thu, 01 Jan 2015 00:00:00 UTC\n"
           "SHA256:\n 00 1 main/binary-amd64/Packages\n")


def test_rfc2822_is_locale_free_utc() -> None:
    assert rfc2822(0) == "Thu, 01 Jan 1970 00:00:00 UTC"
    assert rfc2822(1420070400 + 86400 * 45) == "Sun, 15 Feb 2015 00:00:00 UTC"


def test_index_asks_apt_ftparchive_for_strong_sums_and_adds_valid_until(
        tmp_path: Path) -> None:
    runner = RecordingRunner(responses={("apt-ftparchive", "--arch"): (0, PACKAGES),
                                        ("apt-ftparchive", "-o"): (0, RELEASE)})
    spec = ArchiveSpec(date=1420070400, valid_days=30, codename="bookworm", suite="testing")
    release = index(runner, tmp_path, spec)

    packages_argv, release_argv = runner.argvs
    assert packages_argv[-2:] == ("packages", "pool/main") and "amd64" in packages_argv
    assert runner.calls[1].cwd == str(tmp_path)
    opts = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in release_argv if "=" in a}
    prefix = "APT::FTPArchive::Release::"
    assert opts[prefix + "Date"] == "Thu, 01 Jan 2015 00:00:00 UTC"
    assert opts[prefix + "Suite"] == "testing" and opts[prefix + "Codename"] == "bookworm"
    assert (opts[prefix + "MD5"], opts[prefix + "SHA1"]) == ("false", "false")
    assert (opts[prefix + "SHA256"], opts[prefix + "SHA512"]) == ("true", "true")
    assert release_argv[-2:] == ("release", "dists/bookworm")
    assert release.read_text() == RELEASE.replace(
        "UTC\nSHA256", "UTC\nValid-Until: Sat, 31 Jan 2015 00:00:00 UTC\nSHA256")
    binary = tmp_path / "dists/bookworm/main/binary-amd64"
    assert (binary / "Packages").read_text() == PACKAGES
    assert gzip.decompress((binary / "Packages.gz").read_bytes()).decode() == PACKAGES
    assert lzma.decompress((binary / "Packages.xz").read_bytes()).decode() == PACKAGES


def test_no_valid_until_policy_writes_none(tmp_path: Path) -> None:
    runner = RecordingRunner(responses={("apt-ftparchive", "-o"): (0, RELEASE)})
    release = index(runner, tmp_path, ArchiveSpec(date=0, valid_days=None))
    assert "Valid-Until" not in release.read_text()


@pytest.fixture
def built(tmp_path: Path, signing_key: SigningKey) -> tuple[Path, SubprocessRunner]:
    need_tools()
    debs = tmp_path / "debs"
    debs.mkdir()
    make_deb(debs, "foo", "1.0", "all")
    make_deb(debs, "bar", "2:3.1-1", "amd64")
    make_deb(debs, "baz", "1", "arm64")  # another architecture: not in binary-amd64
    runner = SubprocessRunner(tmp_path / "log")
    spec = ArchiveSpec(date=1700000000, valid_days=14, suite="unstable")
    result = build_archive(runner, sorted(debs.glob("*.deb")), tmp_path / "repo", spec,
                           signing_key, tmp_path / "repo" / "key.gpg")
    assert result.fingerprint == signing_key.fingerprint
    return tmp_path / "repo", runner


@pytest.mark.tools
def test_real_release_content(built: tuple[Path, SubprocessRunner]) -> None:
    root, _ = built
    release = (root / "dists/bookworm/Release").read_text()
    fields = dict(re.findall(r"^([A-Za-z-]+): (.+)$", release, re.M))
    assert fields["Date"] == "Tue, 14 Nov 2023 22:13:20 UTC"
    assert fields["Valid-Until"] == "Tue, 28 Nov 2023 22:13:20 UTC"
    assert fields["Suite"] == "unstable" and fields["Codename"] == "bookworm"
    assert fields["Origin"] == fields["Label"] == "golem-gpu-live"
    assert "SHA256:" in release and "SHA512:" in release
    assert "MD5Sum:" not in release and "SHA1:" not in release
    assert re.search(r"^ [0-9a-f]{64} +\d+ main/binary-amd64/Packages.xz$", release, re.M)
    packages = (root / "dists/bookworm/main/binary-amd64/Packages").read_text()
    assert "Filename: pool/main/f/foo/foo_1.0_all.deb" in packages
    assert "Filename: pool/main/b/bar/bar_3.1-1_amd64.deb" in packages
    assert "baz" not in packages and "MD5sum" not in packages
    assert not (root / "pool/main/b/baz").exists()  # not placed: not this repository's arch


@pytest.mark.tools
def test_signatures_are_strong_and_by_the_key(built: tuple[Path, SubprocessRunner],
                                              signing_key: SigningKey) -> None:
    root, _ = built
    dist = root / "dists/bookworm"
    for args in ([str(dist / "InRelease")], [str(dist / "Release.gpg"), str(dist / "Release")]):
        status = subprocess.run(["gpgv", "--status-fd", "1", "--keyring",
                                 str(root / "key.gpg"), *args],
                                capture_output=True, text=True, check=True).stdout
        validsig = next(line for line in status.splitlines() if "VALIDSIG" in line).split()
        assert validsig[2] == signing_key.fingerprint
        assert validsig[9] == "10"  # SHA512


@pytest.mark.tools
def test_verify_refuses_other_key_and_altered_release(
        built: tuple[Path, SubprocessRunner], other_key: SigningKey, tmp_path: Path,
        signing_key: SigningKey) -> None:
    root, runner = built
    release = root / "dists/bookworm/Release"
    other = tmp_path / "other.gpg"
    other.write_bytes(subprocess.run(["gpg", "--homedir", str(other_key.gnupghome),
                                      "--export", other_key.fingerprint],
                                     capture_output=True, check=True).stdout)
    with pytest.raises(BuildError, match="gpgv does not accept InRelease with the public key"):
        verify(runner, release, other, signing_key.fingerprint)
    release.write_text(release.read_text().replace("unstable", "release"))
    with pytest.raises(BuildError, match="gpgv does not accept Release.gpg"):
        verify(runner, release, root / "key.gpg", signing_key.fingerprint)


@pytest.mark.tools
def test_conflicting_debs_and_garbage_are_refused(tmp_path: Path,
                                                  signing_key: SigningKey) -> None:
    need_tools()
    runner = SubprocessRunner(tmp_path / "log")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    a = make_deb(one, "foo", "1", files={"usr/share/foo/a": "a"})
    b = make_deb(two, "foo", "1", files={"usr/share/foo/a": "b"})
    spec = ArchiveSpec(date=0, valid_days=None)
    with pytest.raises(BuildError, match="are both foo_1_all.deb but differ"):
        build_archive(runner, [a, b], tmp_path / "repo", spec, signing_key, tmp_path / "k")
    junk = tmp_path / "junk.deb"
    junk.write_text("not a deb")
    with pytest.raises(BuildError, match="junk.deb is not a valid .deb package"):
        build_archive(runner, [junk], tmp_path / "repo", spec, signing_key, tmp_path / "k")
