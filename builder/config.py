"""The typed, frozen build configuration: a profile (builder/profile.py) plus where
and which version to build."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from builder.errors import BuildError
from builder.profile import (
    PROFILE_DIR,
    DebianSource,
    GolemSource,
    Profile,
    load_profile,
    profile_names,
)

__all__ = ["BuildConfig", "DebianSource", "GolemSource", "Profile", "PROFILE_DIR",
           "image_file_name", "load_profile", "make_config", "profile_names"]

VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~-]{0,63}$")
# The published images: WORK_DIR/golem-gpu-live-VERSION.img (USB) and .iso.
IMAGE_PREFIX = "golem-gpu-live"
IMAGE_SUFFIXES = {"usb": "img", "iso": "iso"}


def image_file_name(version: str, media: str) -> str:
    """The published file of `media` ("usb" or "iso") for a version."""
    return f"{IMAGE_PREFIX}-{version}.{IMAGE_SUFFIXES[media]}"


@dataclass(frozen=True)
class BuildConfig:
    profile: Profile
    version: str
    project_root: Path
    tmp_dir: Path
    work_dir: Path
    local_debs: Path | None = None  # a directory of .deb files standing in for GOLEM's sources

    @property
    def image_name(self) -> str:
        return f"{IMAGE_PREFIX}-{self.version}"

    def image_file(self, media: str) -> str:
        return image_file_name(self.version, media)

    @property
    def seed(self) -> str:
        """Fixed per build: UUIDs derive from it, so images are reproducible."""
        return f"{self.profile.name}/{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": asdict(self.profile),
            "version": self.version,
            "image_name": self.image_name,
            "seed": self.seed,
            "local_debs": str(self.local_debs) if self.local_debs else None,
        }

    def value(self, dotted: str) -> Any:
        node: Any = self.as_dict()
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"unknown config key {dotted!r}")
            node = node[part]
        return node


def make_config(project_root: Path, profile: str, version: str, tmp_dir: Path,
                work_dir: Path, local_debs: Path | None = None) -> BuildConfig:
    if not VERSION_RE.match(version):
        raise BuildError(f"invalid version {version!r}",
                         "use letters, digits and . + ~ - (e.g. 1.2.3)")
    if local_debs is not None and not local_debs.is_dir():
        raise BuildError(f"local .deb directory {local_debs} does not exist",
                         "point LOCAL_DEBS/--local-debs at a directory of .deb files")
    return BuildConfig(
        profile=load_profile(project_root, profile),
        version=version,
        project_root=project_root.resolve(),
        tmp_dir=tmp_dir.resolve(),
        work_dir=work_dir.resolve(),
        local_debs=local_debs.resolve() if local_debs else None,
    )
