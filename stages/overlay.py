"""Stage 3: the profile's overlay files (jinja2 templates) and the wizard, on top
of the installed system, plus the services the profile enables.

The rootfs is a hard-linked copy of the packages stage's entry, so every file
written here is unlinked first: writing through a hard link would change the
cached entry underneath.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apt_repo.debpkg import LAUNCHER, LAUNCHER_PATH, PY_DEST, WIZARD_SOURCE, wizard_sources
from apt_repo.sources import deb822
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.stage import Stage, StageContext
from stages.shared import render_template

OVERLAY_DIR = Path("rootfs") / "overlay"
UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")


def overlay_files(project_root: Path, overlays: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    """(source file, path inside the image) for every overlay file, in apply order."""
    for name in overlays:
        base = project_root / OVERLAY_DIR / name
        if not base.is_dir():
            raise BuildError(f"overlay {name!r} does not exist at {base}",
                             "fix image.overlays in the profile")
        for source in sorted(base.rglob("*")):
            if source.is_file() or source.is_symlink():
                rel = str(source.relative_to(base))
                yield source, rel[:-3] if rel.endswith(".j2") else rel


# git keeps only the executable bit, so modes that matter are decided here.
PRIVATE_DIRS = {"etc/sudoers.d/": 0o440}


def image_mode(rel: str, source_mode: int) -> int:
    for prefix, mode in PRIVATE_DIRS.items():
        if rel.startswith(prefix):
            return mode
    return 0o755 if source_mode & 0o111 else 0o644


def template_context(config: BuildConfig) -> dict[str, Any]:
    profile = config.profile
    return {
        "profile": profile,
        "version": config.version,
        "image_name": config.image_name,
        "hostname": profile.hostname,
        "user": profile.user,
        "kernel_cmdline": " ".join(profile.kernel_cmdline),
        "golem": profile.golem,
        # The image's sources for GOLEM's signed repository (profiles that have one).
        "golem_sources": (deb822(profile.golem.apt_url, profile.debian.suite)
                          if profile.golem.apt_url else ""),
        **dict(profile.template),
    }


def render(source: Path, context: dict[str, Any]) -> str:
    return render_template(source, context)


def replace_file(target: Path, data: bytes, mode: int) -> None:
    """Write a fresh inode (never through an existing hard link or symlink)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        if target.is_dir() and not target.is_symlink():
            raise BuildError(f"overlay file {target} would replace a directory",
                             "rename the overlay file")
        target.unlink()
    target.write_bytes(data)
    target.chmod(mode)


def install_units(root: Path, units: tuple[str, ...]) -> list[str]:
    """Enable units the way `systemctl enable` does: links from their [Install] targets."""
    links: list[str] = []
    for unit in units:
        unit_file = next((root / d / unit for d in UNIT_DIRS if (root / d / unit).exists()),
                         None)
        if unit_file is None:
            raise BuildError(f"service {unit} is not installed in the image",
                             "add its package or overlay file, or drop it from image.services")
        unit_path = "/" + str(unit_file.relative_to(root))
        for target in wanted_by(unit_file.read_text()):
            link = root / "etc/systemd/system" / f"{target}.wants" / unit
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(unit_path)
            links.append(str(link.relative_to(root)))
    return links


def wanted_by(unit_text: str) -> list[str]:
    targets: list[str] = []
    section = ""
    for line in unit_text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Install]" and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            if key in ("WantedBy", "RequiredBy"):
                targets += value.split()
    return targets


class OverlayStage(Stage):
    name = "overlay"
    version = 1
    code = ("apt_repo.debpkg", "apt_repo.sources", "stages.shared")
    tools = ("cp",)
    description = "render the overlay templates, install the wizard, enable services"
    depends = ("packages",)
    config_keys = ("profile.overlays", "profile.services", "profile.hostname", "profile.user",
                   "profile.kernel_cmdline", "profile.golem", "profile.template",
                   "profile.name", "profile.description", "profile.debian", "version")

    def input_files(self, config: BuildConfig) -> list[Path]:
        files = [source for source, _ in overlay_files(config.project_root,
                                                       config.profile.overlays)]
        if "golemwz" not in config.profile.golem.packages:
            files += wizard_sources(config.project_root)
        return files

    def run(self, ctx: StageContext) -> None:
        config = ctx.config
        root = ctx.output / "rootfs"
        ctx.progress("hard-linking the installed system")
        ctx.runner.run(["cp", "-a", "--link", str(ctx.inputs["packages"] / "rootfs"),
                        str(root)])
        context = template_context(config)
        count = 0
        for source, rel in overlay_files(config.project_root, config.profile.overlays):
            target = root / rel
            mode = image_mode(rel, source.lstat().st_mode)
            if source.name.endswith(".j2"):
                replace_file(target, render(source, context).encode(), mode)
            elif source.is_symlink():
                if target.exists() or target.is_symlink():
                    target.unlink()
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(os.readlink(source))
            else:
                replace_file(target, source.read_bytes(), mode)
            count += 1
        ctx.progress(f"applied {count} overlay files")
        if "golemwz" not in config.profile.golem.packages:
            self._install_wizard(config.project_root, root)
        links = install_units(root, config.profile.services)
        ctx.progress(f"enabled {len(config.profile.services)} services ({len(links)} links)")

    @staticmethod
    def _install_wizard(project_root: Path, root: Path) -> None:
        """Without the signed repository the wizard is copied in as plain files."""
        # The same files, places and launcher as the golemwz package (apt_repo.debpkg).
        base = project_root / WIZARD_SOURCE
        target_dir = root / PY_DEST
        if target_dir.exists():
            shutil.rmtree(target_dir)
        for source in wizard_sources(project_root):
            replace_file(target_dir / source.relative_to(base), source.read_bytes(), 0o644)
        replace_file(root / LAUNCHER_PATH, LAUNCHER.encode(), 0o755)
