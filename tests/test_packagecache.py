"""The shared package cache: entries only from verified files, lent by hard links."""

from __future__ import annotations

import hashlib
import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

from builder.packagecache import (
    ARCHIVES,
    LISTS,
    PackageCache,
    deb_name,
    harvest_bootstrap,
    index_of,
    lend,
)
from tests.fakes import RecordingRunner


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stanza(package: str, version: str, arch: str, data: bytes) -> str:
    return (f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
            f"Description: a package\n Version: 9 (a description line, not a field)\n"
            f"Filename: pool/main/x/{package}_{version.split(':')[-1]}_{arch}.deb\n"
            f"Size: {len(data)}\nSHA256: {sha(data)}\n\n")


def write_index(root: Path, packages: dict[tuple[str, str, str], bytes]) -> None:
    lists = root / LISTS
    lists.mkdir(parents=True, exist_ok=True)
    text = "".join(stanza(*key, data) for key, data in packages.items())
    (lists / "deb.debian.org_debian_dists_trixie_main_binary-amd64_Packages").write_text(text)


def test_index_names_files_as_apt_does(tmp_path: Path) -> None:
    write_index(tmp_path, {("libcap2", "1:2.75-7", "amd64"): b"cap",
                           ("tzdata", "2025b-4", "all"): b"tz"})
    index = index_of(tmp_path / LISTS)
    assert index == {sha(b"cap"): "libcap2_1%3a2.75-7_amd64.deb",
                     sha(b"tz"): "tzdata_2025b-4_all.deb"}
    assert deb_name("a", "1:2", "all") == "a_1%3a2_all.deb"


def test_only_files_the_index_vouches_for_enter_the_cache(tmp_path: Path) -> None:
    good, corrupt = b"good package", b"corrupt package"
    write_index(tmp_path, {("good", "1", "amd64"): good, ("bad", "1", "amd64"): corrupt})
    archives = tmp_path / ARCHIVES
    archives.mkdir(parents=True)
    (archives / "good_1_amd64.deb").write_bytes(good)
    (archives / "bad_1_amd64.deb").write_bytes(b"corrupt pack")  # truncated download
    (archives / "unknown_1_amd64.deb").write_bytes(b"not in the index")
    (archives / "partial").mkdir()
    (archives / "partial" / "good_1_amd64.deb").write_bytes(good[:3])
    cache = PackageCache(tmp_path / "cache")

    assert cache.commit_from(archives, index_of(tmp_path / LISTS)) == 1
    entries = cache.entries()
    assert list(entries) == [sha(good)]
    assert entries[sha(good)].read_bytes() == good
    assert entries[sha(good)].name == "good_1_amd64.deb"
    assert not list((tmp_path / "cache").glob(".tmp-*"))
    # A second harvest of the same files adds nothing.
    assert cache.commit_from(archives, index_of(tmp_path / LISTS)) == 0


def test_a_lease_links_what_the_index_names_and_keeps_new_downloads(tmp_path: Path) -> None:
    old, new, stale = b"old", b"new", b"stale version"
    cache = PackageCache(tmp_path / "cache")
    seeded = tmp_path / "seed"
    seeded.mkdir()
    (seeded / "old_1_all.deb").write_bytes(old)
    (seeded / "stale_0_all.deb").write_bytes(stale)
    cache.commit_from(seeded, {sha(old): "old_1_all.deb", sha(stale): "stale_0_all.deb"})

    root = tmp_path / "rootfs"
    write_index(root, {("old", "1", "all"): old, ("new", "2", "all"): new})
    runner = RecordingRunner()
    with ExitStack() as stack:
        lease = lend(cache, stack, runner, root)
        assert runner.calls[-1].argv == ("mount", "--bind", str(lease.staging),
                                         str(root / ARCHIVES))
        assert lease.seed() == 1
        assert sorted(p.name for p in lease.staging.glob("*.deb")) == ["old_1_all.deb"]
        # a link, no copy
        lent = (lease.staging / "old_1_all.deb").stat().st_ino
        assert lent == cache.entries()[sha(old)].stat().st_ino
        (lease.staging / "new_2_all.deb").write_bytes(new)  # what apt downloaded
        assert lease.harvest() == 1
    assert runner.calls[-1].argv == ("umount", str(root / ARCHIVES))
    assert not lease.staging.exists()
    assert sorted(cache.entries()) == sorted([sha(old), sha(new), sha(stale)])


def test_bootstrap_harvest_leaves_no_deb_in_the_target(tmp_path: Path) -> None:
    from builder.config import BuildConfig

    data = b"base-files"
    root = tmp_path / "rootfs"
    write_index(root, {("base-files", "13", "amd64"): data})
    (root / ARCHIVES).mkdir(parents=True)
    (root / ARCHIVES / "base-files_13_amd64.deb").write_bytes(data)
    (root / ARCHIVES / "lock").write_bytes(b"")  # apt's, left by mmdebstrap
    config = BuildConfig.__new__(BuildConfig)
    object.__setattr__(config, "tmp_dir", tmp_path / "tmp")
    assert harvest_bootstrap(config, root, lambda _m: None) == 1
    assert not list((root / ARCHIVES).glob("*.deb"))
    assert not (root / ARCHIVES / "lock").exists()
    assert [p.name for p in (tmp_path / "tmp/packages").iterdir()] == [sha(data)]


def test_two_leases_at_once_keep_each_other_s_staging(tmp_path: Path) -> None:
    # modules-nvidia and modules-zfs lend at the same time: a lease's staging dir is the
    # source of a bind mount (nothing mounted under it), so only its owner says it is live.
    cache = PackageCache(tmp_path / "cache")
    runner = RecordingRunner()
    with ExitStack() as stack:
        first = lend(cache, stack, runner, tmp_path / "a")
        second = lend(cache, stack, runner, tmp_path / "b")
        assert first.staging.is_dir() and second.staging.is_dir()
        assert first.staging.name.startswith(f".tmp-{os.getpid()}-")


def test_what_a_killed_build_left_is_swept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    cache = PackageCache(tmp_path / "cache")
    left = [tmp_path / "cache" / name for name in (f".tmp-{dead.pid}-x1", ".tmp-lease-old")]
    for path in left:
        (path / "partial").mkdir(parents=True)
    live = cache.temp_dir()
    cache.sweep_temps()
    assert not any(path.exists() for path in left)
    assert live.is_dir()
