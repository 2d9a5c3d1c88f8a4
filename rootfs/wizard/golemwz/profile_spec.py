"""A profile's wizard as data: its steps and its own configuration keys.

A non-GOLEM profile's overlay installs /usr/share/golemwz/profile.toml (see
rootfs/overlay/gevulot-node/ and rootfs/overlay/iluvatar-worker/). Without that file
the wizard is GOLEM's (golem-provider, gpu-node) and nothing here is used.

    name = "gevulot-node"
    steps = ["storage", "access", "network", "persistent", "gpu_vfio", "env_files", "start"]

    [keys.gevulot_psk_passphrase]          # a key of the [profile] table of golemwz.toml
    kind = "text"                          # one of KINDS
    help = "pre-shared key of the P2P network"

    [[persistent]]                         # bound from the storage partition
    path = "/var/lib/gevulot"
    owner = "gevulot"

    [[env_files]]                          # NAME=value lines from [profile] keys, mode 0600
    path = "/etc/gevulot/node.env"
    values = { GEVULOT_PSK_PASSPHRASE = "gevulot_psk_passphrase" }

    [gpu_vfio]                             # the step's output besides the binding
    dropin = "/etc/containers/systemd/gevulot-node.container.d/50-gpu.conf"
    template = "...{gpus}...{group_lines}..."
    group_line = "AddDevice=/dev/vfio/{group}:rw"

    [[start]]                              # started once configured (a marker, --no-block)
    unit = "gevulot-node.service"
    marker = "/run/golemwz/gevulot-node-configured"
    needs = ["gevulot_psk_passphrase"]

    [zfs]                                  # the zfs step (iluvatar-worker)
    dataset_mountpoint = "/var/lib/containerd/io.containerd.snapshotter.v1.zfs"
    restart = "containerd.service"

The spec comes from the image (trusted); the values of the [profile] table come from
the conf partition (untrusted) and pass the validator of their key's kind, like every
other key (config.py). Only the standard library: `golemwz check` runs on a laptop.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golemwz.errors import ConfigError, WizardError

PROFILE_SPEC_FILE = Path("/usr/share/golemwz/profile.toml")
# The generic steps a profile may list, in the order it lists them (profile_steps.py).
STEPS = ("storage", "access", "network", "persistent", "gpu_vfio", "zfs", "env_files",
         "start")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,47}")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_UNIT = re.compile(r"[A-Za-z0-9@:._-]+\.service")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Plain text that is safe as a systemd EnvironmentFile value and a podman --env-file
# line alike: printable ASCII without quotes, backslash, `$`, `%` or backtick (which
# systemd or a shell would interpret).
_TEXT = re.compile(r"[A-Za-z0-9 !#&()*+,./:;<=>?@\[\]^_{|}~-]{1,256}")
_SIZE = re.compile(r"[1-9][0-9]{0,5}[MGT]")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
# A disk by a stable name under /dev/disk: one path component, never "." or "..".
_DISK = re.compile(r"(by-id|by-partuuid|by-path)/[A-Za-z0-9][A-Za-z0-9:._+-]{0,127}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(key: str, value: object, expected: str, fix: str) -> ConfigError:
    return ConfigError(key, f"{key} = {_show(value)} is not {expected}", fix)


def _boolean(key: str, value: object, _spec: KeySpec) -> object:
    if not isinstance(value, bool):
        raise _bad(key, value, "true or false", f"write {key} = true or {key} = false")
    return value


def _matching(pattern: re.Pattern[str], expected: str,
              fix: str) -> Callable[[str, object, KeySpec], object]:
    """A kind whose values are strings matching `pattern` (surrounding blanks dropped);
    `fix` may name the key as {key}."""
    def validate(key: str, value: object, _spec: KeySpec) -> object:
        if not isinstance(value, str) or not pattern.fullmatch(value.strip()):
            raise _bad(key, value, expected, fix.format(key=key))
        return value.strip()
    return validate


_text = _matching(_TEXT, "plain text", "use 1 to 256 letters, digits, spaces and "
                  "punctuation, without quotes, backslash, '$', '%' or '`'")
_size = _matching(_SIZE, "a size", 'write a number and M, G or T, e.g. {key} = "100G"')
_name = _matching(_NAME, "a name", "use up to 64 letters, digits, '.', '_' or '-', "
                  "starting with a letter")
_disk = _matching(_DISK, "a disk name", 'write {key} = "by-id/NAME" as listed by '
                  "`ls /dev/disk/by-id` (or by-partuuid/..., by-path/...)")


def _choice(key: str, value: object, spec: KeySpec) -> object:
    if not isinstance(value, str) or value.strip() not in spec.choices:
        raise _bad(key, value, "one of " + ", ".join(spec.choices),
                   f'write {key} = "{spec.choices[0]}"' if spec.choices else "remove it")
    return value.strip()


# What a [profile] key may be: a profile names one of these, never code of its own.
KINDS: dict[str, Callable[[str, object, KeySpec], object]] = {
    "boolean": _boolean,
    "text": _text,
    "size": _size,
    "name": _name,
    "choice": _choice,
    "disk": _disk,
}


@dataclass(frozen=True)
class KeySpec:
    kind: str
    help: str
    choices: tuple[str, ...] = ()
    default: object = None

    def validate(self, key: str, value: object) -> object:
        return KINDS[self.kind](key, value, self)


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    steps: tuple[str, ...]
    keys: Mapping[str, KeySpec] = field(default_factory=dict)
    persistent: tuple[tuple[str, str], ...] = ()  # (path, owner)
    env_files: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    gpu_vfio: Mapping[str, str] = field(default_factory=dict)
    start: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (unit, marker, needs)
    zfs: Mapping[str, str] = field(default_factory=dict)

    def value(self, values: Mapping[str, object], key: str) -> object:
        """The [profile] value of `key`, else the spec's default."""
        return values[key] if key in values else self.keys[key].default

    def validate_table(self, key: str, value: object) -> tuple[tuple[str, object], ...]:
        """The [profile] table: sorted (key, value) pairs, each value checked by its kind.
        The first bad entry is the error (parse_layer reports one per top-level key)."""
        if not isinstance(value, Mapping):
            raise _bad(key, value, "a table", "write [profile] followed by its keys")
        pairs = []
        for name, setting in value.items():
            spec = self.keys.get(name)
            if spec is None:
                shown = _show(name)[1:-1]
                raise ConfigError(f"{key}.{shown}", f"{key}.{shown}: unknown key of the "
                                  f"{self.name} profile", "remove it; known keys: "
                                  + (", ".join(sorted(self.keys)) or "none"))
            pairs.append((name, spec.validate(f"{key}.{name}", setting)))
        return tuple(sorted(pairs))


def no_profile_table(key: str, value: object) -> object:
    """The [profile] table on an image without a profile spec (GOLEM's wizard)."""
    raise ConfigError(key, f"{key}: this image's wizard has no [profile] keys",
                      "remove the [profile] table (it belongs to another profile's image)")


def _spec_error(path: Path, problem: str) -> WizardError:
    return WizardError(f"{path}: {problem}", "the image's profile spec is broken: rebuild it")


def _strings(path: Path, where: str, value: object, pattern: re.Pattern[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.fullmatch(v)
                                              for v in value):
        raise _spec_error(path, f"{where} must be a list of names like {pattern.pattern}")
    return tuple(value)


def _absolute(path: Path, where: str, value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or ".." in value.split("/"):
        raise _spec_error(path, f"{where} must be an absolute path without '..'")
    return value


def _table(path: Path, data: Mapping[str, Any], name: str) -> dict[str, str]:
    table = data.get(name, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise _spec_error(path, f"[{name}] must be a table of strings")
    return dict(table)


def _keys(path: Path, data: Mapping[str, Any]) -> dict[str, KeySpec]:
    keys: dict[str, KeySpec] = {}
    for name, entry in data.get("keys", {}).items():
        if not _KEY.fullmatch(name) or not isinstance(entry, dict):
            raise _spec_error(path, f"keys.{name} must be a lower-case key with a table")
        kind = entry.get("kind")
        if kind not in KINDS or not isinstance(entry.get("help"), str):
            raise _spec_error(path, f"keys.{name} needs kind (one of {', '.join(KINDS)}) "
                              "and help")
        spec = KeySpec(kind, entry["help"], tuple(entry.get("choices", ())),
                       entry.get("default"))
        if spec.default is not None:
            try:
                spec.validate(name, spec.default)
            except ConfigError as error:
                raise _spec_error(path, f"keys.{name}: default: {error.problem}") from None
        keys[name] = spec
    return keys


def parse_spec(data: Mapping[str, Any], path: Path) -> ProfileSpec:
    """The spec, or WizardError naming what in it is wrong."""
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _spec_error(path, "name must be the profile's name")
    steps = _strings(path, "steps", data.get("steps"), re.compile("|".join(STEPS)))
    keys = _keys(path, data)
    persistent = tuple((_absolute(path, "persistent.path", entry.get("path")),
                        _strings(path, "persistent.owner", [entry.get("owner")], _USER)[0])
                       for entry in data.get("persistent", []))
    env_files = []
    for entry in data.get("env_files", []):
        values = entry.get("values", {})
        if not isinstance(values, dict) or not all(
                _ENV_NAME.fullmatch(n) and k in keys for n, k in values.items()):
            raise _spec_error(path, "env_files.values must map NAME to keys of [keys]")
        env_files.append((_absolute(path, "env_files.path", entry.get("path")),
                          tuple(sorted(values.items()))))
    start = []
    for entry in data.get("start", []):
        unit = _strings(path, "start.unit", [entry.get("unit")], _UNIT)[0]
        needs = _strings(path, "start.needs", entry.get("needs", []), _KEY)
        if not set(needs) <= set(keys):
            raise _spec_error(path, "start.needs must name keys of [keys]")
        start.append((unit, _absolute(path, "start.marker", entry.get("marker")), needs))
    gpu_vfio = _table(path, data, "gpu_vfio")
    zfs = _table(path, data, "zfs")
    for where, table, required in (("gpu_vfio", gpu_vfio, ("dropin",)),
                                   ("zfs", zfs, ("dataset_mountpoint",))):
        if where in steps:
            for item in required:
                _absolute(path, f"{where}.{item}", table.get(item))
    return ProfileSpec(name, steps, keys, persistent, tuple(env_files), gpu_vfio,
                       tuple(start), zfs)


def load_spec(path: Path) -> ProfileSpec | None:
    """The image's profile spec; None when the image has none (GOLEM's wizard)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise _spec_error(path, f"cannot be read: {error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _spec_error(path, f"is not valid TOML: {error}") from None
    try:
        return parse_spec(data, path)
    except (AttributeError, TypeError) as error:  # a list where a table belongs, ...
        raise _spec_error(path, f"has the wrong shape: {error}") from None
