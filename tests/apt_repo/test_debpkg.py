"""The golemwz package built with dpkg-deb from rootfs/wizard/golemwz."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from apt_repo.debpkg import WizardPackage, build_wizard_deb, deb_version, wizard_sources
from builder.errors import BuildError
from builder.runner import SubprocessRunner
from tests.fakes import RecordingRunner

from .conftest import need_tools


def test_deb_version() -> None:
    assert deb_version("1.2.3") == "1.2.3"
    assert deb_version("dev") == "0~dev"


def test_wizard_sources_skip_bytecode(project: Path) -> None:
    cache = project / "rootfs/wizard/golemwz/__pycache__"
    cache.mkdir()
    (cache / "cli.cpython-311.pyc").write_bytes(b"x")
    assert [p.name for p in wizard_sources(project)] == ["__init__.py", "cli.py"]


def test_dpkg_deb_argv_and_staging(project: Path, tmp_path: Path) -> None:
    staged: dict[str, str] = {}

    def look(argv: tuple[str, ...]) -> None:
        staging = Path(argv[-2])
        staged.update({str(p.relative_to(staging)): p.read_text()
                       for p in staging.rglob("*") if p.is_file()})

    runner = RecordingRunner(side_effects={("dpkg-deb",): look})
    deb = build_wizard_deb(runner, project, WizardPackage("dev"), tmp_path, 1700000000)
    assert deb == tmp_path / "golemwz_0~dev_all.deb"
    (call,) = runner.calls
    assert call.argv[:4] == ("dpkg-deb", "--root-owner-group", "-Zxz", "--build")
    assert call.env == {"SOURCE_DATE_EPOCH": "1700000000"}
    assert sorted(staged) == ["DEBIAN/control", "usr/bin/golemwz",
                              "usr/lib/python3/dist-packages/golemwz/__init__.py",
                              "usr/lib/python3/dist-packages/golemwz/cli.py"]
    assert "from golemwz.cli import main" in staged["usr/bin/golemwz"]
    assert "Version: 0~dev\n" in staged["DEBIAN/control"]


def test_missing_wizard_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="the wizard's source .*cli.py is missing"):
        build_wizard_deb(RecordingRunner(), tmp_path, WizardPackage("1"), tmp_path / "o", 0)


@pytest.mark.tools
def test_real_package_contents_and_reproducibility(project: Path, tmp_path: Path) -> None:
    need_tools("dpkg-deb")
    runner = SubprocessRunner(tmp_path / "log")
    one = build_wizard_deb(runner, project, WizardPackage("1.0"), tmp_path / "a", 1700000000)
    two = build_wizard_deb(runner, project, WizardPackage("1.0"), tmp_path / "b", 1700000000)
    assert one.read_bytes() == two.read_bytes()
    fields = subprocess.run(["dpkg-deb", "--field", str(one)], capture_output=True, text=True,
                            check=True).stdout
    assert "Package: golemwz\n" in fields and "Architecture: all\n" in fields
    assert "Depends: python3, python3-dialog, python3-tomli-w, dialog\n" in fields
    listing = subprocess.run(["dpkg-deb", "--contents", str(one)], capture_output=True,
                             text=True, check=True).stdout
    lines = {line.split()[-1]: line.split()[:2] for line in listing.splitlines()}
    assert lines["./usr/bin/golemwz"] == ["-rwxr-xr-x", "root/root"]
    assert lines["./usr/lib/python3/dist-packages/golemwz/cli.py"] == ["-rw-r--r--",
                                                                       "root/root"]
