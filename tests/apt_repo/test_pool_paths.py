"""Pool paths come from validated control fields only (issue 10 item 9)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from apt_repo.archive import layout_pool
from builder.errors import BuildError
from builder.runner import SubprocessRunner
from tests.fakes import RecordingRunner

from .conftest import need_tools


def runner_for(package: str, version: str, architecture: str) -> RecordingRunner:
    """dpkg-deb --field answering with these control fields."""
    return RecordingRunner(responses={("dpkg-deb", "--field"): (
        0, f"Package: {package}\nVersion: {version}\nArchitecture: {architecture}\n")})


@pytest.mark.parametrize("package, version, architecture, problem", [
    ("golem-provider", "1.0", "../../../../../../../x", "Architecture"),
    ("golem-provider", "1.0", "amd64/../../x", "Architecture"),
    ("../../x", "1.0", "amd64", "Package"),
    ("golem/provider", "1.0", "amd64", "Package"),
    ("Golem", "1.0", "amd64", "Package"),
    ("golem-provider", "1.0/../../../x", "amd64", "Version"),
    ("golem-provider", "../1", "amd64", "Version"),
    ("golem-provider", "1.0_evil", "amd64", "Version"),
])
def test_bad_control_fields_never_make_a_path(tmp_path: Path, package: str, version: str,
                                              architecture: str, problem: str) -> None:
    deb = tmp_path / "in" / "x.deb"
    deb.parent.mkdir()
    deb.write_bytes(b"deb")
    root = tmp_path / "deep/er/repo"
    with pytest.raises(BuildError, match=problem):
        layout_pool(runner_for(package, version, architecture), [deb], root, "main")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != deb]
    assert written == []  # nothing copied anywhere, inside or outside the repository


@pytest.mark.parametrize("version", ["1.0", "2:1.0-1", "0.17.1~rc1+git20250101-3", "1-2-3"])
def test_debian_versions_are_accepted(tmp_path: Path, version: str) -> None:
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"deb")
    (info,) = layout_pool(runner_for("ya-runtime-vm-nvidia", version, "amd64"), [deb],
                          tmp_path / "repo", "main")
    placed = tmp_path / "repo/pool/main/y/ya-runtime-vm-nvidia" / info.filename
    assert placed.read_bytes() == b"deb"


def test_other_architectures_are_left_out(tmp_path: Path) -> None:
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"deb")
    assert layout_pool(runner_for("golem-provider", "1.0", "arm64"), [deb], tmp_path / "repo",
                       "main") == []
    assert not (tmp_path / "repo").exists()


def test_a_real_deb_with_a_traversing_architecture_is_refused(tmp_path: Path) -> None:
    """dpkg-deb builds it with only a warning; the repository must not place it."""
    need_tools("dpkg-deb")
    staging = tmp_path / "stage"
    (staging / "DEBIAN").mkdir(parents=True)
    (staging / "DEBIAN/control").write_text(
        "Package: evil\nVersion: 1\nArchitecture: ../../../../../../../x\n"
        "Maintainer: T <t@example.org>\nDescription: evil\n")
    deb = tmp_path / "evil.deb"
    built = subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(staging),
                            str(deb)], capture_output=True, check=False)
    if built.returncode != 0:
        pytest.skip(f"this dpkg-deb refuses the control file: {built.stderr[-200:]!r}")
    root = tmp_path / "a/b/c/d/e/f/repo"
    with pytest.raises(BuildError, match="Architecture"):
        layout_pool(SubprocessRunner(tmp_path / "log"), [deb], root, "main")
    assert not list(tmp_path.rglob("x.deb")) and not root.exists()
