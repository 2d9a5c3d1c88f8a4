"""GOLEM provider setup: runtime JSON, golemsp/ya-provider commands, environment.

Skipped as a whole on images without GOLEM's packages (the gpu-node profile).
Commands run as the `golem` user through runuser, with HOME set so that their
data lands in ~golem/.local, i.e. on the persistent storage. The [env] table of
the configuration (from a partition anyone may have written) reaches only the
provider service, through its EnvironmentFile: never these commands, which
start as root (a PATH or LD_PRELOAD there would run code from the stick as root).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from golemwz.config import write_atomically
from golemwz.errors import WizardError
from golemwz.layout import GOLEM_USER, SystemLayout
from golemwz.pci import PciAddress
from golemwz.runner import Runner

RUNTIME_NAME = "vm-nvidia"
RUNTIME_FILE = "ya-runtime-vm-nvidia.json"
# ya-provider reads the runtimes of ONE directory: ~/.local/lib/yagna/plugins/ya-*.json
# when that directory exists, else /usr/lib/yagna/plugins/ya-*.json (yagna
# agent/provider/src/startup_config.rs default_plugins). Once the wizard has made the
# user directory, every packaged runtime (vm, wasi, vm-nvidia) must be copied there.
RUNTIME_GLOB = "ya-*.json"
PRESET_NAME = "vm-nvidia"
PCI_DEVICE_ARG = "--runtime-arg=--pci-device="
PATH_KEYS = ("supervisor-path", "runtime-path")
SECONDS_PER_HOUR = Decimal(3600)
# What `golemsp manifest-bundle add DIR` reads with fs::read_dir, a missing one being an
# error (yagna golem_cli/src/manifest.rs: add_whitelisted_domains, set_audited_payload_rules,
# set_partner_rules).
MANIFEST_BUNDLE_DIRS = ("whitelist", "certs", "golem-certs")


@dataclass(frozen=True)
class ProviderSettings:
    glm_account: str  # "" means the node's own wallet (golem-gpu-imager's empty field)
    glm_per_hour: Decimal
    init_price: Decimal
    node_name: str | None


def _reinstall_fix(source: Path) -> str:
    return f"reinstall the package that installed it (dpkg -S {source})"


def read_runtime_json(source: Path) -> list[dict[str, object]]:
    """A runtime descriptor: a JSON list of objects, with paths made absolute.

    Relative supervisor/runtime paths are relative to the JSON file's own directory
    (how ya-provider resolves them, startup_config.rs), so the copy in the user
    directory must carry absolute ones."""
    try:
        runtimes = json.loads(source.read_text())
    except (OSError, ValueError) as error:
        raise WizardError(f"cannot read the runtime description {source}: {error}",
                          _reinstall_fix(source)) from None
    if not isinstance(runtimes, list) or not all(isinstance(r, dict) for r in runtimes):
        raise WizardError(f"{source} is not a list of runtime descriptions",
                          _reinstall_fix(source))
    for runtime in runtimes:
        for key in PATH_KEYS:
            value = runtime.get(key)
            if isinstance(value, str) and not Path(value).is_absolute():
                runtime[key] = str(source.parent / value)
    return runtimes


def configure_runtime_json(source: Path, gpus: Sequence[PciAddress]) -> list[dict[str, object]]:
    """The vm-nvidia descriptors with absolute paths and one --pci-device per GPU.

    Earlier --pci-device arguments are replaced, so a GPU no longer selected disappears.
    """
    runtimes = read_runtime_json(source)
    found = False
    for runtime in runtimes:
        if runtime.get("name") != RUNTIME_NAME:
            continue
        found = True
        extra = runtime.get("extra-args", [])
        kept = [a for a in extra if not str(a).startswith(PCI_DEVICE_ARG)] \
            if isinstance(extra, list) else []
        runtime["extra-args"] = kept + [f"{PCI_DEVICE_ARG}{gpu}" for gpu in sorted(set(gpus))]
    if not found:
        raise WizardError(f"{source} describes no '{RUNTIME_NAME}' runtime",
                          "reinstall ya-runtime-vm-nvidia")
    return runtimes


def install_runtimes(layout: SystemLayout, gpus: Sequence[PciAddress]) -> list[Path]:
    """Copy every packaged ya-*.json into the user plugins directory (absolute paths),
    the GPUs added to the vm-nvidia one. Returns the copies, vm-nvidia's first."""
    nvidia_source = layout.yagna_plugins_dir / RUNTIME_FILE
    if not nvidia_source.is_file():
        raise WizardError(f"{nvidia_source} does not exist",
                          "install ya-runtime-vm-nvidia (apt install ya-runtime-vm-nvidia)")
    sources = [nvidia_source] + sorted(
        p for p in layout.yagna_plugins_dir.glob(RUNTIME_GLOB) if p.name != RUNTIME_FILE)
    layout.user_plugins_dir.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in sources:
        runtimes = (configure_runtime_json(source, gpus) if source == nvidia_source
                    else read_runtime_json(source))
        target = layout.user_plugins_dir / source.name
        # Renamed into place, never written through: ~/.local is the stick's storage,
        # where a planted symlink must not make root overwrite the file it points to.
        write_atomically((json.dumps(runtimes, indent=2) + "\n").encode(), target)
        os.chmod(target, 0o644)  # read by ya-provider, which runs as golem
        copies.append(target)
    return copies


def check_manifest_bundle(bundle: Path) -> None:
    """The bundle golemsp adds must be whole: without it the node has no GOLEM
    certificate and no outbound whitelist, so this is an error, never a skip."""
    missing = [name for name in MANIFEST_BUNDLE_DIRS if not (bundle / name).is_dir()]
    if not bundle.is_dir() or missing:
        what = (f"{bundle} does not exist" if not bundle.is_dir()
                else f"the manifest bundle {bundle} has no {', '.join(missing)} directory")
        raise WizardError(f"{what} (golemsp manifest-bundle add needs "
                          f"{', '.join(d + '/' for d in MANIFEST_BUNDLE_DIRS)})",
                          "reinstall ya-installer-resources "
                          "(apt install --reinstall ya-installer-resources)")


# Inside double quotes systemd's EnvironmentFile parser (and a shell) unescapes
# exactly these after a backslash; anything else keeps its backslash.
_ENV_FILE_ESCAPED = ("\\", '"', "$", "`")


def env_file_text(env: Sequence[tuple[str, str]]) -> str:
    """NAME="value" lines; a quote or backslash in a value cannot end it early."""
    lines = ["# Written by golemwz from the [env] table of its configuration."]
    for name, value in env:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name + value) or "=" in name:
            # config._env rejects these already; a line break here would add a variable.
            raise WizardError(f"[env] {name!r} holds a control character",
                              "write each value on one line")
        for special in _ENV_FILE_ESCAPED:
            value = value.replace(special, "\\" + special)
        lines.append(f'{name}="{value}"')
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, env: Sequence[tuple[str, str]]) -> bool:
    """The provider's environment file, root-only (0600: it may hold YAGNA_APPKEY) and
    written atomically; removed when [env] is empty. True if a file was written."""
    if not env:
        path.unlink(missing_ok=True)  # an earlier run's settings must not linger
        return False
    write_atomically(env_file_text(env).encode(), path)
    return True


def duration_price(glm_per_hour: Decimal) -> str:
    """Linear pricing charges Duration per second."""
    per_second = (glm_per_hour / SECONDS_PER_HOUR).quantize(Decimal("1e-18"))
    return format(per_second.normalize(), "f")


def _as_golem(argv: Sequence[str]) -> list[str]:
    return ["runuser", "-u", GOLEM_USER, "--", *argv]


def preset_names(preset_list_json: str) -> set[str]:
    try:
        presets = json.loads(preset_list_json or "[]")
    except ValueError:
        return set()
    return {p.get("name", "") for p in presets if isinstance(p, dict)}


def setup_provider(settings: ProviderSettings, layout: SystemLayout, runner: Runner) -> None:
    """golemsp setup, pre-install, manifest bundle, node name and the priced preset."""
    # Only these two: see the module docstring for why [env] is not passed on.
    env = {"HOME": str(layout.golem_home), "USER": GOLEM_USER}

    def as_golem(*argv: str) -> str:
        return runner.run(_as_golem(argv), env=env).stdout

    check_manifest_bundle(layout.installer_resources_dir)  # before changing anything
    # The tag GOLEM's installer takes for accepted terms of use (join.golem.network
    # as-provider: check_terms_of_use tests $YA_INSTALLER_DATA/terms/testnet-01.tag,
    # YA_INSTALLER_DATA defaulting to ~/.local/share/ya-installer; upstream golem-gpu-live
    # rootfs/golemwz.py writes it too). The wizard stops before here unless they were
    # accepted. Made as golem: ~/.local is the storage partition, where anyone who held
    # the stick may have planted symlinks, and a root-owned ~/.local/share would keep
    # yagna (running as golem) from making its data directory.
    as_golem("mkdir", "-p", str(layout.terms_tag.parent))
    as_golem("touch", str(layout.terms_tag))
    as_golem("golemsp", "setup", "--no-interactive")
    as_golem("ya-provider", "pre-install")
    as_golem("golemsp", "manifest-bundle", "add", str(layout.installer_resources_dir))
    # An empty account is the node's own wallet: no --account (golemsp's NodeId parser
    # refuses ""), as golem-gpu-imager's "Leave empty to use the node's default wallet".
    identity = ["--account", settings.glm_account] if settings.glm_account else []
    if settings.node_name:
        identity = ["--node-name", settings.node_name, *identity]
    if identity:
        as_golem("golemsp", "settings", "set", *identity)
    pricing = [
        "--exe-unit", RUNTIME_NAME, "--pricing", "linear",
        "--price", f"Duration={duration_price(settings.glm_per_hour)}",
        "--price", "CPU=0",
        "--price", f"Init price={settings.init_price}",
    ]
    if PRESET_NAME in preset_names(as_golem("ya-provider", "preset", "list", "--json")):
        as_golem("ya-provider", "preset", "update", "--no-interactive", "--name", PRESET_NAME,
                 *pricing)
    else:
        as_golem("ya-provider", "preset", "create", "--no-interactive",
                 "--preset-name", PRESET_NAME, *pricing)
    as_golem("ya-provider", "preset", "activate", PRESET_NAME)
