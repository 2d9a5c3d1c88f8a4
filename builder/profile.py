"""Profiles: typed, frozen, and read through one table of settings.

A profile is data: a TOML file under rootfs/profiles/ that may `extends` another.
Tables merge key by key; lists are concatenated (parent first, duplicates dropped),
so a child profile adds packages or overlays without repeating its parent's.

Every key a profile may set is one row of SETTINGS (key, kind, default, validator,
help, where it lands in Profile), as mkosi's ConfigSetting table does. Reading a
profile checks every row and every unknown key and reports all problems at once,
each with the file that set the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import BuildError

PROFILE_DIR = Path("rootfs") / "profiles"
PROFILE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# The repository channels (apt_repo/channels.py has the same list; a test ties them).
GOLEM_CHANNELS = ("release", "testing", "unstable")
# Out-of-tree kernel modules a profile may ask for (stages/modules.py MODULES has one row
# each; a test ties the two).
KERNEL_MODULES = ("nvidia", "nvidia-open", "zfs")
# What starts the ISO under legacy BIOS (UEFI and the USB image always boot GRUB).
BIOS_LOADERS = ("grub", "isolinux")


@dataclass(frozen=True)
class DebianSource:
    suite: str
    mirror: str
    security_mirror: str
    components: tuple[str, ...]
    variant: str = "minbase"
    arch: str = "amd64"
    path_exclude: tuple[str, ...] = ()  # dpkg --path-exclude globs, kept in the image


@dataclass(frozen=True)
class GolemSource:
    """Where GOLEM's own packages come from (the golem-provider profile)."""

    packages: tuple[str, ...] = ()
    apt_url: str = ""  # the published signed repository (Pages) of the channel
    channel: str = "release"
    keyring: str = ""  # file under the project root with the repository's public key


@dataclass(frozen=True)
class ExtraApt:
    """One more signed APT repository (e.g. NVIDIA's container toolkit, not in Debian)."""

    url: str = ""  # empty: not configured, its packages are left out
    suite: str = ""  # a suite name, or a path ending in "/" for a flat repository
    components: tuple[str, ...] = ()
    keyring: str = ""  # file under the project root with the repository's public key
    packages: tuple[str, ...] = ()


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
    kernel_modules: tuple[str, ...] = ()  # compiled once by the modules-NAME stages
    extra_apt: ExtraApt = field(default_factory=ExtraApt)
    bios_loader: str = "grub"  # the ISO's legacy-BIOS loader (BIOS_LOADERS)
    chain: tuple[str, ...] = ()  # the profile files read, child first (for the cache key)


# --- validators: a problem in words, or None ------------------------------------------

Validator = Callable[[Any], "str | None"]


def _matches(pattern: str, what: str) -> Validator:
    compiled = re.compile(pattern)

    def check(value: Any) -> str | None:
        items = value if isinstance(value, tuple) else (value,)
        bad = [item for item in items if not compiled.fullmatch(item)]
        return f"{bad[0]!r} is not {what}" if bad else None

    return check


def _one_of(choices: tuple[str, ...]) -> Validator:
    def check(value: Any) -> str | None:
        return None if value in choices else f"{value!r} is not one of {', '.join(choices)}"

    return check


def _non_empty(inner: Validator | None = None) -> Validator:
    def check(value: Any) -> str | None:
        if not value:
            return "must not be empty"
        return inner(value) if inner else None

    return check


def _url(schemes: tuple[str, ...], optional: bool = False) -> Validator:
    def check(value: Any) -> str | None:
        if optional and value == "":
            return None
        if not re.fullmatch(r"[a-z]+://[^\s/]+(/\S*)?", value) or \
                value.split("://")[0] not in schemes:
            return f"{value!r} is not an {' or '.join(schemes)} URL"
        return None

    return check


def _relative_path(value: Any) -> str | None:
    if value and (value.startswith("/") or ".." in Path(value).parts):
        return f"{value!r} must be a path inside the project (no leading /, no ..)"
    return None


def _modules(value: Any) -> str | None:
    bad = [item for item in value if item not in KERNEL_MODULES]
    if bad:
        return f"{bad[0]!r} is not one of {', '.join(KERNEL_MODULES)}"
    if {"nvidia", "nvidia-open"} <= set(value):
        return "'nvidia' and 'nvidia-open' exclude each other (both are the nvidia module)"
    return None


def _preseed_lines(value: Any) -> str | None:
    bad = [line for line in value if len(line.split(None, 3)) < 4 or "\n" in line]
    return (f"{bad[0]!r} is not a debconf line (owner question type value)"
            if bad else None)


PACKAGE = r"[a-z0-9][a-z0-9+.-]+"  # Debian policy 5.6.1
NAME = r"[a-z_][a-z0-9_-]{0,31}"  # user and group names (useradd's default rule)


@dataclass(frozen=True)
class Setting:
    key: str  # dotted TOML key
    kind: str  # "str", "list" (of strings) or "table" (of strings)
    attr: str  # where it lands: a Profile attribute, dotted into debian/golem
    help: str
    default: Any = None  # None: required
    validate: Validator | None = None

    @property
    def required(self) -> bool:
        return self.default is None


SETTINGS: tuple[Setting, ...] = (
    Setting("description", "str", "description", "one line shown by `golem-live profiles`",
            ""),
    Setting("debian.suite", "str", "debian.suite", "Debian codename to build from",
            validate=_matches(r"[a-z]+", "a Debian codename")),
    Setting("debian.mirror", "str", "debian.mirror", "Debian archive URL",
            validate=_url(("http", "https"))),
    Setting("debian.security_mirror", "str", "debian.security_mirror",
            "security archive URL (empty: none)", "", _url(("http", "https"), optional=True)),
    Setting("debian.components", "list", "debian.components", "archive components",
            validate=_non_empty(_matches(r"[a-z][a-z-]*", "a component name"))),
    Setting("debian.variant", "str", "debian.variant", "mmdebstrap variant", "minbase",
            _one_of(("minbase", "buildd"))),
    Setting("debian.arch", "str", "debian.arch", "architecture (the boot media are x86-64)",
            "amd64", _one_of(("amd64",))),
    Setting("debian.path_exclude", "list", "debian.path_exclude",
            "files dpkg leaves out of the image and its later installs (dpkg path-exclude "
            "globs)", (), _matches(r"/[^\s]*", "an absolute glob (dpkg path-exclude)")),
    Setting("packages.install", "list", "packages", "packages installed into the image",
            validate=_non_empty(_matches(PACKAGE, "a Debian package name"))),
    Setting("packages.preseed", "list", "preseed",
            "debconf answers set before installing", (), _preseed_lines),
    Setting("image.hostname", "str", "hostname", "the live system's host name",
            validate=_matches(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "a host name")),
    Setting("image.user", "str", "user", "the account the wizard configures", "golem",
            _matches(NAME, "a user name")),
    Setting("image.user_groups", "list", "user_groups", "its supplementary groups", (),
            _matches(NAME, "a group name")),
    Setting("image.kernel_cmdline", "list", "kernel_cmdline",
            "kernel arguments after boot=live", validate=_matches(r"\S+", "one argument")),
    Setting("image.overlays", "list", "overlays", "directories under rootfs/overlay/, in order",
            validate=_non_empty(_matches(r"[A-Za-z0-9][A-Za-z0-9_-]*", "an overlay name"))),
    Setting("image.services", "list", "services", "units enabled from their [Install]", (),
            _matches(r"[A-Za-z0-9@:._-]+\.(service|socket|timer|target|path|mount)",
                     "a unit name")),
    Setting("image.bios_loader", "str", "bios_loader",
            "the ISO's legacy-BIOS loader: grub, or isolinux (syslinux with an isohybrid "
            "MBR); UEFI and the USB image always boot GRUB", "grub", _one_of(BIOS_LOADERS)),
    Setting("golem.packages", "list", "golem.packages",
            "installed from the signed repository (the repository stage runs if any)", (),
            _matches(PACKAGE, "a Debian package name")),
    Setting("golem.apt_url", "str", "golem.apt_url",
            "the channel's published repository the image updates from", "",
            _url(("https", "http"), optional=True)),
    Setting("golem.channel", "str", "golem.channel", "repository channel", "release",
            _one_of(GOLEM_CHANNELS)),
    Setting("golem.keyring", "str", "golem.keyring",
            "the maintainer's public key, relative to the project root", "", _relative_path),
    Setting("kernel.modules", "list", "kernel_modules",
            "out-of-tree modules compiled once for the image's kernel (" +
            ", ".join(KERNEL_MODULES) + "); the image gets no compiler", (), _modules),
    Setting("extra_apt.url", "str", "extra_apt.url",
            "one more signed APT repository (empty: its packages are left out)", "",
            _url(("https", "http"), optional=True)),
    Setting("extra_apt.suite", "str", "extra_apt.suite",
            "its suite, or a path ending in / for a flat repository", "",
            _matches(r"([A-Za-z0-9./][A-Za-z0-9._/-]*)?", "a suite name or path")),
    Setting("extra_apt.components", "list", "extra_apt.components",
            "its components (empty for a flat repository)", (),
            _matches(r"[a-z][a-z0-9-]*", "a component name")),
    Setting("extra_apt.keyring", "str", "extra_apt.keyring",
            "its public key (Signed-By), relative to the project root", "", _relative_path),
    Setting("extra_apt.packages", "list", "extra_apt.packages",
            "installed from it when extra_apt.url is set", (),
            _matches(PACKAGE, "a Debian package name")),
    Setting("template", "table", "template", "extra variables for the overlay templates", {},
            _matches(r"[A-Za-z_][A-Za-z0-9_]*", "a template variable name")),
)
TABLES = {"debian", "packages", "image", "golem", "kernel", "extra_apt"}


def reference_table() -> str:
    """The profile reference in the README: every key, its default and meaning."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        kind = {"str": "string", "list": "list of strings", "table": "table of strings"}[s.kind]
        default = "(required)" if s.required else f"`{_toml_literal(s.default)}`"
        lines.append(f"| `{s.key}` | {kind} | {default} | {s.help} |")
    return "\n".join(lines) + "\n"


def _toml_literal(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return "{}" if isinstance(value, dict) else "[]"


# --- reading -----------------------------------------------------------------------


def _lookup(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _typed(setting: Setting, value: Any) -> tuple[Any, str | None]:
    if setting.kind == "str":
        return (value, None) if isinstance(value, str) else (None, "must be a string")
    if setting.kind == "list":
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value), None
        return None, "must be a list of strings"
    if isinstance(value, dict) and all(isinstance(v, str | int | float | bool)
                                       for v in value.values()):
        return tuple(sorted((str(k), str(v)) for k, v in value.items())), None
    return None, "must be a table of plain values"


def _unknown_keys(layer: dict[str, Any]) -> list[str]:
    known = {s.key for s in SETTINGS}
    found = []
    for key, value in layer.items():
        if key in ("extends", "template"):
            continue
        if key in TABLES and isinstance(value, dict):
            found += [f"{key}.{sub}" for sub in value if f"{key}.{sub}" not in known]
        elif key not in known:
            found.append(key)
    return found


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
    except tomllib.TOMLDecodeError as err:
        raise BuildError(f"profile {path} is not valid TOML: {err}",
                         "fix the syntax at the position shown") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BuildError(f"profile {path} cannot be read: {err}",
                         "restore the file from git") from None


def profile_names(project_root: Path) -> list[str]:
    return sorted(p.stem for p in (project_root / PROFILE_DIR).glob("*.toml")
                  if not p.stem.startswith("_"))


def load_profile(project_root: Path, name: str) -> Profile:
    if not PROFILE_NAME_RE.match(name):
        raise BuildError(f"invalid profile name {name!r}",
                         "use lower-case letters, digits and dashes")
    chain: list[str] = []
    layers: list[tuple[str, dict[str, Any]]] = []  # (file shown in errors, data), child first
    current: str | None = name
    while current:
        if current in chain:
            raise BuildError(f"profile {name!r} extends itself through {current!r}",
                             "remove the cycle from the `extends` keys")
        if not PROFILE_NAME_RE.match(current):
            raise BuildError(f"profile {chain[-1]!r} extends an invalid name {current!r}",
                             "use lower-case letters, digits and dashes")
        path = project_root / PROFILE_DIR / f"{current}.toml"
        if not path.exists():
            known = ", ".join(profile_names(project_root)) or "none"
            raise BuildError(f"unknown profile {current!r}", f"known profiles: {known}")
        chain.append(current)
        layer = _read_profile_file(path)
        layers.append((str(PROFILE_DIR / f"{current}.toml"), layer))
        parent = layer.get("extends")
        current = parent if isinstance(parent, str) else None
    return _profile_from_layers(name, layers, tuple(chain))


def _profile_from_layers(name: str, layers: list[tuple[str, dict[str, Any]]],
                         chain: tuple[str, ...]) -> Profile:
    errors: list[str] = []
    data: dict[str, Any] = {}
    for file, layer in reversed(layers):  # parent first
        extends = layer.get("extends")
        if extends is not None and not isinstance(extends, str):
            errors.append(f"{file}: extends: must be a profile name")
        for table in TABLES & set(layer):
            if not isinstance(layer[table], dict):
                errors.append(f"{file}: {table}: must be a table")
        errors += [f"{file}: {key}: unknown key" for key in _unknown_keys(layer)]
        data = _merge(data, {k: v for k, v in layer.items() if k != "extends"})

    def origin(key: str) -> str:
        return next((f for f, layer in layers if _lookup(layer, key)[0]), layers[-1][0])

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        present, raw = _lookup(data, setting.key)
        if not present:
            if setting.required:
                errors.append(f"{origin(setting.key)}: {setting.key}: missing ({setting.help})")
                continue
            raw = setting.default
        value, problem = _typed(setting, raw)
        if problem is None and setting.validate is not None:
            checked = tuple(k for k, _ in value) if setting.kind == "table" else value
            problem = setting.validate(checked)
        if problem is not None:
            errors.append(f"{origin(setting.key)}: {setting.key}: {problem}")
        values[setting.attr] = value
    errors += _extra_apt_problems(values, origin)
    if errors:
        count = f"{len(errors)} problems" if len(errors) > 1 else "a problem"
        raise BuildError(f"profile {name!r} has {count}: " + "; ".join(errors),
                         "fix these keys (README: profile reference)")
    return _build(name, values, chain)


def _extra_apt_problems(values: dict[str, Any], origin: Callable[[str], str]) -> list[str]:
    """A configured extra repository needs its suite and key (what Signed-By names)."""
    if not values.get("extra_apt.url"):
        return []
    problems = []
    where = origin("extra_apt.url")  # the file that configured the repository
    for key in ("extra_apt.suite", "extra_apt.keyring"):
        if not values.get(key):
            problems.append(f"{where}: {key}: must be set when extra_apt.url is set")
    flat = str(values.get("extra_apt.suite", "")).endswith("/")
    if flat and values.get("extra_apt.components"):
        problems.append(f"{where}: extra_apt.components: must be "
                        "empty for a flat repository (suite ending in /)")
    if not flat and values.get("extra_apt.suite") and not values.get("extra_apt.components"):
        problems.append(f"{where}: extra_apt.components: must not "
                        "be empty (or make extra_apt.suite a flat path ending in /)")
    return problems


def _build(name: str, values: dict[str, Any], chain: tuple[str, ...]) -> Profile:
    def section(prefix: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(prefix + ".")}

    flat = {k: v for k, v in values.items() if "." not in k}
    return Profile(name=name, debian=DebianSource(**section("debian")),
                   golem=GolemSource(**section("golem")),
                   extra_apt=ExtraApt(**section("extra_apt")), chain=chain, **flat)
