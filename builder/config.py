"""Typed, frozen build configuration and profile loading.

A profile is data: a TOML file under rootfs/profiles/ that may `extends` another.
Tables merge key by key; lists are concatenated (parent first, duplicates dropped),
so a child profile adds packages or overlays without repeating its parent's.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import BuildError

PROFILE_DIR = Path("rootfs") / "profiles"
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~-]{0,63}$")
PROFILE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# The published images: WORK_DIR/golem-gpu-live-VERSION.img (USB) and .iso.
IMAGE_PREFIX = "golem-gpu-live"
IMAGE_SUFFIXES = {"usb": "img", "iso": "iso"}


def image_file_name(version: str, media: str) -> str:
    """The published file of `media` ("usb" or "iso") for a version."""
    return f"{IMAGE_PREFIX}-{version}.{IMAGE_SUFFIXES[media]}"


@dataclass(frozen=True)
class DebianSource:
    suite: str
    mirror: str
    security_mirror: str
    components: tuple[str, ...]
    variant: str = "minbase"
    arch: str = "amd64"


@dataclass(frozen=True)
class GolemSource:
    """Where GOLEM's own packages come from (the golem-provider profile)."""

    packages: tuple[str, ...] = ()
    apt_url: str = ""  # the published signed repository (Pages) of the channel
    channel: str = "release"
    keyring: str = ""  # file under rootfs/ with the repository's public key


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    debian: DebianSource
    packages: tuple[str, ...]
    hostname: str
    user: str
    user_groups: tuple[str, ...]
    kernel_cmdline: tuple[str, ...]
    overlays: tuple[str, ...]
    services: tuple[str, ...]
    preseed: tuple[str, ...]  # debconf-set-selections lines
    golem: GolemSource = field(default_factory=GolemSource)
    template: tuple[tuple[str, str], ...] = ()  # extra variables for the overlay templates
    chain: tuple[str, ...] = ()  # the profile files read, child first (for the cache key)


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


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(parent)
    for key, value in child.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = _merge(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            merged[key] = old + [v for v in value if v not in old]
        else:
            merged[key] = value
    return merged


def _read_profile_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise BuildError(f"profile file {path} does not exist",
                         "pick one of the profiles under rootfs/profiles/") from None
    except tomllib.TOMLDecodeError as err:
        raise BuildError(f"profile {path} is not valid TOML: {err}",
                         "fix the syntax at the position shown") from None


def profile_names(project_root: Path) -> list[str]:
    return sorted(p.stem for p in (project_root / PROFILE_DIR).glob("*.toml")
                  if not p.stem.startswith("_"))


def load_profile(project_root: Path, name: str) -> Profile:
    if not PROFILE_NAME_RE.match(name):
        raise BuildError(f"invalid profile name {name!r}",
                         "use lower-case letters, digits and dashes")
    chain: list[str] = []
    data: dict[str, Any] = {}
    current: str | None = name
    while current:
        if current in chain:
            raise BuildError(f"profile {name!r} extends itself through {current!r}",
                             "remove the cycle from the `extends` keys")
        path = project_root / PROFILE_DIR / f"{current}.toml"
        if not path.exists():
            known = ", ".join(profile_names(project_root)) or "none"
            raise BuildError(f"unknown profile {current!r}", f"known profiles: {known}")
        chain.append(current)
        layer = _read_profile_file(path)
        data = _merge(layer, data) if data else layer
        current = layer.get("extends")
    data.pop("extends", None)
    try:
        return _profile_from_dict(name, data, tuple(chain))
    except (KeyError, TypeError, ValueError) as err:
        raise BuildError(f"profile {name!r} is incomplete or has a wrong type: {err}",
                         f"compare with rootfs/profiles/{chain[-1]}.toml") from None


def _strs(values: Any, key: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{key} must be a list of strings")
    return tuple(values)


def _profile_from_dict(name: str, data: dict[str, Any], chain: tuple[str, ...]) -> Profile:
    known = {"description", "debian", "packages", "image", "golem", "template"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    deb = data["debian"]
    image = data["image"]
    golem = data.get("golem", {})
    template = data.get("template", {})
    return Profile(
        name=name,
        description=str(data.get("description", "")),
        debian=DebianSource(
            suite=str(deb["suite"]),
            mirror=str(deb["mirror"]),
            security_mirror=str(deb.get("security_mirror", "")),
            components=_strs(deb["components"], "debian.components"),
            variant=str(deb.get("variant", "minbase")),
            arch=str(deb.get("arch", "amd64")),
        ),
        packages=_strs(data["packages"]["install"], "packages.install"),
        hostname=str(image["hostname"]),
        user=str(image.get("user", "golem")),
        user_groups=_strs(image.get("user_groups", []), "image.user_groups"),
        kernel_cmdline=_strs(image["kernel_cmdline"], "image.kernel_cmdline"),
        overlays=_strs(image["overlays"], "image.overlays"),
        services=_strs(image.get("services", []), "image.services"),
        preseed=_strs(data["packages"].get("preseed", []), "packages.preseed"),
        golem=GolemSource(
            packages=_strs(golem.get("packages", []), "golem.packages"),
            apt_url=str(golem.get("apt_url", "")),
            channel=str(golem.get("channel", "release")),
            keyring=str(golem.get("keyring", "")),
        ),
        template=tuple(sorted((str(k), str(v)) for k, v in template.items())),
        chain=chain,
    )


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
