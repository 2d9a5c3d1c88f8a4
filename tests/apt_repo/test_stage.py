"""The repository stage: cache inputs, its output layout, no secret left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from apt_repo.components import COMPONENTS_FILE
from apt_repo.github import GitHubSettings
from builder.config import BuildConfig, make_config
from builder.errors import BuildError
from builder.pipeline import make_plan
from builder.runner import SubprocessRunner
from builder.stage import StageContext
from stages.bootstrap import BootstrapStage
from stages.repository import RepositoryStage

from .conftest import FakeGitHub, make_deb, need_tools

GOLEM_DEBS = [("golem-provider", "0.15.0", "amd64"), ("ya-runtime-vm-nvidia", "0.1.3", "amd64"),
              ("golem-nvidia-kernel", "6.1.90", "amd64"), ("ya-runtime-wasi-cli", "0.2.4",
                                                           "amd64"),
              ("ya-installer-resources", "0.1.5", "all")]


@pytest.fixture
def local_debs(tmp_path: Path) -> Path:
    need_tools("dpkg-deb")
    debs = tmp_path / "debs"
    debs.mkdir()
    for package, version, arch in GOLEM_DEBS:
        make_deb(debs, package, version, arch)
    return debs


def config_for(project: Path, tmp_path: Path, local_debs: Path | None) -> BuildConfig:
    return make_config(project, "golem-provider", "1.0", tmp_path / "tmp", tmp_path / "work",
                       local_debs)


def run_stage(stage: RepositoryStage, config: BuildConfig, out: Path) -> list[str]:
    out.mkdir(parents=True)
    messages: list[str] = []
    with ExitStack() as stack:
        ctx = StageContext(config, out, {}, SubprocessRunner(out.parent / "stage.log"), stack,
                           out.parent / "stage.log", messages.append)
        stage.run(ctx)
    return messages


def test_cache_key_follows_debs_patterns_and_wizard(fake_project: Path, local_debs: Path,
                                                    tmp_path: Path) -> None:
    components = tmp_path / "components.toml"
    shutil.copyfile(COMPONENTS_FILE, components)
    stages = [BootstrapStage(), RepositoryStage(components_file=components)]
    config = config_for(fake_project, tmp_path, local_debs)

    def keys() -> dict[str, str]:
        return {s.stage.name: s.key for s in make_plan(config, stages).steps}

    first = keys()
    assert keys() == first
    make_deb(local_debs, "extra", "1")  # a new .deb
    second = keys()
    make_deb(local_debs, "extra", "1", files={"usr/share/extra/x": "changed"})  # a changed one
    third = keys()
    components.write_text(components.read_text().replace("'^v[0-9]'", "'^v1\\..*'"))  # a pattern
    fourth = keys()
    (fake_project / "rootfs/wizard/golemwz/cli.py").write_text("def main():\n    return 1\n")
    fifth = keys()
    runs = [first, second, third, fourth, fifth]
    assert len({k["repository"] for k in runs}) == 5
    assert len({k["bootstrap"] for k in runs}) == 1
    (fake_project / "rootfs/overlay/common/etc/motd.j2").write_text("changed\n")
    assert keys()["repository"] == fifth["repository"]


@pytest.mark.tools
def test_stage_output_from_local_debs(fake_project: Path, local_debs: Path,
                                      tmp_path: Path) -> None:
    need_tools()
    out = tmp_path / "out"
    config = config_for(fake_project, tmp_path, local_debs)
    messages = run_stage(RepositoryStage(), config, out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "repo", "repo.gpg"]
    assert sorted(p.name for p in (out / "repo").iterdir()) == ["dists", "pool"]
    dist = out / "repo/dists" / config.profile.debian.suite
    assert {"InRelease", "Release", "Release.gpg"} <= {p.name for p in dist.iterdir()}
    release = (dist / "Release").read_text()
    assert "Suite: release" in release and "Valid-Until" not in release
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p["package"] for p in manifest["packages"]) == sorted(
        ["golemwz", *(d[0] for d in GOLEM_DEBS)])
    assert manifest["github"] == []
    subprocess.run(["gpgv", "--keyring", str(out / "repo.gpg"), str(dist / "InRelease")],
                   check=True, capture_output=True)
    # The throwaway secret key is gone: nothing in the output but public data.
    assert not (out / ".gnupg").exists()
    for path in out.rglob("*"):
        assert not path.name.endswith((".key", ".kbx", ".rev")) and "private-keys" not in str(
            path)
    assert any("ephemeral signing key" in m for m in messages)


@pytest.mark.tools
def test_stage_refuses_a_repository_missing_profile_packages(
        fake_project: Path, local_debs: Path, tmp_path: Path) -> None:
    need_tools()
    (local_debs / "golem-nvidia-kernel_6.1.90_amd64.deb").unlink()
    with pytest.raises(BuildError) as err:
        run_stage(RepositoryStage(), config_for(fake_project, tmp_path, local_debs),
                  tmp_path / "out")
    assert str(err.value).startswith("the repository lacks golem-nvidia-kernel (it has ")
    assert not (tmp_path / "out/.gnupg").exists()


@pytest.mark.tools
def test_stage_fetches_from_github_without_local_debs(
        fake_project: Path, local_debs: Path, tmp_path: Path, fake_github: FakeGitHub) -> None:
    need_tools()
    components = tmp_path / "components.toml"
    lines = []
    for package, _, _ in GOLEM_DEBS:
        lines.append(f'[[component]]\nname = "{package}"\nrepo = "golemfactory/{package}"\n'
                     "tag = '^v'\n")
        debs = sorted(local_debs.glob(f"{package}_*.deb"))
        fake_github.add_release(f"golemfactory/{package}", "v1", debs)
    components.write_text("\n".join(lines))
    stage = RepositoryStage(github=GitHubSettings(api_url=fake_github.base, attempts=1),
                            components_file=components)
    config = config_for(fake_project, tmp_path, None)
    stage.preflight(config)
    run_stage(stage, config, tmp_path / "out")
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert sorted(g["component"] for g in manifest["github"]) == sorted(d[0] for d in GOLEM_DEBS)
    assert {g["tag"] for g in manifest["github"]} == {"v1"}


def test_preflight_names_the_source_and_the_ways_out(fake_project: Path, tmp_path: Path,
                                                     closed_port: int) -> None:
    stage = RepositoryStage(github=GitHubSettings(api_url=f"http://127.0.0.1:{closed_port}",
                                                  attempts=1))
    with pytest.raises(BuildError) as err:
        stage.preflight(config_for(fake_project, tmp_path, None))
    assert str(err.value) == (
        f"cannot reach the GitHub API at http://127.0.0.1:{closed_port}: connection refused "
        "(after 1 attempts) — give a directory of GOLEM .deb files (LOCAL_DEBS=DIR), "
        "or build PROFILE=gpu-node")
