from pathlib import Path

import pytest

from builder.config import load_profile, make_config, profile_names
from builder.errors import BuildError


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
