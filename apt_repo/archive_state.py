"""What a Debian archive serves right now, cheaply: the hashes of its package indexes.

A cached rootfs is stale once the archive has newer packages (a security update, a
point release). The InRelease file of each suite (~50-150 kB) lists the sha256 of
every Packages index, so keying the packages stage by those hashes reruns it exactly
when an index it installs from changed. Nothing here is trusted for installing: apt
verifies the signatures inside the chroot; a forged InRelease could only cause a
rebuild.

When a stage reruns for that reason, `newer_packages` says which of the packages the
previous build installed have a newer version in the changed indexes.
"""

from __future__ import annotations

import email.utils
import lzma
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from builder.errors import BuildError

Fetch = Callable[[str], bytes]
TIMEOUT = 15.0
PREFIX = "debian:"  # resolved-input names: debian:SUITE/COMPONENT/binary-ARCH
# The newest suite's Release date: what the installed system's own timestamps say
# (SOURCE_DATE_EPOCH inside the chroot), so they change only with the archive.
ARCHIVE_DATE = "debian-date"


def http_fetch(url: str) -> bytes:
    try:
        response = requests.get(url, timeout=TIMEOUT)
    except requests.RequestException as err:
        raise BuildError(f"cannot read {url} ({type(err).__name__})",
                         "check the network or the profile's debian.mirror") from None
    if response.status_code != 200:
        raise BuildError(f"{url} answered HTTP {response.status_code}",
                         "check the profile's debian.suite and debian.mirror")
    return response.content


@dataclass(frozen=True)
class Source:
    mirror: str
    suite: str

    def url(self, path: str) -> str:
        return f"{self.mirror.rstrip('/')}/dists/{self.suite}/{path}"


def sources_of(mirror: str, security_mirror: str, suite: str) -> list[Source]:
    """The suites the packages stage installs from (stages/packages.py debian_sources)."""
    found = [Source(mirror, suite), Source(mirror, f"{suite}-updates")]
    if security_mirror:
        found.append(Source(security_mirror, f"{suite}-security"))
    return found


def release_hashes(text: str) -> dict[str, tuple[str, int]]:
    """The SHA256 section of a Release/InRelease file: path -> (sha256, size)."""
    hashes: dict[str, tuple[str, int]] = {}
    in_section = False
    for line in text.splitlines():
        if not line.startswith(" "):
            in_section = line.strip() == "SHA256:"
            continue
        if in_section:
            fields = line.split()
            if len(fields) == 3 and re.fullmatch(r"[0-9a-f]{64}", fields[0]):
                hashes[fields[2]] = (fields[0], int(fields[1]))
    return hashes


def index_path(component: str, arch: str) -> str:
    return f"{component}/binary-{arch}/Packages"


def archive_state(sources: Iterable[Source], components: Iterable[str], arch: str,
                  fetch: Fetch | None = None) -> dict[str, str]:
    """debian:SUITE/COMPONENT/binary-ARCH -> sha256 of that Packages index, for every
    suite and component (a component a suite lacks is simply not there)."""
    sources = list(sources)
    get = fetch or http_fetch
    with ThreadPoolExecutor(max_workers=len(sources) or 1) as pool:
        releases = list(pool.map(lambda s: get(s.url("InRelease")), sources))
    state: dict[str, str] = {}
    newest = 0
    for source, data in zip(sources, releases, strict=True):
        text = data.decode("utf-8", errors="replace")
        newest = max(newest, release_date(text))
        hashes = release_hashes(text)
        if not hashes:
            raise BuildError(f"{source.url('InRelease')} lists no index hashes",
                             "check the profile's debian.mirror")
        for component in components:
            entry = hashes.get(index_path(component, arch))
            if entry:
                state[f"{PREFIX}{source.suite}/{component}/binary-{arch}"] = entry[0]
    state[ARCHIVE_DATE] = str(newest)
    return state


def release_date(text: str) -> int:
    """The Date: field of a Release file, as seconds since the epoch (0 when absent)."""
    match = re.search(r"^Date: (.+)$", text, re.MULTILINE)
    if not match:
        return 0
    try:
        return int(email.utils.parsedate_to_datetime(match.group(1).strip()).timestamp())
    except (TypeError, ValueError):
        return 0


def index_versions(packages_text: str) -> dict[str, str]:
    """Package -> version from a Packages index (the highest when listed twice)."""
    versions: dict[str, str] = {}
    name = ""
    for line in packages_text.splitlines():
        if line.startswith("Package: "):
            name = line[9:].strip()
        elif line.startswith("Version: ") and name:
            version = line[9:].strip()
            if name not in versions or compare_versions(version, versions[name]) > 0:
                versions[name] = version
    return versions


def index_digests(packages_text: str) -> dict[tuple[str, str], str]:
    """(package, version) -> the .deb's sha256, from a Packages index."""
    digests: dict[tuple[str, str], str] = {}
    for stanza in packages_text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if {"Package", "Version", "SHA256"} <= set(fields):
            digests[(fields["Package"], fields["Version"])] = fields["SHA256"].strip()
    return digests


def package_lock(installed: dict[str, str], lists_dir: Path) -> str:
    """`package version sha256` lines (sorted) for what is installed, the digests taken
    from apt's downloaded indexes (`-` for a package no index lists)."""
    digests: dict[tuple[str, str], str] = {}
    for index in sorted(lists_dir.glob("*_Packages")):
        digests.update(index_digests(index.read_text(errors="replace")))
    return "".join(f"{name} {version} {digests.get((name, version), '-')}\n"
                   for name, version in sorted(installed.items()))


def newer_packages(installed: dict[str, str], changed: Iterable[str], sources: list[Source],
                   fetch: Fetch | None = None) -> list[tuple[str, str, str]]:
    """(package, installed version, newer version) for installed packages with a newer
    version in the changed indexes (resolved-input names as archive_state gives them)."""
    get = fetch or http_fetch
    newest: dict[str, str] = {}
    by_suite = {s.suite: s for s in sources}
    for name in changed:
        parts = name.removeprefix(PREFIX).split("/")
        if not name.startswith(PREFIX) or len(parts) != 3:
            continue  # not an index (the archive's date)
        suite, component, binary = parts
        source = by_suite.get(suite)
        if source is None:
            continue
        url = source.url(f"{component}/{binary}/Packages.xz")
        try:
            text = lzma.decompress(get(url))
        except lzma.LZMAError:
            raise BuildError(f"{url} is not a valid .xz index", "try again later") from None
        for package, version in index_versions(text.decode("utf-8", errors="replace")).items():
            if package not in newest or compare_versions(version, newest[package]) > 0:
                newest[package] = version
    return sorted((p, v, newest[p]) for p, v in installed.items()
                  if p in newest and compare_versions(newest[p], v) > 0)


# --- Debian version order (deb-version(7)) ------------------------------------------


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(left: str, right: str) -> int:
    while left or right:
        left_text = re.match(r"[^0-9]*", left).group()  # type: ignore[union-attr]
        right_text = re.match(r"[^0-9]*", right).group()  # type: ignore[union-attr]
        for a, b in zip(left_text + "\0" * len(right_text), right_text + "\0" * len(left_text),
                        strict=False):
            order_a = 0 if a == "\0" else _order(a)
            order_b = 0 if b == "\0" else _order(b)
            if order_a != order_b:
                return -1 if order_a < order_b else 1
        left, right = left[len(left_text):], right[len(right_text):]
        left_num = re.match(r"[0-9]*", left).group()  # type: ignore[union-attr]
        right_num = re.match(r"[0-9]*", right).group()  # type: ignore[union-attr]
        if int(left_num or 0) != int(right_num or 0):
            return -1 if int(left_num or 0) < int(right_num or 0) else 1
        left, right = left[len(left_num):], right[len(right_num):]
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, revision


def compare_versions(left: str, right: str) -> int:
    """-1, 0 or 1 as dpkg --compare-versions orders two versions."""
    left_epoch, left_up, left_rev = _split(left)
    right_epoch, right_up, right_rev = _split(right)
    if left_epoch != right_epoch:
        return -1 if left_epoch < right_epoch else 1
    return _compare_part(left_up, right_up) or _compare_part(left_rev, right_rev)
