"""Assemble, index and sign an APT repository (pool/ + dists/) from .deb files.

Indexing is apt-ftparchive's; this module only lays out the pool, compresses the
index, adds the Valid-Until policy, signs the Release (InRelease and Release.gpg
from the same bytes) and refuses to report success before gpgv accepts both.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from apt_repo.keys import SigningKey, export_public, open_gpg
from builder.errors import BuildError, CommandFailed
from builder.runner import Runner

# OpenPGP hash algorithm ids gpgv reports in VALIDSIG: SHA256, SHA384, SHA512.
STRONG_HASHES = {"8": "SHA256", "9": "SHA384", "10": "SHA512"}
DIGEST = "SHA512"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Debian Policy 5.6.1 (Package), 5.6.7 (Version: [epoch:]upstream[-revision]); an
# architecture is a dpkg name. The pool path is built from these fields, so nothing
# else (a '/', '..') may pass: a .deb's control file is the packager's to write.
_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION_RE = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*")
_ARCH_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class ArchiveSpec:
    date: int  # seconds since the epoch (SOURCE_DATE_EPOCH): the Release's Date
    # Valid-Until = Date + valid_days. None writes no Valid-Until: only for repositories
    # that live for one build (served to the chroot, signed by a throwaway key).
    valid_days: int | None
    codename: str = "bookworm"
    suite: str = "release"  # the channel
    component: str = "main"
    architectures: tuple[str, ...] = ("amd64",)
    origin: str = "golem-gpu-live"
    label: str = "golem-gpu-live"
    description: str = "GOLEM provider components for golem-gpu-live"


@dataclass(frozen=True)
class DebInfo:
    package: str
    version: str
    architecture: str

    @property
    def filename(self) -> str:
        version = self.version.split(":", 1)[-1]
        return f"{self.package}_{version}_{self.architecture}.deb"


@dataclass(frozen=True)
class ArchiveResult:
    root: Path
    release: Path
    packages: tuple[DebInfo, ...]
    fingerprint: str


def rfc2822(epoch: int) -> str:
    """Locale-independent 'Thu, 01 Jan 2015 00:00:00 UTC', as Debian's Release files carry."""
    t = time.gmtime(epoch)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} UTC")


def deb_info(runner: Runner, deb: Path) -> DebInfo:
    try:
        out = runner.run(["dpkg-deb", "--field", str(deb), "Package", "Version",
                          "Architecture"], capture=True).stdout
    except CommandFailed:
        raise BuildError(f"{deb} is not a valid .deb package",
                         "remove it or replace it with a proper package") from None
    fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    try:
        info = DebInfo(fields["Package"].strip(), fields["Version"].strip(),
                       fields["Architecture"].strip())
    except KeyError as err:
        raise BuildError(f"{deb} has no {err.args[0]} field", "rebuild the package") from None
    for name, value, pattern in (("Package", info.package, _PACKAGE_RE),
                                 ("Version", info.version, _VERSION_RE),
                                 ("Architecture", info.architecture, _ARCH_RE)):
        if not pattern.fullmatch(value):
            raise BuildError(f"{deb}: {name} {value[:80]!r} is not valid Debian syntax",
                             "rebuild the package with a proper control file, or remove it")
    return info


def _pool_dir(package: str) -> str:
    prefix = package[:4] if package.startswith("lib") else package[:1]
    return f"{prefix}/{package}"


def layout_pool(runner: Runner, debs: list[Path], root: Path, component: str,
                architectures: tuple[str, ...] = ("amd64",)) -> list[DebInfo]:
    """Copy the .debs into pool/COMPONENT/x/pkg/ under canonical names; reject conflicts
    and anything whose path would leave the pool; leave out other architectures'."""
    placed: dict[str, tuple[Path, DebInfo]] = {}
    pool = (root / "pool" / component).resolve()
    for deb in sorted(debs):
        info = deb_info(runner, deb)
        if info.architecture not in ("all", *architectures):
            continue  # a release's arm64 build next to amd64: apt here could not use it
        dest = root / "pool" / component / _pool_dir(info.package) / info.filename
        if not dest.resolve().is_relative_to(pool):  # the syntax checks should make it so
            raise BuildError(f"{deb} would be copied to {dest}, outside the pool {pool}",
                             "remove it; its control fields are not a package's")
        if info.filename in placed:
            first = placed[info.filename][0]
            if first.read_bytes() != deb.read_bytes():
                raise BuildError(f"{first} and {deb} are both {info.filename} but differ",
                                 "keep one of them")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deb, dest)
        placed[info.filename] = (deb, info)
    return [info for _, info in placed.values()]


def _write_index(path: Path, text: str) -> None:
    data = text.encode()
    path.write_bytes(data)
    with open(path.with_suffix(".gz"), "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    path.with_suffix(".xz").write_bytes(lzma.compress(data))


def _release_text(runner: Runner, root: Path, spec: ArchiveSpec) -> str:
    opts = {"Origin": spec.origin, "Label": spec.label, "Suite": spec.suite,
            "Codename": spec.codename, "Components": spec.component,
            "Architectures": " ".join(spec.architectures), "Description": spec.description,
            "Date": rfc2822(spec.date), "MD5": "false", "SHA1": "false",
            "SHA256": "true", "SHA512": "true"}
    argv = ["apt-ftparchive"]
    for key, value in opts.items():
        argv += ["-o", f"APT::FTPArchive::Release::{key}={value}"]
    text = runner.run(argv + ["release", f"dists/{spec.codename}"], cwd=root,
                      capture=True).stdout
    if spec.valid_days is None:
        return text
    if spec.valid_days <= 0:
        raise BuildError(f"Valid-Until of {spec.valid_days} days makes no sense",
                         "use a positive number of days")
    until = f"Valid-Until: {rfc2822(spec.date + spec.valid_days * 86400)}\n"
    lines = text.splitlines(keepends=True)
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("Date:")), None)
    if at is None:
        raise BuildError("apt-ftparchive wrote a Release without Date", "update apt-utils")
    return "".join(lines[:at] + [until] + lines[at:])


def index(runner: Runner, root: Path, spec: ArchiveSpec) -> Path:
    """Packages (+ .gz, .xz) per architecture and the unsigned Release; returns Release."""
    dist = root / "dists" / spec.codename
    for arch in spec.architectures:
        binary = dist / spec.component / f"binary-{arch}"
        binary.mkdir(parents=True, exist_ok=True)
        text = runner.run(["apt-ftparchive", "--arch", arch,
                           "-o", "APT::FTPArchive::Packages::MD5=false",
                           "-o", "APT::FTPArchive::Packages::SHA1=false",
                           "packages", f"pool/{spec.component}"], cwd=root,
                          capture=True).stdout
        _write_index(binary / "Packages", text)
    release = dist / "Release"
    release.write_text(_release_text(runner, root, spec), encoding="utf-8")
    return release


def sign(release: Path, key: SigningKey) -> tuple[Path, Path]:
    """InRelease (clearsigned) and Release.gpg (detached), both from `release`'s bytes."""
    gpg = open_gpg(key.gnupghome)
    inrelease, detached = release.with_name("InRelease"), release.with_name("Release.gpg")
    for path, clear in ((inrelease, True), (detached, False)):
        path.unlink(missing_ok=True)
        result = gpg.sign_file(str(release), keyid=key.fingerprint, clearsign=clear,
                               detach=not clear, output=str(path),
                               extra_args=["--digest-algo", DIGEST])
        if not result or not path.is_file():
            lines = (result.stderr or "").strip().splitlines() if result else []
            raise BuildError(f"gpg could not sign {release.name} with {key.fingerprint}: "
                             f"{lines[-1][:200] if lines else 'no output'}",
                             "check the key (a passphrase-protected key needs gpg-agent "
                             "to hold the passphrase)")
    return inrelease, detached


def _gpgv(runner: Runner, keyring: Path, args: list[str], what: str) -> str:
    with tempfile.TemporaryDirectory(prefix="gpgv-") as home:
        try:
            out = runner.run(["gpgv", "--homedir", home, "--status-fd", "1",
                              "--keyring", str(keyring.resolve()), *args], capture=True).stdout
        except CommandFailed:
            raise BuildError(f"gpgv does not accept {what} with the public key {keyring}",
                             "the repository is not signed by that key; sign with the "
                             "key whose public part the image carries") from None
    valid = [line.split() for line in out.splitlines() if line.startswith("[GNUPG:] VALIDSIG")]
    if not valid:
        raise BuildError(f"gpgv found no valid signature on {what}", "re-sign the repository")
    return out


def verify(runner: Runner, release: Path, keyring: Path, fingerprint: str) -> None:
    """Both signatures good, by `fingerprint`, with a strong digest, over the same Release."""
    dist = release.parent
    with tempfile.TemporaryDirectory(prefix="inrelease-") as tmp:
        signed_text = Path(tmp) / "Release"
        checks = [(["--output", str(signed_text), str(dist / "InRelease")], "InRelease"),
                  ([str(dist / "Release.gpg"), str(release)], "Release.gpg")]
        for args, what in checks:
            for fields in (line.split() for line in _gpgv(runner, keyring, args, what)
                           .splitlines() if line.startswith("[GNUPG:] VALIDSIG")):
                signer, hash_algo = fields[-1], fields[9]
                if signer.upper() != fingerprint.upper():
                    raise BuildError(f"{what} is signed by {signer}, not {fingerprint}",
                                     "sign with the intended key")
                if hash_algo not in STRONG_HASHES:
                    raise BuildError(f"{what} uses a weak digest (OpenPGP hash {hash_algo})",
                                     "sign with --digest-algo SHA512")
        if signed_text.read_bytes() != release.read_bytes():
            raise BuildError("InRelease does not carry the same text as Release",
                             "re-run the build; do not edit Release after signing")


def _clear(root: Path) -> None:
    for name in ("dists", "pool"):
        shutil.rmtree(root / name, ignore_errors=True)


def _world_readable(root: Path) -> None:
    """apt's _apt sandbox user must read file: repositories."""
    for dirpath, _dirs, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def build_archive(runner: Runner, debs: list[Path], root: Path, spec: ArchiveSpec,
                  key: SigningKey, public_keyring: Path,
                  extra_keyrings: tuple[Path, ...] = ()) -> ArchiveResult:
    """Write root/{pool,dists}; the key's public part to public_keyring; verify with gpgv."""
    if not debs:
        raise BuildError("no .deb files to put in the repository",
                         "give a packages directory or let it fetch GOLEM's releases")
    root.mkdir(parents=True, exist_ok=True)
    _clear(root)
    infos = layout_pool(runner, debs, root, spec.component, spec.architectures)
    release = index(runner, root, spec)
    sign(release, key)
    export_public(key, public_keyring)
    for keyring in (public_keyring, *extra_keyrings):
        verify(runner, release, keyring, key.fingerprint)
    _world_readable(root)
    return ArchiveResult(root, release, tuple(sorted(infos, key=lambda i: i.filename)),
                         key.fingerprint)
