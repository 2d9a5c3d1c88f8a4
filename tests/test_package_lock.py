"""A build pinned to an earlier build's package lock (issue 11): the lock file read with
every bad line named, the pins apt gets while the packages stage installs, the
comparison that fails a build installing anything else, and the mirror overrides that
point a rebuild at a snapshot of the archive."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from apt_repo.lock import (
    PREFERENCES_FILE,
    SNAPSHOT_APT_CONF,
    apt_preferences,
    lock_differences,
    read_package_lock,
)
from builder.config import make_config
from builder.errors import BuildError
from builder.pipeline import make_plan
from stages.catalog import stage_list
from stages.packages import LOCK_FILE, PackagesStage
from tests.fakes import RecordingRunner
from tests.test_stages_rootfs import context, fake_bootstrap

SHA_A, SHA_B = "a" * 64, "b" * 64
LOCK = f"bash 5.2.37-2 {SHA_A}\nlibc6 2.41-12 {SHA_B}\nnvidia-open-modules 550.1 -\n"


def write_lock(tmp_path: Path, text: str = LOCK) -> Path:
    path = tmp_path / "golem-gpu-live-1.0.packages.lock"
    path.write_text(text)
    return path


def test_a_lock_is_read_as_package_version_digest(tmp_path: Path) -> None:
    lock = read_package_lock(write_lock(tmp_path))
    assert lock.versions() == {"bash": "5.2.37-2", "libc6": "2.41-12",
                               "nvidia-open-modules": "550.1"}


def test_every_bad_line_of_a_lock_is_named_at_once(tmp_path: Path) -> None:
    path = write_lock(tmp_path, f"bash 5.2.37-2 {SHA_A}\nBash! 1 -\nlibc6 2.41 nothex\n"
                                f"bash 5.2.37-3 {SHA_A}\njust-two fields\n")
    with pytest.raises(BuildError) as error:
        read_package_lock(path)
    message = str(error.value)
    assert "line 2: bad package" in message and "line 3: bad sha256" in message
    assert "line 4: bash is listed twice" in message
    assert "line 5: expected 'package version sha256'" in message


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_empty_lock_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(BuildError, match="no packages in it"):
        read_package_lock(write_lock(tmp_path, text))


def test_a_missing_lock_is_one_error_line(fake_project: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="No such file"):
        read_package_lock(tmp_path / "missing.lock")
    with pytest.raises(BuildError, match="packages lock .*missing.lock does not exist"):
        make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp", tmp_path / "work",
                    packages_lock=tmp_path / "missing.lock")


def test_a_bad_lock_stops_the_build_before_anything_runs(fake_project: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stages.packages.check_debian_mirror", lambda mirror, suite: None)
    config = make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp", tmp_path / "work",
                         packages_lock=write_lock(tmp_path, "bash\n"))
    with pytest.raises(BuildError, match="line 1: expected"):
        PackagesStage().preflight(config)


def test_apt_is_pinned_to_each_locked_version(tmp_path: Path) -> None:
    text = apt_preferences(read_package_lock(write_lock(tmp_path)))
    assert "Package: bash\nPin: version 5.2.37-2\nPin-Priority: 1001\n" in text
    assert text.count("Pin-Priority: 1001") == 3


def test_differences_name_each_package(tmp_path: Path) -> None:
    lock = read_package_lock(write_lock(tmp_path))
    built = (f"bash 5.2.37-3 {SHA_A}\nlibc6 2.41-12 {SHA_A}\n"
             f"nvidia-open-modules 550.1 -\nvim 9.1 {SHA_B}\n")
    assert lock_differences(lock, built) == [
        "bash locked 5.2.37-2, installed 5.2.37-3",
        "libc6 2.41-12 has another sha256 than locked",
        "vim 9.1 installed but not locked"]
    assert lock_differences(lock, f"bash 5.2.37-2 {SHA_A}\n") == [
        "libc6 2.41-12 not installed", "nvidia-open-modules 550.1 not installed"]
    assert lock_differences(lock, LOCK) == []


def test_the_lock_is_part_of_the_packages_key_and_nothing_before(
        fake_project: Path, tmp_path: Path) -> None:
    def keys(lock_text: str | None) -> dict[str, str]:
        lock = write_lock(tmp_path, lock_text) if lock_text else None
        config = make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp",
                             tmp_path / "work", packages_lock=lock)
        plan = make_plan(config, stage_list(config), offline=True)
        return {step.stage.name: step.key for step in plan.steps}

    plain, pinned, other = keys(None), keys(LOCK), keys(LOCK.replace("2.41-12", "2.41-13"))
    assert plain["bootstrap"] == pinned["bootstrap"] == other["bootstrap"]
    assert len({plain["packages"], pinned["packages"], other["packages"]}) == 3


def test_mirrors_are_overridden_and_checked(fake_project: Path, tmp_path: Path) -> None:
    snapshot = "https://snapshot.debian.org/archive/debian/20261201T000000Z/"
    config = make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp", tmp_path / "work",
                         debian_mirror=snapshot, security_mirror="")
    assert config.profile.debian.mirror == snapshot
    assert config.profile.debian.security_mirror == ""
    with pytest.raises(BuildError) as error:
        make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp", tmp_path / "work",
                    debian_mirror="snapshot.debian.org", security_mirror="ftp://x/")
    assert "--debian-mirror: 'snapshot.debian.org' is not an http or https URL" in \
        str(error.value)
    assert "--security-mirror" in str(error.value)


def run_pinned(fake_project: Path, tmp_path: Path, installed: str) -> tuple[Path, list[str]]:
    """The packages stage pinned to LOCK, with dpkg-query reporting `installed` and
    every package's digest in apt's lists."""
    config = make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp", tmp_path / "work",
                         packages_lock=write_lock(tmp_path))
    out = tmp_path / "out"
    root = out / "rootfs"
    seen: list[str] = []
    listing = "".join(f"{line.split()[0]}\t{line.split()[1]}\n"
                      for line in installed.splitlines())
    runner = RecordingRunner(responses={("chroot",): (0, ""),
                                        ("chroot", str(root), "dpkg-query"): (0, listing)})
    runner.side_effects[("cp",)] = lambda argv: fake_bootstrap(Path(argv[-1]))

    def index(argv: tuple[str, ...]) -> None:  # apt-get update: the pins are in place
        seen.append((root / PREFERENCES_FILE).read_text())
        seen.append((root / SNAPSHOT_APT_CONF).read_text())
        lists = root / "var/lib/apt/lists"
        (lists / "deb.debian.org_debian_dists_trixie_main_binary-amd64_Packages").write_text(
            "".join(f"Package: {f[0]}\nVersion: {f[1]}\nSHA256: {f[2]}\n\n"
                    for f in (line.split() for line in installed.splitlines()) if f[2] != "-"))

    runner.side_effects[("chroot", str(root), "apt-get", "update")] = index
    with ExitStack() as stack:
        PackagesStage().run(context(config, out, runner, stack, bootstrap=tmp_path / "boot"))
    upgrade = next(a for a in runner.argvs if "dist-upgrade" in a)
    assert "--allow-downgrades" in upgrade
    return out, seen


def test_a_pinned_build_installs_the_lock_and_leaves_no_pin_in_the_image(
        fake_project: Path, tmp_path: Path) -> None:
    out, seen = run_pinned(fake_project, tmp_path, LOCK)
    assert "Pin: version 2.41-12" in seen[0] and "Check-Valid-Until" in seen[1]
    assert (out / LOCK_FILE).read_text() == LOCK
    assert not (out / "rootfs" / PREFERENCES_FILE).exists()
    assert not (out / "rootfs" / SNAPSHOT_APT_CONF).exists()


def test_a_pinned_build_that_installs_something_else_fails(
        fake_project: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError) as error:
        run_pinned(fake_project, tmp_path, LOCK.replace("2.41-12", "2.41-13"))
    assert "1 differ (libc6 locked 2.41-12, installed 2.41-13)" in str(error.value)
    assert "snapshot" in error.value.fix
