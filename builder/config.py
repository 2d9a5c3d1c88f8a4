"""The typed, frozen build configuration: a profile (builder/profile.py) plus where
and which version to build."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from builder.cache import file_digest
from builder.errors import BuildError
from builder.profile import (
    PROFILE_DIR,
    SETTINGS,
    DebianSource,
    GolemSource,
    Profile,
    load_profile,
    profile_names,
)
from builder.runner import SubprocessRunner

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
    # Timestamps the outputs carry instead of the clock's (reproducible builds).
    source_date_epoch: int = 0
    # The package lock of an earlier build to install exactly again (apt_repo/lock.py).
    packages_lock: Path | None = None

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
            "source_date_epoch": self.source_date_epoch,
            # Its content, not its path, is what a stage's key depends on.
            "packages_lock": file_digest(self.packages_lock) if self.packages_lock else None,
        }

    def value(self, dotted: str) -> Any:
        node: Any = self.as_dict()
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"unknown config key {dotted!r}")
            node = node[part]
        return node


def default_source_date_epoch(project_root: Path) -> int:
    """The last commit's date; outside a git checkout the newest project file's mtime
    (a tarball's). Never the clock: two builds of one checkout must agree."""
    try:
        result = SubprocessRunner(Path(os.devnull)).run(
            ["git", "-C", str(project_root), "log", "-1", "--format=%ct"], capture=True,
            check=False)
        if result.returncode == 0 and result.stdout.strip().isdigit():
            return int(result.stdout.strip())
    except BuildError:
        pass  # no git: the files' times below
    newest = 0
    for sub_dir in ("rootfs", "disk", "stages"):
        for path in (project_root / sub_dir).rglob("*"):
            if path.is_file():
                newest = max(newest, int(path.stat().st_mtime))
    return newest


def mirror_overrides(profile: Profile, mirror: str | None,
                     security_mirror: str | None) -> Profile:
    """The profile with its Debian mirrors replaced (e.g. by snapshot.debian.org URLs
    to rebuild an older release), each checked as the profile's own setting is."""
    validators = {setting.key: setting.validate for setting in SETTINGS}
    given = (("debian.mirror", "--debian-mirror", mirror),
             ("debian.security_mirror", "--security-mirror", security_mirror))
    errors = []
    for key, flag, value in given:
        validate = validators[key]
        problem = validate(value) if value is not None and validate else None
        if problem:
            errors.append(f"{flag}: {problem}")
    if errors:
        raise BuildError("; ".join(errors), "give the archive's http(s) URL")
    debian = profile.debian
    return replace(profile, debian=replace(
        debian, mirror=mirror or debian.mirror,
        security_mirror=debian.security_mirror if security_mirror is None else security_mirror))


def make_config(project_root: Path, profile: str, version: str, tmp_dir: Path,
                work_dir: Path, local_debs: Path | None = None,
                source_date_epoch: int | None = None, packages_lock: Path | None = None,
                debian_mirror: str | None = None,
                security_mirror: str | None = None) -> BuildConfig:
    if not VERSION_RE.match(version):
        raise BuildError(f"invalid version {version!r}",
                         "use letters, digits and . + ~ - (e.g. 1.2.3)")
    if source_date_epoch is not None and not 0 <= source_date_epoch < 2**32:
        raise BuildError(f"SOURCE_DATE_EPOCH {source_date_epoch} is out of range",
                         "give seconds since 1970 (e.g. git log -1 --format=%ct)")
    if local_debs is not None and not local_debs.is_dir():
        raise BuildError(f"local .deb directory {local_debs} does not exist",
                         "point LOCAL_DEBS/--local-debs at a directory of .deb files")
    if packages_lock is not None and not packages_lock.is_file():
        raise BuildError(f"packages lock {packages_lock} does not exist",
                         "give the NAME-VERSION.packages.lock a build or release wrote")
    return BuildConfig(
        profile=mirror_overrides(load_profile(project_root, profile), debian_mirror,
                                 security_mirror),
        version=version,
        project_root=project_root.resolve(),
        tmp_dir=tmp_dir.resolve(),
        work_dir=work_dir.resolve(),
        local_debs=local_debs.resolve() if local_debs else None,
        source_date_epoch=(source_date_epoch if source_date_epoch is not None
                           else default_source_date_epoch(project_root)),
        packages_lock=packages_lock.resolve() if packages_lock else None,
    )
