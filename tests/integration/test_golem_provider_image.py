"""The golem-provider profile end to end: GOLEM's components come from a fake GitHub
releases API on 127.0.0.1 (tests/golem_fakes.py: the real packages' file layout,
golem-provider's debconf preinst, runtime descriptors, manifest bundle, decoy releases
the patterns must pass over), go through the signed repository stage, and are installed
by apt (signatures checked) into the image."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_repo.github import GitHubSettings
from builder.config import make_config
from builder.pipeline import Plan, make_plan
from stages.catalog import stage_list
from tests import golem_fakes
from tests.apt_repo.conftest import FakeGitHub, start_fake_github
from tests.conftest import MEASUREMENTS, PROJECT_ROOT, golem_live, require_root
from tests.integration.layers import layers_listing, unsquashfs_bytes, unsquashfs_cat

pytestmark = pytest.mark.root

PLUGINS = golem_fakes.PLUGINS_DIR
# Fixed, not the last commit's date: commits made while this builds must not turn the
# plan computed afterwards into a miss (and a reused --build-cache stays warm).
SOURCE_DATE_EPOCH = 1764633600


@pytest.fixture(scope="module")
def fake_golem_github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGitHub]:
    debs = tmp_path_factory.mktemp("golem-debs")
    for fake in start_fake_github():
        golem_fakes.publish(fake, debs)
        yield fake


def golem_tmp_dir(build_base: Path) -> Path:
    """golem-provider's own TMP_DIR: its entries (repository forced, several builds from
    the fakes) would otherwise push the session's gpu-node entries out of the shared
    cache (two kept per stage), and the gpu-node tests would find them gone."""
    return build_base / "golem-provider" / "tmp"


def plan_for(build_base: Path, work: Path, fake: FakeGitHub) -> Plan:
    config = make_config(PROJECT_ROOT, "golem-provider", "test", golem_tmp_dir(build_base), work,
                         source_date_epoch=SOURCE_DATE_EPOCH)
    return make_plan(config, stage_list(config, GitHubSettings(api_url=fake.base)))


def last_entry(plan: Plan, stage: str) -> Path:
    cache = plan.step(stage).cache
    manifest = cache.last_manifest()
    assert manifest is not None, f"no {stage} build in {cache.dir}"
    return cache.entry(manifest.key())


def debconf_value(config_dat: str, question: str) -> str | None:
    for record in config_dat.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in record.splitlines() if ": " in line)
        if fields.get("Name") == question:
            return fields.get("Value")
    return None


def test_golem_provider_image_installs_golem_components_from_the_signed_repository(
        fake_golem_github: FakeGitHub, build_base: Path, tmp_path: Path) -> None:
    require_root()
    work = tmp_path / "work"
    args = ["--profile", "golem-provider", "--version", "test", "--tmp-dir",
            str(golem_tmp_dir(build_base)), "--work-dir", str(work),
            "--github-api", fake_golem_github.base,
            "--source-date-epoch", str(SOURCE_DATE_EPOCH)]
    # forced: a reused --build-cache must still exercise the downloads
    result = golem_live("build", *args, "--until", "squashfs", "--force", "repository")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "[repository] running" in result.stderr
    downloads = [path for path, _ in fake_golem_github.requests if path.startswith("/download")]
    assert sorted(downloads) == sorted(
        f"/download/{p.repo}/{p.tag}/{p.package}_{p.version}_amd64.deb"
        for p in golem_fakes.SELECTED)  # no decoy
    # The entries this build made (last.json): a plan computed now could differ, as
    # others may edit the overlay in this checkout meanwhile.
    plan = plan_for(build_base, work, fake_golem_github)
    squashfs = last_entry(plan, "squashfs") / "live"  # both layers
    MEASUREMENTS["golem-provider filesystem.squashfs"] = \
        f"{(squashfs / 'filesystem.squashfs').stat().st_size / 2**20:.1f} MiB"

    status = unsquashfs_cat(squashfs, "var/lib/dpkg/status")
    for package in golem_fakes.SELECTED:
        stanza = status.split(f"Package: {package.package}\n", 1)[-1].split("\n\n", 1)[0]
        assert stanza.startswith("Status: install ok installed"), package.package
        assert f"\nVersion: {package.version}\n" in stanza + "\n", package.package
    assert "Package: golemwz\nStatus: install ok installed" in status
    assert "Package: systemd-timesyncd\nStatus: install ok installed" in status

    # golem-provider's preinst let it in because the profile answered its question
    answer = debconf_value(unsquashfs_cat(squashfs, "var/cache/debconf/config.dat"),
                           golem_fakes.SUBSIDY_QUESTION)
    assert answer == "yes"

    listing = layers_listing(squashfs)  # the top layer's lines last: they win in `modes`
    modes = {line.split()[-1].removeprefix("squashfs-root/"): line.split()[0]
             for line in listing.splitlines() if "squashfs-root/" in line}
    for path in ("usr/bin/yagna", "usr/bin/ya-provider", "usr/bin/golemsp", "usr/bin/gftp",
                 f"{PLUGINS}/exe-unit", f"{PLUGINS}/ya-runtime-vm/ya-runtime-vm",
                 f"{PLUGINS}/ya-runtime-vm-nvidia/ya-runtime-vm-nvidia",
                 f"{PLUGINS}/ya-runtime-wasi/ya-runtime-wasi"):
        assert modes.get(path) == "-rwxr-xr-x", path
    runtimes = {}
    for descriptor in ("ya-runtime-vm.json", "ya-runtime-vm-nvidia.json",
                       "ya-runtime-wasi.json"):
        (runtime,) = json.loads(unsquashfs_cat(squashfs, f"{PLUGINS}/{descriptor}"))
        runtimes[runtime["name"]] = runtime
        assert f"{PLUGINS}/{runtime['runtime-path']}" in modes
    assert set(runtimes) == {"vm", "vm-nvidia", "wasmtime"}
    for bundle_dir in golem_fakes.BUNDLE_DIRS:  # what golemsp manifest-bundle add reads
        assert any(p.startswith(f"{golem_fakes.INSTALLER_DIR}/{bundle_dir}/") for p in modes)

    unit = unsquashfs_cat(squashfs, "etc/systemd/system/golem-provider.service")
    assert "\nLimitMEMLOCK=infinity\n" in unit
    assert "\nEnvironment=YAGNA_METRICS_GROUP=GolemGpuLive\n" in unit

    assert "golemwz.cli" in unsquashfs_cat(squashfs, "usr/bin/golemwz")
    sources = unsquashfs_cat(squashfs, "etc/apt/sources.list.d/golem-gpu-live.sources")
    assert "Signed-By: /usr/share/keyrings/golem-gpu-live.gpg" in sources
    assert "trusted" not in sources
    keyring = unsquashfs_bytes(squashfs, "usr/share/keyrings/golem-gpu-live.gpg")
    assert keyring == (last_entry(plan, "repository") / "repo.gpg").read_bytes()
    assert "etc/apt/trusted.gpg.d/golem" not in listing
    assert "var/lib/golem-live/build-repo" not in listing


@pytest.mark.parametrize("preseeded", [False, True])
def test_golem_provider_installs_only_with_the_profiles_preseed(
        fake_golem_github: FakeGitHub, build_base: Path, tmp_path: Path,
        preseeded: bool) -> None:
    """The preinst check in a chroot of the bootstrap stage (minbase: dpkg, debconf), as
    the packages stage does it: debconf-set-selections, then a noninteractive install.
    Cheap: no mounts, no apt, seconds."""
    require_root()
    work = tmp_path / "work"
    plan = plan_for(build_base, work, fake_golem_github)
    if plan.step("bootstrap").cache.last_manifest() is None:
        built = golem_live("build", "--profile", "golem-provider", "--version", "test",
                           "--tmp-dir", str(golem_tmp_dir(build_base)), "--work-dir", str(work),
                           "--github-api", fake_golem_github.base, "--until", "bootstrap",
                           "--source-date-epoch", str(SOURCE_DATE_EPOCH))
        assert built.returncode == 0, built.stderr[-3000:]
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(last_entry(plan, "bootstrap") / "rootfs"),
                    str(root)], check=True)
    # Without the python3 dependency (not in minbase): only the preinst is under test.
    package = dataclasses.replace(golem_fakes.golem_provider(), depends="")
    deb = package.build(root / "tmp")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C"}
    try:
        if preseeded:
            lines = make_config(PROJECT_ROOT, "golem-provider", "test", tmp_path,
                                work).profile.preseed
            subprocess.run(["chroot", str(root), "debconf-set-selections"],
                           input="\n".join(lines) + "\n", text=True, env=env, check=True)
        install = subprocess.run(["chroot", str(root), "dpkg", "--install",
                                  f"/tmp/{deb.name}"], env=env, capture_output=True,
                                 text=True, stdin=subprocess.DEVNULL, timeout=300)
    finally:
        shutil.rmtree(root)
    output = install.stdout + install.stderr
    if preseeded:
        assert install.returncode == 0, output
    else:
        assert install.returncode != 0
        assert ("new golem-provider package pre-installation script subprocess returned "
                "error exit status 1") in output, output
