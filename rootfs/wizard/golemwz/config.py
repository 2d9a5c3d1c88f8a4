"""The wizard's configuration: keys, validation, precedence and atomic saving.

Three layers, highest first: command-line flags, the saved configuration
(golemwz-saved.toml on the `Golem conf storage` partition, seen as ~/.golemwz.toml:
see confstore), the first-boot golemwz.toml on that partition, with the KEY=VALUE
lines of golem.env beside it merged under its [env] table (both written by GOLEM's
imager, golem-gpu-imager). Every value is validated by the same function whatever
its source, so a bad value gets the same message naming the key, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from golemwz.errors import ConfigError
from golemwz.pci import PciAddress
from golemwz.profile_spec import ProfileSpec, no_profile_table

AUTO: Literal["auto"] = "auto"
GpuChoice = tuple[PciAddress, ...] | Literal["auto"]

_ACCOUNT = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PARTUUID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]+)+$")
# The provider's own settings, by the names yagna reads them (structopt `env = ...`
# in golemfactory/yagna: agent/provider/src/startup_config.rs, net/src/config.rs,
# golem_cli/src/setup.rs, core/metrics, ya-client's ApiOpts). Paths that make the
# provider load code or data from elsewhere (EXE_UNIT_PATH, DATA_DIR, ...) are left
# out on purpose: the conf partition is writable by anyone who held the stick.
PROVIDER_ENV_NAMES = frozenset({
    "YA_NET_TYPE", "YA_NET_RELAY_HOST", "YA_NET_BIND_URL",
    "YA_ACCOUNT", "YA_PAYMENT_NETWORK", "YA_PAYMENT_NETWORK_GROUP",
    "YA_RT_CORES", "YA_RT_MEM", "YA_RT_STORAGE",
    "YAGNA_APPKEY", "YAGNA_API_URL", "GSB_URL",
    "YAGNA_METRICS_URL", "YAGNA_METRICS_GROUP", "YAGNA_METRICS_JOB_NAME",
    # The Mk1 central net's address (yagna core/net/src/central/service.rs); written by
    # golem-gpu-imager with the metrics ones (src/disk/configuration.rs to_env_content).
    "CENTRAL_NET_HOST",
    "NODE_NAME", "SUBNET", "RUST_LOG", "RUST_BACKTRACE",
})
MAX_URL_LENGTH = 2048
# fullmatch, never `$`: in a Python regex `$` also matches before a trailing newline.
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
# Prices: a plain decimal in GLM, no sign, exponent, '_' or NaN. GLM has 18 decimals;
# the bound keeps every derived price (per second, 18 places) exact in Decimal's
# 28 digits and rules out a typo's million GLM per hour.
_PRICE = re.compile(r"[0-9]{1,30}(\.[0-9]{1,18})?")
MAX_PRICE = Decimal(1000)
_SSH_KEY = re.compile(
    r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+)"
    r" [A-Za-z0-9+/]+={0,3}( [^\n]*)?$"
)


@dataclass(frozen=True)
class Settings:
    """Every configurable value; None means "not given by this layer"."""

    accepted_terms: bool | None = None
    storage_partition: str | None = None  # the PARTUUID of the chosen partition
    glm_node_name: str | None = None
    glm_account: str | None = None
    glm_per_hour: Decimal | None = None
    init_price: Decimal | None = None
    gpu_pci_slot: GpuChoice | None = None
    vfio_devices: tuple[PciAddress, ...] | None = None
    ssh_keys: tuple[str, ...] | None = None
    non_interactive_install: bool | None = None
    # golem-gpu-imager's configuration server: validated and kept, not polled yet.
    configuration_server: str | None = None
    env: tuple[tuple[str, str], ...] | None = None  # sorted (name, value) pairs
    # The [profile] table: keys a non-GOLEM profile declares (profile_spec.py).
    profile: tuple[tuple[str, object], ...] | None = None  # sorted (key, value) pairs

    def merged_over(self, lower: Settings) -> Settings:
        """This layer's values, falling back to `lower` where this one has none."""
        changes: dict[str, Any] = {f.name: getattr(lower, f.name) for f in fields(self)
                   if getattr(self, f.name) is None}
        return dataclasses.replace(self, **changes)

    def with_value(self, key: str, value: Any) -> Settings:
        return dataclasses.replace(self, **{key: value})


# The keys of GOLEM's wizard; `profile` (a [profile] table) exists only on images whose
# profile declares keys (profile_spec.py), so GOLEM's example and messages leave it out.
KEYS = tuple(f.name for f in fields(Settings) if f.name != "profile")
ALL_KEYS = (*KEYS, "profile")
# What an unattended run (non_interactive_install = true) takes for a key it is not given:
# GOLEM's imager leaves these out of its non-interactive golemwz.toml (golem-gpu-imager
# src/disk/configuration.rs to_toml_content writes no storage_partition, gpu_pci_slot or
# init_price). wizard.py applies them, check.py reports them.
UNATTENDED_DEFAULTS = {
    "storage_partition": "'Golem storage' of the stick booted from",
    "gpu_pci_slot": 'every isolated NVIDIA GPU ("auto")',
    "init_price": "0 GLM",
}


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(key: str, value: object, expected: str, fix: str) -> ConfigError:
    return ConfigError(key, f"{key} = {_show(value)} is not {expected}", fix)


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, value, "true or false", f"write {key} = true or {key} = false")
    return value


def _price(key: str, value: object) -> Decimal:
    fix = (f'write a plain number of GLM from 0 to {MAX_PRICE} with at most 18 decimals, '
           f'e.g. {key} = "0.25"')
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad(key, value, "a number", fix)
    if isinstance(value, int) and not 0 <= value <= MAX_PRICE:
        # Checked before str(): a 5000-digit TOML integer cannot even be printed.
        raise _bad(key, value, f"a non-negative number up to {MAX_PRICE}", fix)
    text = value.strip() if isinstance(value, str) else str(value)
    if isinstance(value, float) and text.endswith(".0"):
        text = text[:-2]
    if not _PRICE.fullmatch(text):
        expected = "a non-negative number" if text.startswith("-") else "a plain decimal number"
        raise _bad(key, value, expected, fix)
    price = Decimal(text)
    if price > MAX_PRICE:
        raise _bad(key, value, f"a non-negative number up to {MAX_PRICE}", fix)
    return price


def _account(key: str, value: object) -> str:
    """0x and 40 hex digits, or "": the node's own wallet (golem-gpu-imager writes
    glm_account = "" for "Leave empty to use the node's default wallet",
    src/ui/configuration/view.rs view_wallet_address_field)."""
    if isinstance(value, str) and not value.strip():
        return ""
    if not isinstance(value, str) or not _ACCOUNT.match(value.strip()):
        raise _bad(key, value, "an account (0x followed by 40 hex digits)",
                   f'copy your wallet address in quotes: {key} = "0x{"0" * 40}", '
                   f'or {key} = "" for the node\'s own wallet')
    return value.strip()


def _https_url(key: str, value: object) -> str | None:
    """An https URL with a host; "" is none (golem-gpu-imager's from_toml_content skips
    an empty configuration_server)."""
    fix = f'write {key} = "https://host/path", or remove the key'
    if not isinstance(value, str):
        raise _bad(key, value, "an https URL", fix)
    text = value.strip()
    if not text:
        return None
    if len(text) > MAX_URL_LENGTH or any(c.isspace() or not c.isprintable() for c in text):
        raise _bad(key, value, "an https URL", fix)
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
        _ = parts.port  # a bad port raises ValueError only when asked for
    except ValueError:
        raise _bad(key, value, "an https URL", fix) from None
    if parts.scheme.lower() != "https" or not host:
        raise _bad(key, value, "an https URL", fix)
    return text


def _node_name(key: str, value: object) -> str:
    if not isinstance(value, str) or not _NODE_NAME.match(value.strip()):
        raise _bad(key, value, "a node name",
                   "use up to 64 letters, digits, '.', '_' or '-', e.g. gpu-node-1")
    return value.strip()


def _partuuid(key: str, value: object) -> str:
    if not isinstance(value, str) or not _PARTUUID.match(value.strip().lower()):
        raise _bad(key, value, "a partition PARTUUID",
                   "see `lsblk -o NAME,PARTUUID,PARTLABEL`, or remove the key to choose again")
    return value.strip().lower()


def _text_list(key: str, value: object, example: str) -> list[str]:
    """A TOML list of strings, or one string with comma-separated items."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value]
    raise _bad(key, value, "a list of strings", f"write {key} = {example}")


def _addresses(key: str, value: object) -> tuple[PciAddress, ...]:
    items = _text_list(key, value, '["0000:01:00.0"]')
    try:
        return tuple(sorted({PciAddress.parse(item) for item in items}))
    except ValueError as error:
        raise ConfigError(key, f"{key}: {error}",
                          "list PCI addresses as shown by `golemwz gpus`") from None


def _gpu_choice(key: str, value: object) -> GpuChoice:
    items = _text_list(key, value, '["0000:01:00.0"] or "auto"')
    if items == [AUTO]:
        return AUTO
    if not items:
        raise _bad(key, value, "a GPU choice", 'list PCI addresses or write "auto"')
    return _addresses(key, items)


def _ssh_keys(key: str, value: object) -> tuple[str, ...]:
    # One key may hold commas in its comment, so a lone string is one key, not a list.
    keys = [value.strip()] if isinstance(value, str) else \
        _text_list(key, value, '["ssh-ed25519 AAAA... you@laptop"]')
    for public_key in keys:
        if not _SSH_KEY.match(public_key):
            raise _bad(key, public_key, "an SSH public key",
                       "paste the one line of a .pub file, e.g. ssh-ed25519 AAAA... you@laptop")
    return tuple(keys)


def _env_setting(name: str, setting: object, example: str) -> None:
    """One provider variable: an allowed name and a one-line string (ConfigError)."""
    shown = _show(name)[1:-1]  # a key's newline or quote is shown escaped, not raw
    if not _ENV_NAME.fullmatch(name):
        raise _bad(f"env.{shown}", name, "a variable name",
                   "use capital letters, digits and '_', e.g. YA_NET_TYPE")
    if name not in PROVIDER_ENV_NAMES:
        raise _bad(f"env.{shown}", name, "a GOLEM provider variable",
                   "the provider environment allows only: "
                   + ", ".join(sorted(PROVIDER_ENV_NAMES)))
    if not isinstance(setting, str) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in setting):
        raise _bad(f"env.{name}", setting, "a one-line string",
                   f"write the value on one line: {example.format(name=name)}")


def _env(key: str, value: object) -> tuple[tuple[str, str], ...]:
    """Sorted (name, value) pairs. An empty value means "not set" and is left out, as
    golem-gpu-imager means it (`YAGNA_METRICS_GROUP = ""`: no group; its
    from_toml_content skips empty values): passed on, it would blank the provider
    unit's own Environment= default (YAGNA_METRICS_GROUP=GolemGpuLive)."""
    if not isinstance(value, Mapping):
        raise _bad(key, value, "a table",
                   'write [env] followed by lines like YA_NET_TYPE = "hybrid"')
    pairs = []
    for name, setting in value.items():
        _env_setting(name, setting, '{name} = "..."')
        if isinstance(setting, str) and setting.strip():
            pairs.append((name, setting))
    return tuple(sorted(pairs))


def parse_env_file(text: str, source: str) -> tuple[tuple[tuple[str, str], ...],
                                                     list[ConfigError]]:
    """golem.env's KEY=VALUE lines as [env] pairs, each line checked like [env].

    The imager writes `NAME=value` unquoted, one a line (configuration.rs
    to_env_content) and reads it back trimmed, skipping blank and `#` lines
    (from_env_content): the same here. Quotes are refused rather than guessed at:
    systemd would strip them, the imager would not."""
    values: dict[str, str] = {}
    errors: list[ConfigError] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, has_equals, setting = line.partition("=")
        name, setting = name.strip(), setting.strip()
        where = f"{source} line {number}"
        try:
            if not has_equals:
                raise _bad("env", line, "a NAME=value line",
                           "write one NAME=value a line, e.g. SUBNET=public")
            _env_setting(name, setting, "{name}=value")
            if any(quote in setting for quote in "\"'"):
                raise _bad(f"env.{name}", setting, "an unquoted value",
                           f"write {name}=value without quotes, as golem-gpu-imager does")
        except ConfigError as error:
            errors.append(ConfigError(error.key, f"{where}: {error.problem}", error.fix))
            continue
        if setting:  # empty: not set, as in [env]
            values[name] = setting
        else:
            values.pop(name, None)
    return tuple(sorted(values.items())), errors


def merge_env(lower: tuple[tuple[str, str], ...] | None,
              upper: tuple[tuple[str, str], ...] | None) -> tuple[tuple[str, str], ...] | None:
    """`upper` wins name by name (golemwz.toml's [env] over golem.env: the imager's
    from_config_files takes the TOML as its single source of truth)."""
    if lower is None and upper is None:
        return None
    return tuple(sorted({**dict(lower or ()), **dict(upper or ())}.items()))


VALIDATORS: dict[str, Callable[[str, object], Any]] = {
    "accepted_terms": _boolean,
    "storage_partition": _partuuid,
    "glm_node_name": _node_name,
    "glm_account": _account,
    "glm_per_hour": _price,
    "init_price": _price,
    "gpu_pci_slot": _gpu_choice,
    "vfio_devices": _addresses,
    "ssh_keys": _ssh_keys,
    "non_interactive_install": _boolean,
    "configuration_server": _https_url,
    "env": _env,
    "profile": no_profile_table,
}
assert set(VALIDATORS) == set(ALL_KEYS), "every Settings field needs a validator"


def parse_layer(data: Mapping[str, object], source: str,
                spec: ProfileSpec | None = None) -> tuple[Settings, list[ConfigError]]:
    """Validate one layer. Good keys are kept, each bad one becomes an error.

    Errors are returned rather than raised so the interactive wizard can show
    each one and ask that value again without losing the rest of the file.
    """
    values: dict[str, object] = {}
    errors: list[ConfigError] = []
    validators = VALIDATORS if spec is None else {**VALIDATORS, "profile": spec.validate_table}
    for key, raw in data.items():
        validator = validators.get(key)
        if validator is None:
            errors.append(ConfigError(key, f"{source}: unknown key '{key}'",
                                      "remove it; known keys: " + ", ".join(
                                          KEYS if spec is None else ALL_KEYS)))
            continue
        try:
            values[key] = validator(key, raw)
        except ConfigError as error:
            errors.append(ConfigError(error.key, f"{source}: {error.problem}", error.fix))
        except Exception as error:  # noqa: BLE001  hostile input must not become a crash
            errors.append(ConfigError(key, f"{source}: {key} cannot be used "
                                      f"({type(error).__name__})", "write a plain value "
                                      "as in golemwz-example.toml"))
    return Settings(**values), errors  # type: ignore[arg-type]


def parse_first_boot(data: Mapping[str, object] | None, env_text: str | None,
                     spec: ProfileSpec | None = None) -> tuple[Settings, list[ConfigError]]:
    """The first-boot layer: golemwz.toml with golem.env's lines merged under its [env]
    (golemwz.toml wins). Errors as parse_layer's: each bad key or line is one."""
    first, errors = parse_layer(data or {}, "first-boot golemwz.toml", spec)
    if env_text is not None:
        env, env_errors = parse_env_file(env_text, "golem.env")
        first = first.with_value("env", merge_env(env, first.env))
        errors += env_errors
    return first, errors


def read_text(path: Path, source: str) -> str | None:
    """The file's UTF-8 text, None when it does not exist; unreadable is a ConfigError."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("", f"{source} ({path}) cannot be read: {error}",
                          "check the file; delete it to start from scratch") from None


def read_toml(path: Path, source: str) -> dict[str, object] | None:
    """The file's table, None when it does not exist; a syntax error is fatal."""
    text = read_text(path, source)
    if text is None:
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("", f"{source} ({path}) is not valid TOML: {error}",
                          'fix that line (strings need quotes: glm_account = "0x...")') from None
    except Exception as error:  # noqa: BLE001
        # Nesting thousands of levels deep (RecursionError), an integer of thousands of
        # digits (ValueError): tomllib raises these, not TOMLDecodeError. Still the
        # file's fault, so a config error naming it, never an internal error.
        raise ConfigError("", f"{source} ({path}) cannot be read as a configuration: "
                          f"{type(error).__name__}: {_show(str(error))}",
                          "keep it to the flat keys of golemwz-example.toml") from None


def to_toml(settings: Settings) -> dict[str, object]:
    table: dict[str, object] = {}
    for key in ALL_KEYS:
        value = getattr(settings, key)
        if value is None:
            continue
        if isinstance(value, Decimal):
            value = str(value)  # a string keeps 0.25 exact, as the reference's example
        elif key in ("env", "profile"):
            value = dict(value)
        elif key in ("gpu_pci_slot", "vfio_devices") and value != AUTO:
            value = [str(address) for address in value]
        elif key == "ssh_keys":
            value = list(value)
        table[key] = value
    return table


def save_atomically(settings: Settings, path: Path,
                    rename: Callable[[str, Path], None] = os.replace) -> None:
    """Write, fsync, rename: a crash leaves either the old file or the new one."""
    # Imported here: reading and checking need the standard library alone, so
    # `python3 -m golemwz check` runs on a laptop without python3-tomli-w.
    import tomli_w

    write_atomically(tomli_w.dumps(to_toml(settings)).encode(), path, rename)


def write_atomically(data: bytes, path: Path,
                     rename: Callable[[str, Path], None] = os.replace) -> None:
    """`data` to a private temporary file, fsync, rename over `path`, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".golemwz-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)  # keys, account, password hash: nobody else's business
        rename(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
