"""Downloaded .deb files kept across builds and profiles, addressed by their sha256.

Layout under TMP_DIR/packages (shared by every profile and build):
    <root>/<sha256>/<apt file name>   one verified package (name_version_arch.deb)
    <root>/.tmp-PID-*                 work in progress of process PID (a lease's staging
                                      dir, a commit); never read; swept by the next
                                      lease once PID is gone

An entry appears only by renaming a finished directory into place, after its sha256 was
computed from the bytes and found in the archive's index (the chroot's apt lists, which
apt verified against the signed InRelease): a partial or corrupt file never enters it.

A build borrows the cache through a `Lease`: a staging directory of hard links to the
entries the chroot's index names, bind-mounted over the chroot's /var/cache/apt/archives
(the bootstrap: filled into the target's own archives before mmdebstrap runs). apt checks
every file's hash itself and fetches what is missing or wrong; afterwards the
new files are verified and committed. Nothing of the cache ends up in a stage's output,
and no key depends on it: a warm cache only saves the downloads.

Other stages (a compile in a throw-away rootfs) use `apt_archives()` around their
apt-get runs, after `apt-get update`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from builder.cache import sha256_of
from builder.config import BuildConfig
from builder.mounts import mount, mounts_under, safe_rmtree
from builder.runner import Runner

ARCHIVES = Path("var/cache/apt/archives")
LISTS = Path("var/lib/apt/lists")
SHA256 = re.compile(r"[0-9a-f]{64}")
_INDEX_LINE = re.compile(rb"^(Package|Version|Architecture|SHA256): (\S+)$", re.MULTILINE)


def cache_dir(config: BuildConfig) -> Path:
    return config.tmp_dir / "packages"


def index_of(lists: Path) -> dict[str, str]:
    """sha256 -> the file name apt gives the package, from every Packages index in `lists`
    (apt's, uncompressed)."""
    found: dict[str, str] = {}
    if not lists.is_dir():
        return found
    for path in sorted(lists.glob("*_Packages")):
        fields: dict[bytes, str] = {}
        for match in _INDEX_LINE.finditer(path.read_bytes()):
            key, value = match.group(1), match.group(2).decode()
            if key == b"Package":
                fields = {}
            fields[key] = value
            if key == b"SHA256" and len(fields) == 4 and SHA256.fullmatch(value):
                found[value] = deb_name(fields[b"Package"], fields[b"Version"],
                                        fields[b"Architecture"])
    return found


def deb_name(package: str, version: str, arch: str) -> str:
    """apt's name for a downloaded package (pkgAcqArchive: name_version_arch.deb with
    ':' quoted as %3a)."""
    return f"{package}_{version}_{arch}.deb".replace(":", "%3a")


def owner_alive(temp: Path) -> bool:
    """Whether the process that made `temp` (.tmp-PID-...) still runs."""
    found = re.match(r"\.tmp-(\d+)-", temp.name)
    if found is None:
        return False  # an older build's name: that build is over
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's, alive
    return True


@dataclass
class PackageCache:
    root: Path
    progress: Callable[[str], None] = field(default=lambda _message: None)

    def entries(self) -> dict[str, Path]:
        """sha256 -> the cached file."""
        found: dict[str, Path] = {}
        if not self.root.is_dir():
            return found
        for entry in self.root.iterdir():
            if SHA256.fullmatch(entry.name):
                files = list(entry.iterdir())
                if len(files) == 1:
                    found[entry.name] = files[0]
        return found

    def sweep_temps(self) -> None:
        """Remove what killed builds left. Not what a live process still uses: a lease's
        staging dir is only the source of a bind mount (nothing is mounted under it), and
        two stages of one build (modules-nvidia, modules-zfs) lend at the same time."""
        if self.root.is_dir():
            for temp in self.root.glob(".tmp-*"):
                if not owner_alive(temp) and not mounts_under(temp):
                    safe_rmtree(temp)

    def temp_dir(self) -> Path:
        """A work dir beside the entries (hard links work), named by this process."""
        return Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=self.root))

    def link_into(self, target: Path, wanted: dict[str, str] | None) -> int:
        """Hard-link the entries into `target` under apt's names: those whose sha256 is in
        `wanted` (an index), or every entry when no index is known yet (the bootstrap,
        whose apt checks each file's hash and fetches what does not match)."""
        target.mkdir(parents=True, exist_ok=True)
        count = 0
        for digest, source in sorted(self.entries().items()):
            if wanted is not None and digest not in wanted:
                continue
            name = wanted[digest] if wanted is not None else source.name
            link = target / name
            if link.exists():
                continue
            try:
                os.link(source, link)
            except OSError:  # another filesystem: a copy still saves the download
                shutil.copyfile(source, link)
            count += 1
        return count

    def commit_from(self, directory: Path, index: dict[str, str]) -> int:
        """Verify and add every .deb in `directory` that the cache lacks; files whose
        hash the index does not list (partial, corrupt, unknown) are left out."""
        self.root.mkdir(parents=True, exist_ok=True)
        have = self.entries()
        inodes = {(p.stat().st_dev, p.stat().st_ino) for p in have.values()}
        added = 0
        for deb in sorted(directory.glob("*.deb")):
            if not deb.is_file() or deb.is_symlink():
                continue
            stat = deb.stat()
            if (stat.st_dev, stat.st_ino) in inodes:
                continue  # one of ours, lent out
            digest = sha256_of(deb)
            if digest in have or index.get(digest) != deb.name:
                continue
            if self._commit(deb, digest):
                added += 1
        return added

    def _commit(self, deb: Path, digest: str) -> bool:
        temp = self.temp_dir()
        try:
            copy = temp / deb.name
            try:
                os.link(deb, copy)
            except OSError:
                shutil.copyfile(deb, copy)
            if sha256_of(copy) != digest:  # changed while we looked: leave it out
                return False
            try:
                os.rename(temp, self.root / digest)
            except OSError:  # another build committed the same package first
                return False
            return True
        finally:
            if temp.exists():
                shutil.rmtree(temp)


@dataclass
class Lease:
    """The cache lent to one chroot: a staging dir bind-mounted on its apt archives."""

    cache: PackageCache
    root: Path  # the chroot
    staging: Path

    def seed(self) -> int:
        """Link what the chroot's current index names (call after `apt-get update`)."""
        count = self.cache.link_into(self.staging, index_of(self.root / LISTS))
        self.cache.progress(f"package cache: {count} packages at hand")
        return count

    def harvest(self) -> int:
        added = self.cache.commit_from(self.staging, index_of(self.root / LISTS))
        self.cache.progress(f"package cache: {added} new packages kept")
        return added


def lend(cache: PackageCache, stack: ExitStack, runner: Runner, root: Path) -> Lease:
    """Bind a fresh staging dir (beside the cache: hard links work) over the chroot's
    apt archives; unmount and removal are registered on `stack`."""
    cache.root.mkdir(parents=True, exist_ok=True)
    cache.sweep_temps()
    staging = cache.temp_dir()
    stack.callback(shutil.rmtree, staging, ignore_errors=True)
    (staging / "partial").mkdir()
    mount(stack, runner, root / ARCHIVES, "--bind", str(staging))
    return Lease(cache, root, staging)


@contextmanager
def apt_archives(config: BuildConfig, runner: Runner, root: Path,
                 progress: Callable[[str], None]) -> Iterator[Lease]:
    """Around apt-get runs in a chroot whose lists are current: packages come from the
    shared cache, and what was downloaded goes into it when the block succeeds."""
    cache = PackageCache(cache_dir(config), progress)
    with ExitStack() as stack:
        lease = lend(cache, stack, runner, root)
        lease.seed()
        yield lease
        lease.harvest()


def seed_bootstrap(config: BuildConfig, target: Path,
                   progress: Callable[[str], None]) -> int:
    """Fill a bootstrap target's archives with every cached package (mmdebstrap's apt
    validates each against its index and downloads the rest)."""
    cache = PackageCache(cache_dir(config), progress)
    count = cache.link_into(target / ARCHIVES, None)
    progress(f"package cache: {count} packages offered to the bootstrap")
    return count


def harvest_bootstrap(config: BuildConfig, target: Path,
                      progress: Callable[[str], None]) -> int:
    """Keep what the bootstrap downloaded, then drop every .deb (and apt's lock) from the
    target."""
    cache = PackageCache(cache_dir(config), progress)
    added = cache.commit_from(target / ARCHIVES, index_of(target / LISTS))
    progress(f"package cache: {added} new packages kept")
    for deb in (target / ARCHIVES).glob("*.deb"):
        deb.unlink()
    (target / ARCHIVES / "lock").unlink(missing_ok=True)  # mmdebstrap's apt leaves it
    return added
