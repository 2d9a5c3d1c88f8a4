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
PRESET_NAME = "vm-nvidia"
PCI_DEVICE_ARG = "--runtime-arg=--pci-device="
PATH_KEYS = ("supervisor-path", "runtime-path")
SECONDS_PER_HOUR = Decimal(3600)


@dataclass(frozen=True)
class ProviderSettings:
    glm_account: str
    glm_per_hour: Decimal
    init_price: Decimal
    node_name: str | None


def configure_runtime_json(source: Path, gpus: Sequence[PciAddress]) -> list[dict[str, object]]:
    """The runtime descriptors with absolute paths and one --pci-device per GPU.

    The copy lives in ~/.local/lib/yagna/plugins, so paths relative to the
    packaged file must become absolute. Earlier --pci-device arguments are
    replaced, so a GPU no longer selected disappears.
    """
    try:
        runtimes = json.loads(source.read_text())
    except (OSError, ValueError) as error:
        raise WizardError(f"cannot read the runtime description {source}: {error}",
                          "reinstall ya-runtime-vm-nvidia") from None
    found = False
    for runtime in runtimes:
        for key in PATH_KEYS:
            if key in runtime and not Path(runtime[key]).is_absolute():
                runtime[key] = str(source.parent / runtime[key])
        if runtime.get("name") != RUNTIME_NAME:
            continue
        found = True
        kept = [a for a in runtime.get("extra-args", []) if not a.startswith(PCI_DEVICE_ARG)]
        runtime["extra-args"] = kept + [f"{PCI_DEVICE_ARG}{gpu}" for gpu in sorted(set(gpus))]
    if not found:
        raise WizardError(f"{source} describes no '{RUNTIME_NAME}' runtime",
                          "reinstall ya-runtime-vm-nvidia")
    return runtimes


def install_runtime_json(layout: SystemLayout, gpus: Sequence[PciAddress]) -> Path:
    runtimes = configure_runtime_json(layout.yagna_plugins_dir / RUNTIME_FILE, gpus)
    target = layout.user_plugins_dir / RUNTIME_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(runtimes, indent=2) + "\n")
    return target


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

    as_golem("golemsp", "setup", "--no-interactive")
    as_golem("ya-provider", "pre-install")
    if layout.installer_resources_dir.is_dir():
        as_golem("golemsp", "manifest-bundle", "add", str(layout.installer_resources_dir))
    identity = ["--account", settings.glm_account]
    if settings.node_name:
        identity = ["--node-name", settings.node_name, *identity]
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
