"""A real apt client against the repository `golem-live repo build` makes from a fake
GitHub: apt accepts and installs from it, and refuses it once tampered with."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from apt_repo.archive import ArchiveSpec, build_archive, sign
from apt_repo.cli import repo
from apt_repo.keys import IMAGE_KEYRING, SigningKey
from builder.config import load_profile, make_config
from builder.runner import SubprocessRunner
from stages.overlay import render, template_context

from .conftest import PROJECT_ROOT, make_deb, make_project, need_tools, start_fake_github

pytestmark = pytest.mark.tools
SUITE = load_profile(PROJECT_ROOT, "golem-provider").debian.suite

# (component repo, tag, prerelease, .debs: (package, version, arch)) for components.toml
GOLEM_RELEASES = [
    ("golemfactory/yagna", "v0.17.5", False, [("golem-provider", "0.17.5", "amd64")]),
    ("golemfactory/yagna", "v0.17.6", False,
     [("golem-provider", "0.17.6", "amd64"), ("golem-requestor", "0.17.6", "amd64")]),
    # newer, but the release channel takes yagna's full releases only
    ("golemfactory/yagna", "pre-rel-v0.17.7-rc1", True, [("golem-provider", "0.17.7~rc1",
                                                         "amd64")]),
    ("golemfactory/ya-runtime-wasi", "pre-rel-v0.2.4", True,
     [("ya-runtime-wasi-cli", "0.2.4", "amd64")]),
    ("golemfactory/ya-runtime-vm", "v0.4.2", False, [("ya-runtime-vm", "0.4.2", "amd64")]),
    ("golemfactory/ya-runtime-vm", "v0.5.2", False, [("ya-runtime-vm", "0.5.2", "amd64")]),
    ("golemfactory/ya-runtime-vm-nvidia", "v0.1.5", False,
     [("ya-runtime-vm-nvidia", "0.1.5", "amd64")]),
    # newer, but single --pci-device: `^v[0-9]` must not take it
    ("golemfactory/ya-runtime-vm-nvidia", "pre-rel-v0.1.3-rc11", True,
     [("ya-runtime-vm-nvidia", "0.1.3~rc11", "amd64")]),
    ("golemfactory/golem-nvidia-kernel", "v6.1.90", False,
     [("golem-nvidia-kernel", "6.1.90", "amd64")]),
    ("golemfactory/ya-installer-resources", "v0.1.5", False,
     [("ya-installer-resources", "0.1.5", "all")]),
    ("golemfactory/ya-installer-resources", "nightly-2024", True,
     [("ya-installer-resources", "0.2.0~nightly", "all")]),
]


@dataclass(frozen=True)
class Published:
    root: Path  # the repository (dists/, pool/, golem-gpu-live.gpg)
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory,
              signing_key: SigningKey) -> Iterator[Published]:
    """`golem-live repo build` against the fake GitHub, with the real components.toml."""
    need_tools()
    base = tmp_path_factory.mktemp("published")
    src = base / "src"
    src.mkdir()
    fakes = start_fake_github()
    fake = next(fakes)
    for i, (name, tag, pre, debs) in enumerate(GOLEM_RELEASES):
        fake.add_release(name, tag, [make_deb(src, *d) for d in debs], prerelease=pre,
                         published=f"2024-01-{i + 1:02d}T00:00:00Z")
    project = make_project(base / "project")
    result = CliRunner().invoke(repo, [
        "build", "--channel", "release", "--key", signing_key.fingerprint,
        "--gnupghome", str(signing_key.gnupghome), "--output", str(base / "site/release"),
        "--work-dir", str(base / "work"), "--github-api", fake.base,
        "--source-date-epoch", str(int(time.time())), "--project-root", str(project),
        "--wizard-version", "1.2.3"], env={"GITHUB_TOKEN": None, "GNUPGHOME": None})
    next(fakes, None)
    assert result.exit_code == 0, result.output
    yield Published(base / "site/release", result.stdout, result.stderr)


class Apt:
    """apt-get with every path of its own (APT_CONFIG), installing into a dpkg --root."""

    def __init__(self, base: Path, url: str, keyring: Path, suite: str = SUITE) -> None:
        self.base, self.root = base / "apt", base / "root"
        for sub in ("etc/sources.list.d", "etc/apt.conf.d", "etc/trusted.gpg.d",
                    "etc/preferences.d", "state/lists/partial", "cache/archives/partial",
                    "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("info", "updates", "triggers"):
            (self.root / "var/lib/dpkg" / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "var/lib/dpkg/status").write_text("")
        (self.base / "etc/sources.list.d/golem-gpu-live.sources").write_text(
            f"Types: deb\nURIs: {url}\nSuites: {suite}\nComponents: main\n"
            f"Signed-By: {keyring}\n")
        a = self.base
        (a / "apt.conf").write_text(
            f'Dir::Etc "{a}/etc/";\nDir::Etc::main "{a}/etc/apt.conf";\n'
            f'Dir::Etc::parts "{a}/etc/apt.conf.d/";\n'
            f'Dir::Etc::sourcelist "{a}/etc/sources.list";\n'
            f'Dir::Etc::sourceparts "{a}/etc/sources.list.d/";\n'
            f'Dir::Etc::trusted "{a}/etc/trusted.gpg";\n'
            f'Dir::Etc::trustedparts "{a}/etc/trusted.gpg.d/";\n'
            f'Dir::Etc::preferences "{a}/etc/preferences";\n'
            f'Dir::Etc::preferencesparts "{a}/etc/preferences.d/";\n'
            f'Dir::State "{a}/state/";\nDir::Cache "{a}/cache/";\nDir::Log "{a}/log/";\n'
            f'Dir::State::status "{self.root}/var/lib/dpkg/status";\n'
            'APT::Sandbox::User "root";\nAPT::Architecture "amd64";\n'
            'APT::Architectures { "amd64"; };\nAcquire::Languages "none";\n'
            f'DPkg::Options {{ "--root={self.root}"; "--force-not-root"; }};\n'
            'Dpkg::Use-Pty "false";\n')

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], "LC_ALL": "C", "APT_CONFIG": str(self.base /
                                                                           "apt.conf")}
        return subprocess.run(list(args), env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture
def apt_for(tmp_path: Path, published: Published,
            serve_dir: Callable[[Path], str]) -> Callable[..., tuple[Apt, Path]]:
    """apt_for(tamper) -> (apt, repo copy): a copy of the repository, tampered, served."""
    need_tools("apt-get", "dpkg")

    def make(tamper: Callable[[Path], None] = lambda _: None) -> tuple[Apt, Path]:
        copy = tmp_path / "served"
        shutil.copytree(published.root, copy)
        tamper(copy / "dists" / SUITE)
        return Apt(tmp_path, serve_dir(copy), published.root / "golem-gpu-live.gpg"), copy

    return make


def test_cli_build_reports_and_picks_the_pattern_matches(published: Published,
                                                         signing_key: SigningKey) -> None:
    assert published.stdout.strip() == (f"{published.root}: 7 packages, signed by "
                                        f"{signing_key.fingerprint}, verified with gpgv")
    packages = (published.root / "dists" / SUITE / "main/binary-amd64/Packages").read_text()
    versions = dict(re.findall(r"^Package: (\S+)\n(?:.+\n)*?Version: (\S+)$", packages, re.M))
    assert versions == {"golem-provider": "0.17.6", "ya-runtime-wasi-cli": "0.2.4",
                        "ya-runtime-vm": "0.4.2", "ya-runtime-vm-nvidia": "0.1.5",
                        "golem-nvidia-kernel": "6.1.90", "ya-installer-resources": "0.1.5",
                        "golemwz": "1.2.3"}
    assert "v0.17.6" in published.stderr


def test_apt_accepts_and_installs(apt_for: Callable[..., tuple[Apt, Path]]) -> None:
    apt, _ = apt_for()
    update = apt("apt-get", "update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert not re.search(r"^(W|E):", update.stdout + update.stderr, re.M), update.stderr
    install = apt("apt-get", "install", "--yes", "golem-provider", "ya-installer-resources")
    assert install.returncode == 0, install.stdout + install.stderr
    assert (apt.root / "usr/share/golem-provider/VERSION").read_text() == "0.17.6\n"
    status = subprocess.run(["dpkg", f"--root={apt.root}", "-s", "ya-installer-resources"],
                            capture_output=True, text=True, check=True).stdout
    assert "Status: install ok installed" in status and "Version: 0.1.5" in status
    show = apt("apt-cache", "show", "golemwz").stdout
    assert "Depends: python3, python3-dialog, python3-tomli-w, dialog" in show


def _refusal(apt: Apt) -> str:
    update = apt("apt-get", "update")
    assert update.returncode != 0
    policy = apt("apt-cache", "policy", "golem-provider").stdout
    assert "Candidate: (none)" in policy or policy.strip() == ""  # nothing usable came in
    return update.stdout + update.stderr


def test_apt_refuses_tampered_packages(apt_for: Callable[..., tuple[Apt, Path]]) -> None:
    def tamper(dist: Path) -> None:
        import gzip
        import lzma

        binary = dist / "main/binary-amd64"
        text = (binary / "Packages").read_text().replace("Version: 0.17.6",
                                                         "Version: 9.17.6")
        (binary / "Packages").write_text(text)
        (binary / "Packages.gz").write_bytes(gzip.compress(text.encode()))
        (binary / "Packages.xz").write_bytes(lzma.compress(text.encode()))

    output = _refusal(apt_for(tamper)[0])
    assert re.search(r"E: Failed to fetch .*Packages.*(Hash Sum mismatch|File has unexpected "
                     r"size)", output), output


def test_apt_refuses_release_signed_by_another_key(
        apt_for: Callable[..., tuple[Apt, Path]], other_key: SigningKey) -> None:
    output = _refusal(apt_for(lambda dist: sign(dist / "Release", other_key))[0])
    assert f"NO_PUBKEY {other_key.fingerprint[-16:]}" in output
    assert re.search(r"E: The repository 'http://127\.0\.0\.1:\d+ " + SUITE + " InRelease' is not "
                     "signed", output), output


def test_apt_refuses_when_signatures_are_removed(
        apt_for: Callable[..., tuple[Apt, Path]]) -> None:
    def strip(dist: Path) -> None:
        (dist / "InRelease").unlink()
        (dist / "Release.gpg").unlink()

    output = _refusal(apt_for(strip)[0])
    assert re.search(r"E: The repository 'http://127\.0\.0\.1:\d+ " + SUITE + " Release' is not "
                     "signed", output), output


def test_apt_refuses_an_edited_inrelease(apt_for: Callable[..., tuple[Apt, Path]]) -> None:
    def edit(dist: Path) -> None:
        text = (dist / "InRelease").read_text()
        (dist / "InRelease").write_text(text.replace("Suite: release", "Suite: hacked!"))

    output = _refusal(apt_for(edit)[0])
    assert "The following signatures were invalid: BADSIG" in output, output


def test_apt_refuses_an_expired_release(tmp_path: Path, signing_key: SigningKey,
                                        published: Published,
                                        serve_dir: Callable[[Path], str]) -> None:
    """Valid-Until is honoured: a repository not re-published in time is refused."""
    need_tools("apt-get")
    debs = tmp_path / "debs"
    debs.mkdir()
    make_deb(debs, "golem-provider", "1", "amd64")
    spec = ArchiveSpec(date=int(time.time()) - 10 * 86400, valid_days=3, codename=SUITE)
    build_archive(SubprocessRunner(tmp_path / "log"), list(debs.glob("*.deb")),
                  tmp_path / "repo", spec, signing_key, tmp_path / "key.gpg")
    apt = Apt(tmp_path, serve_dir(tmp_path / "repo"), tmp_path / "key.gpg")
    output = _refusal(apt)
    assert re.search(r"E: Release file for http://127\.0\.0\.1:\d+/dists/" + SUITE + "/InRelease "
                     r"is expired \(invalid since", output), output


def test_apt_accepts_the_sources_stanza_the_image_carries(
        apt_for: Callable[..., tuple[Apt, Path]], published: Published, tmp_path: Path) -> None:
    """The overlay's rendered deb822 file, only URIs and keyring path swapped for the test."""
    apt, _ = apt_for()
    sources = apt.base / "etc/sources.list.d/golem-gpu-live.sources"
    url = re.search(r"^URIs: (.*)$", sources.read_text(), re.M).group(1)  # type: ignore[union-attr]
    config = make_config(PROJECT_ROOT, "golem-provider", "1", tmp_path / "t", tmp_path / "w")
    template = PROJECT_ROOT / ("rootfs/overlay/golem-provider/etc/apt/sources.list.d/"
                               "golem-gpu-live.sources.j2")
    text = render(template, template_context(config))
    sources.write_text(text.replace(config.profile.golem.apt_url, url).replace(
        IMAGE_KEYRING, str(published.root / "golem-gpu-live.gpg")))
    update = apt("apt-get", "update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert not re.search(r"^(W|E):", update.stdout + update.stderr, re.M), update.stderr
    assert "Candidate: 0.17.6" in apt("apt-cache", "policy", "golem-provider").stdout


@pytest.mark.parametrize("signed", [True, False])
def test_file_uri_as_in_the_chroot_checks_signatures_too(
        tmp_path: Path, published: Published, signed: bool) -> None:
    """The packages stage reads the repository through file: — apt still verifies it."""
    need_tools("apt-get")
    copy = tmp_path / "var/tmp/golem-gpu-live-repo"
    shutil.copytree(published.root, copy / "repo")
    shutil.copyfile(published.root / "golem-gpu-live.gpg", copy / "repo.gpg")
    if not signed:
        (copy / "repo/dists" / SUITE / "InRelease").unlink()
        (copy / "repo/dists" / SUITE / "Release.gpg").unlink()
    apt = Apt(tmp_path, f"file:{copy / 'repo'}", copy / "repo.gpg")
    update = apt("apt-get", "update")
    output = update.stdout + update.stderr
    if signed:
        assert update.returncode == 0, output
        install = apt("apt-get", "install", "--yes", "ya-runtime-vm-nvidia")
        assert install.returncode == 0, install.stdout + install.stderr
        assert (apt.root / "usr/share/ya-runtime-vm-nvidia/VERSION").is_file()
    else:
        assert update.returncode != 0
        assert re.search(r"E: The repository 'file:\S+ " + SUITE + " Release' is not signed",
                         output), output
