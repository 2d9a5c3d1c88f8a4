"""The project's own packages, built with dpkg-deb: for now the wizard, `golemwz`."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError
from builder.runner import Runner

WIZARD_SOURCE = Path("rootfs") / "wizard" / "golemwz"  # relative to the project root
PY_DEST = Path("usr/lib/python3/dist-packages/golemwz")
# Where the wizard's command is installed; golemwz.service starts it.
LAUNCHER_PATH = Path("usr/bin/golemwz")
LAUNCHER = """#!/usr/bin/python3
import sys

from golemwz.cli import main

sys.exit(main())
"""


@dataclass(frozen=True)
class WizardPackage:
    version: str
    depends: tuple[str, ...] = ("python3", "python3-dialog", "python3-tomli-w", "dialog")
    maintainer: str = "golem-gpu-live maintainers <golem-gpu-live@golem.network>"


def deb_version(version: str) -> str:
    """A Debian version from the build version (which must start with a digit for dpkg)."""
    return version if version[:1].isdigit() else f"0~{version}"


def wizard_sources(project_root: Path) -> list[Path]:
    """Every file the package is built from (for the stage's cache key)."""
    source = project_root / WIZARD_SOURCE
    return sorted(p for p in source.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def _control(pkg: WizardPackage, installed_kib: int) -> str:
    return (f"Package: golemwz\nVersion: {deb_version(pkg.version)}\nArchitecture: all\n"
            f"Maintainer: {pkg.maintainer}\nInstalled-Size: {installed_kib}\n"
            f"Depends: {', '.join(pkg.depends)}\nSection: admin\nPriority: optional\n"
            "Description: GOLEM provider setup wizard for golem-gpu-live\n"
            " Configures storage, network, GPU passthrough and pricing of a GOLEM\n"
            " provider on the live image, as a dialog-based wizard on the console.\n")


def build_wizard_deb(runner: Runner, project_root: Path, pkg: WizardPackage, out_dir: Path,
                     epoch: int) -> Path:
    """Build golemwz_VERSION_all.deb into out_dir, reproducibly (times clamped to epoch)."""
    version = deb_version(pkg.version)
    sources = wizard_sources(project_root)
    source_dir = project_root / WIZARD_SOURCE
    if not (source_dir / "cli.py").is_file():
        raise BuildError(f"the wizard's source {source_dir}/cli.py is missing",
                         "restore rootfs/wizard/golemwz (golemwz.cli:main is its entry point)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="golemwz-deb-") as tmp:
        staging = Path(tmp) / "golemwz"
        for src in sources:
            dest = staging / PY_DEST / src.relative_to(source_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        launcher = staging / LAUNCHER_PATH
        launcher.parent.mkdir(parents=True, exist_ok=True)
        launcher.write_text(LAUNCHER, encoding="utf-8")
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        control = staging / "DEBIAN" / "control"
        control.parent.mkdir(parents=True)
        control.write_text(_control(pkg, max(1, (size + 1023) // 1024)), encoding="utf-8")
        for path in sorted(staging.rglob("*"), reverse=True):
            mode = 0o755 if path.is_dir() or path == launcher else 0o644
            os.chmod(path, mode)
            os.utime(path, (epoch, epoch), follow_symlinks=False)
        os.chmod(staging, 0o755)
        deb = out_dir / f"golemwz_{version}_all.deb"
        runner.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(staging),
                    str(deb)], env={"SOURCE_DATE_EPOCH": str(epoch)})
    return deb
