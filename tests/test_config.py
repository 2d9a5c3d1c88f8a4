from pathlib import Path

import pytest

from builder.config import load_profile, make_config, profile_names
from builder.errors import BuildError
from builder.profile import GOLEM_CHANNELS, SETTINGS, reference_table


def test_profiles_listed(project_root: Path) -> None:
    assert {"gpu-node", "golem-provider"} <= set(profile_names(project_root))


def test_gpu_node_profile_is_debian_only(project_root: Path) -> None:
    profile = load_profile(project_root, "gpu-node")
    assert profile.debian.suite == "trixie"
    assert profile.debian.components == ("main", "contrib", "non-free", "non-free-firmware")
    assert profile.golem.packages == ()
    assert "intel_iommu=on" in profile.kernel_cmdline and "iommu=pt" in profile.kernel_cmdline
    assert not any(arg.startswith("amd_iommu=on") for arg in profile.kernel_cmdline)
    assert {"live-boot", "linux-image-amd64", "python3-dialog"} <= set(profile.packages)


def test_extends_concatenates_lists_and_overrides_scalars(project_root: Path) -> None:
    base = load_profile(project_root, "gpu-node")
    child = load_profile(project_root, "golem-provider")
    assert child.packages[: len(base.packages)] == base.packages
    assert "unattended-upgrades" in child.packages
    assert child.overlays == ("common", "golem-provider")
    assert child.chain == ("golem-provider", "gpu-node")
    assert "golem-provider" in child.golem.packages


def test_unknown_profile_names_the_known_ones(project_root: Path) -> None:
    with pytest.raises(BuildError) as err:
        load_profile(project_root, "nope")
    assert "unknown profile 'nope'" in str(err.value)
    assert "gpu-node" in str(err.value)


def test_malformed_profile_is_one_line(fake_project: Path) -> None:
    (fake_project / "rootfs/profiles/broken.toml").write_text("[debian\nsuite=1")
    with pytest.raises(BuildError) as err:
        load_profile(fake_project, "broken")
    assert "not valid TOML" in str(err.value)
    assert "\n" not in str(err.value)


def test_profile_with_wrong_type_or_unknown_key(fake_project: Path) -> None:
    profiles = fake_project / "rootfs/profiles"
    (profiles / "typo.toml").write_text('extends = "gpu-node"\npackagez = 1\n')
    with pytest.raises(BuildError, match="unknown key"):
        load_profile(fake_project, "typo")
    (profiles / "wrongtype.toml").write_text(
        'extends = "gpu-node"\n[image]\nkernel_cmdline = "quiet"\n')
    with pytest.raises(BuildError, match="kernel_cmdline"):
        load_profile(fake_project, "wrongtype")


def test_extends_cycle_is_reported(fake_project: Path) -> None:
    profiles = fake_project / "rootfs/profiles"
    (profiles / "a.toml").write_text('extends = "b"\n')
    (profiles / "b.toml").write_text('extends = "a"\n')
    with pytest.raises(BuildError, match="extends itself"):
        load_profile(fake_project, "a")


def test_config_values_and_validation(project_root: Path, tmp_path: Path) -> None:
    config = make_config(project_root, "gpu-node", "1.2.3", tmp_path / "t", tmp_path / "w")
    assert config.image_name == "golem-gpu-live-1.2.3"
    assert config.value("profile.debian.suite") == "trixie"
    assert config.seed == "gpu-node/1.2.3"
    with pytest.raises(KeyError):
        config.value("profile.nope")
    with pytest.raises(BuildError, match="invalid version"):
        make_config(project_root, "gpu-node", "../x", tmp_path, tmp_path)
    with pytest.raises(BuildError, match="does not exist"):
        make_config(project_root, "gpu-node", "1", tmp_path, tmp_path, tmp_path / "missing")


def test_every_profile_problem_is_reported_at_once_with_file_and_key(fake_project: Path) -> None:
    profiles = fake_project / "rootfs/profiles"
    (profiles / "bad.toml").write_text(
        'extends = "gpu-node"\npackagez = 1\n'
        '[debian]\nmirror = "ftp:/nowhere"\n'
        '[image]\nkernel_cmdline = "quiet"\nservices = ["sshd"]\nhostnamez = "x"\n'
        '[golem]\nchannel = "nightly"\n')
    with pytest.raises(BuildError) as err:
        load_profile(fake_project, "bad")
    line = str(err.value)
    assert "\n" not in line and "has 6 problems" in line
    for expected in (
        "rootfs/profiles/bad.toml: packagez: unknown key",
        "rootfs/profiles/bad.toml: image.hostnamez: unknown key",
        "rootfs/profiles/bad.toml: debian.mirror: 'ftp:/nowhere' is not an http or https URL",
        "rootfs/profiles/bad.toml: image.kernel_cmdline: must be a list of strings",
        "rootfs/profiles/bad.toml: image.services: 'sshd' is not a unit name",
        "rootfs/profiles/bad.toml: golem.channel: 'nightly' is not one of release",
    ):
        assert expected in line


def test_a_missing_required_key_names_the_file_that_should_set_it(fake_project: Path) -> None:
    (fake_project / "rootfs/profiles/bare.toml").write_text('[debian]\nsuite = "trixie"\n')
    with pytest.raises(BuildError) as err:
        load_profile(fake_project, "bare")
    line = str(err.value)
    for key in ("debian.mirror", "debian.components", "packages.install", "image.hostname",
                "image.kernel_cmdline", "image.overlays"):
        assert f"rootfs/profiles/bare.toml: {key}: missing" in line
    assert "debian.suite" not in line and "image.user:" not in line  # given / defaulted


def test_a_bad_value_is_blamed_on_the_child_that_set_it(fake_project: Path) -> None:
    (fake_project / "rootfs/profiles/child.toml").write_text(
        'extends = "gpu-node"\n[packages]\ninstall = ["Bad_Name"]\n')
    with pytest.raises(BuildError, match=r"child\.toml: packages\.install: 'Bad_Name' is not a "):
        load_profile(fake_project, "child")


def test_defaults_come_from_the_settings_table(fake_project: Path) -> None:
    (fake_project / "rootfs/profiles/minimal.toml").write_text(
        '[debian]\nsuite = "trixie"\nmirror = "http://deb.debian.org/debian"\n'
        'components = ["main"]\n[packages]\ninstall = ["live-boot"]\n'
        '[image]\nhostname = "node"\nkernel_cmdline = []\noverlays = ["common"]\n')
    profile = load_profile(fake_project, "minimal")
    defaults = {s.key: s.default for s in SETTINGS}
    assert profile.user == defaults["image.user"] == "golem"
    assert profile.debian.variant == defaults["debian.variant"]
    assert profile.golem.channel == defaults["golem.channel"]
    assert profile.services == () and profile.template == ()


def test_the_readme_profile_reference_is_the_settings_table(project_root: Path) -> None:
    readme = (project_root / "README.md").read_text()
    start, end = "<!-- profile-reference:start -->\n", "<!-- profile-reference:end -->"
    assert start in readme and end in readme
    documented = readme.split(start, 1)[1].split(end, 1)[0]
    assert documented == reference_table(), "regenerate: golem-live profiles --reference"


def test_the_profile_channels_are_the_repository_channels() -> None:
    from apt_repo.channels import CHANNELS

    assert GOLEM_CHANNELS == CHANNELS


def test_source_date_epoch_defaults_to_the_last_commit_never_the_clock(
        fake_project: Path, tmp_path: Path) -> None:
    import subprocess

    def config(**kwargs: int):
        return make_config(fake_project, "gpu-node", "1", tmp_path / "t", tmp_path / "w",
                           **kwargs)

    newest = max(int(p.stat().st_mtime) for p in (fake_project / "rootfs").rglob("*")
                 if p.is_file())
    assert config().source_date_epoch == newest  # not a git checkout: the files' times
    env = {"GIT_AUTHOR_DATE": "@1700000000 +0000", "GIT_COMMITTER_DATE": "@1700000000 +0000",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for argv in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(argv, cwd=fake_project, env=env, check=True, capture_output=True)
    assert config().source_date_epoch == 1700000000
    assert config(source_date_epoch=42).source_date_epoch == 42
    assert config().value("source_date_epoch") == 1700000000
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH -1 is out of range"):
        config(source_date_epoch=-1)


def test_the_repository_stage_is_keyed_by_the_epoch_it_stamps(fake_project: Path,
                                                               tmp_path: Path) -> None:
    from builder.pipeline import make_plan
    from stages.repository import RepositoryStage

    def key(epoch: int) -> str:
        config = make_config(fake_project, "golem-provider", "1", tmp_path / "t",
                             tmp_path / "w", source_date_epoch=epoch)
        return make_plan(config, [RepositoryStage()]).step("repository").key

    assert key(1) == key(1) != key(2)


def test_the_iso_bios_loader_is_grub_unless_a_profile_chooses_isolinux(
        fake_project: Path) -> None:
    profiles = fake_project / "rootfs/profiles"
    assert load_profile(fake_project, "gpu-node").bios_loader == "grub"
    (profiles / "iso-isolinux.toml").write_text(
        'extends = "gpu-node"\n[image]\nbios_loader = "isolinux"\n')
    assert load_profile(fake_project, "iso-isolinux").bios_loader == "isolinux"
    (profiles / "iso-lilo.toml").write_text('extends = "gpu-node"\n[image]\nbios_loader = "lilo"\n')
    with pytest.raises(BuildError) as err:
        load_profile(fake_project, "iso-lilo")
    assert ("rootfs/profiles/iso-lilo.toml: image.bios_loader: 'lilo' is not one of "
            "grub, isolinux") in str(err.value)
    (profiles / "iso-list.toml").write_text(
        'extends = "gpu-node"\n[image]\nbios_loader = ["isolinux"]\n')
    with pytest.raises(BuildError, match=r"iso-list\.toml: image\.bios_loader: must be a string"):
        load_profile(fake_project, "iso-list")
