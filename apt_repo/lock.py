"""A build pinned to a package lock: the NAME-VERSION.packages.lock of an earlier build
(`package version sha256` lines, as the packages stage writes them).

Pinning makes apt choose exactly the locked versions (an APT preferences file with
priority 1001, which also allows downgrades) while the packages stage installs; what
got installed is then compared with the lock, versions and .deb digests, and any
difference is a build error. The archive must still serve the locked versions: to
rebuild an older release, point debian.mirror and debian.security_mirror at a
snapshot (https://snapshot.debian.org/archive/debian/20261201T000000Z/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError

# Debian policy: package names and versions (epoch, upstream, revision).
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
VERSION_RE = re.compile(r"^(?:[0-9]+:)?[0-9A-Za-z.+~-]+(?:-[0-9A-Za-z.+~]+)?$")
SHA256_RE = re.compile(r"^(?:[0-9a-f]{64}|-)$")  # "-": no index listed it (a local .deb)
PREFERENCES_FILE = "etc/apt/preferences.d/golem-live-lock.pref"
# While a pinned build installs: a snapshot's Release files are past their Valid-Until;
# the lock's digests are checked instead (and apt still checks the signatures).
SNAPSHOT_APT_CONF = "etc/apt/apt.conf.d/golem-live-snapshot.conf"
SNAPSHOT_APT_SETTINGS = 'Acquire::Check-Valid-Until "false";\n'
SHOWN = 5


@dataclass(frozen=True)
class PackageLock:
    path: Path
    entries: tuple[tuple[str, str, str], ...]  # (package, version, sha256 or "-")

    def versions(self) -> dict[str, str]:
        return {name: version for name, version, _ in self.entries}


def read_package_lock(path: Path) -> PackageLock:
    """The lock at `path`; one BuildError naming every bad line."""
    fix = "give the NAME-VERSION.packages.lock a build or release wrote"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BuildError(f"packages lock {path}: {error.strerror or error}", fix) from None
    errors: list[str] = []
    entries: dict[str, tuple[str, str, str]] = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            errors.append(f"line {number}: expected 'package version sha256'")
            continue
        name, version, sha256 = fields
        bad = [what for what, pattern, value in (("package", PACKAGE_RE, name),
                                                 ("version", VERSION_RE, version),
                                                 ("sha256", SHA256_RE, sha256))
               if not pattern.match(value)]
        if bad:
            errors.append(f"line {number}: bad {' and '.join(bad)}")
        elif name in entries:
            errors.append(f"line {number}: {name} is listed twice")
        else:
            entries[name] = (name, version, sha256)
    if not entries and not errors:
        errors.append("no packages in it")
    if errors:
        shown = "; ".join(errors[:SHOWN]) + (f"; {len(errors) - SHOWN} more" if
                                             len(errors) > SHOWN else "")
        raise BuildError(f"packages lock {path}: {shown}", fix)
    return PackageLock(path, tuple(sorted(entries.values())))


def pin_chroot(root: Path, lock: PackageLock) -> list[Path]:
    """Write the pins and the snapshot setting into the chroot at `root`; the files
    to remove before the rootfs becomes an image."""
    written = []
    for name, text in ((PREFERENCES_FILE, apt_preferences(lock)),
                       (SNAPSHOT_APT_CONF, SNAPSHOT_APT_SETTINGS)):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def apt_preferences(lock: PackageLock) -> str:
    """Every locked package at its locked version, over any other candidate."""
    return "\n".join(f"Package: {name}\nPin: version {version}\nPin-Priority: 1001\n"
                     for name, version, _ in lock.entries)


def lock_differences(lock: PackageLock, built: str) -> list[str]:
    """How `built` (the packages stage's lock text of this build) differs from `lock`,
    one phrase per package."""
    installed = {fields[0]: (fields[1], fields[2]) for fields in
                 (line.split() for line in built.splitlines()) if len(fields) == 3}
    found = []
    for name, version, sha256 in lock.entries:
        got = installed.pop(name, None)
        if got is None:
            found.append(f"{name} {version} not installed")
        elif got[0] != version:
            found.append(f"{name} locked {version}, installed {got[0]}")
        elif "-" not in (sha256, got[1]) and sha256 != got[1]:
            found.append(f"{name} {version} has another sha256 than locked")
    found += [f"{name} {version} installed but not locked"
              for name, (version, _) in sorted(installed.items())]
    return found


def check_against_lock(lock: PackageLock, built: str) -> None:
    differences = lock_differences(lock, built)
    if not differences:
        return
    more = f", and {len(differences) - SHOWN} more" if len(differences) > SHOWN else ""
    raise BuildError(
        f"the installed packages do not match {lock.path}: {len(differences)} differ "
        f"({', '.join(differences[:SHOWN])}{more})",
        "build from the archive the locked build used: snapshot URLs of that date as "
        "debian.mirror and debian.security_mirror (--debian-mirror, --security-mirror); "
        "or build without --packages-lock")
