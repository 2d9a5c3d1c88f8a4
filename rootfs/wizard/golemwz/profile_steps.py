"""The generic steps a non-GOLEM profile's wizard is made of (profile_spec.STEPS).

The spec (profile_spec.py) lists them; each is a function of the running Wizard
and the spec, reusing the wizard's own steps where they exist (storage, password
and SSH keys, network, GPU selection with the IOMMU isolation check, the vfio-pci
binding) so every profile shares one contract: the conf partition, the persistent
storage, NO AUTOSTART and SSH keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from golemwz import zfs_pool
from golemwz.config import AUTO, write_atomically
from golemwz.errors import WizardError
from golemwz.pci import PciAddress, read_device, survey_gpus
from golemwz.profile_spec import ProfileSpec
from golemwz.storage_dirs import safe_directory

if TYPE_CHECKING:
    from golemwz.wizard import Wizard

# Bound onto the profile's persistent paths: STORAGE/persistent/var/lib/... .
PERSISTENT_SUBDIR = "persistent"
# vfio-pci ids for module load (reference 002 "/etc/modprobe.d/vfio.conf").
VFIO_IDS_FILE = "/etc/modprobe.d/golemwz-vfio-ids.conf"
# The devices golemwz-vfio.service binds (`golemwz vfio-bind FILE`), one a line.
VFIO_DEVICES_FILE = "/etc/golemwz/vfio-devices"
VFIO_SERVICE = "golemwz-vfio.service"


def asked_keys(spec: ProfileSpec) -> list[str]:
    """The questions the profile's steps may ask: none left means unattended."""
    return (["storage_partition"] if "storage" in spec.steps else []) + \
        (["gpu_pci_slot"] if "gpu_vfio" in spec.steps else [])


def profile_values(wizard: Wizard) -> dict[str, object]:
    return dict(wizard.settings.profile or ())


def run_steps(wizard: Wizard, spec: ProfileSpec) -> None:
    for name in spec.steps:
        STEPS[name](wizard, spec)
    if not wizard.save_attempted:
        wizard.save_configuration()
    wizard.step("done")


def storage_step(wizard: Wizard, _spec: ProfileSpec) -> None:
    wizard.configure_storage()


def access_step(wizard: Wizard, _spec: ProfileSpec) -> None:
    wizard.configure_access()


def network_step(wizard: Wizard, _spec: ProfileSpec) -> None:
    wizard.check_network()


def persistent_step(wizard: Wizard, spec: ProfileSpec) -> None:
    """Bind each persistent path of the spec from the storage partition."""
    layout, runner = wizard.layout, wizard.services.runner
    storage_root = layout.storage_mount_dir
    if not storage_root.is_dir():
        raise WizardError(f"{storage_root} is not mounted", "the storage step comes first")
    for path, owner in spec.persistent:
        source = safe_directory(storage_root, str(Path(PERSISTENT_SUBDIR) / path.lstrip("/")))
        target = layout.system_path(path)
        target.mkdir(parents=True, exist_ok=True)
        runner.run(["chown", f"{owner}:{owner}", str(source)])
        if runner.run(["mountpoint", "-q", str(target)], check=False).returncode != 0:
            runner.run(["mount", "--bind", str(source), str(target)])
        wizard.step(f"{path} is kept on the storage partition ({source})")
        wizard.configured.append(f"{path} on persistent storage")


def vfio_ids(sysfs_root: Path, devices: tuple[PciAddress, ...]) -> list[str]:
    """vendor:device of each function, as `options vfio-pci ids=` takes them."""
    found = (read_device(sysfs_root, address) for address in devices)
    return sorted({f"{d.vendor:04x}:{d.device_id:04x}" for d in found})


def iommu_groups(sysfs_root: Path, devices: tuple[PciAddress, ...]) -> list[int]:
    groups = {read_device(sysfs_root, address).iommu_group for address in devices}
    if None in groups:
        raise WizardError("a device chosen for vfio-pci has no IOMMU group",
                          "turn the IOMMU on in the firmware (VT-d / AMD-Vi)")
    return sorted(g for g in groups if g is not None)


def render_gpu_dropin(spec: ProfileSpec, gpus: tuple[PciAddress, ...],
                      groups: list[int]) -> str:
    """The spec's template with the chosen GPUs and one group_line per IOMMU group."""
    group_line = spec.gpu_vfio.get("group_line", "")
    lines = "\n".join(group_line.format(group=group) for group in groups)
    return spec.gpu_vfio.get("template", "").format(
        gpus=",".join(map(str, gpus)), group_lines=lines)


def gpu_vfio_step(wizard: Wizard, spec: ProfileSpec) -> None:
    """The chosen GPU and its companion functions to vfio-pci (reference 002): the
    isolation check of GOLEM's wizard, `options vfio-pci ids=`, the binding (built-in
    drivers such as xhci_hcd unbound) through golemwz-vfio.service, and the spec's drop-in.

    Without any NVIDIA GPU and no explicit gpu_pci_slot the node runs without one: a
    warning, no failure (QEMU, a CPU-only prover). A GPU configured but not usable is
    an error as in GOLEM's wizard."""
    layout, reporter = wizard.layout, wizard.services.reporter
    survey = survey_gpus(layout.sysfs_root, relax_bridges=wizard.options.relax_gpu_isolation)
    if not survey.gpus and wizard.settings.gpu_pci_slot in (None, AUTO):
        reporter.warn("no NVIDIA GPU on this machine: no passthrough, the node runs "
                      "without a GPU (`golemwz gpus` shows what the wizard sees)")
        wizard.configured.append("GPU: none found, the node runs without one")
        return
    gpus, devices = wizard.select_gpus()
    groups = iommu_groups(layout.sysfs_root, devices)
    ids = vfio_ids(layout.sysfs_root, devices)
    _write(layout.system_path(VFIO_IDS_FILE),
           "# Written by golemwz: the chosen GPU and its companion functions.\n"
           f"options vfio-pci ids={','.join(ids)}\n")
    _write(layout.system_path(VFIO_DEVICES_FILE), "".join(f"{d}\n" for d in devices))
    wizard.step(f"vfio-pci ids={','.join(ids)} in {VFIO_IDS_FILE}; devices in "
                f"{VFIO_DEVICES_FILE} for {VFIO_SERVICE}")
    dropin = spec.gpu_vfio["dropin"]
    _write(layout.system_path(dropin), render_gpu_dropin(spec, gpus, groups))
    wizard.step(f"{dropin}: GPU {','.join(map(str, gpus))}, IOMMU groups "
                + ", ".join(map(str, groups)))
    wizard.save_configuration()  # before the screen may go (a single-GPU machine)
    if wizard.options.passthrough:
        wizard.attach_vfio(gpus, devices)
    wizard.services.runner.run(["systemctl", "daemon-reload"])


def env_files_step(wizard: Wizard, spec: ProfileSpec) -> None:
    """NAME=value files (0600) from [profile] values: validated plain text only."""
    values = profile_values(wizard)
    for path, names in spec.env_files:
        lines = [f"{name}={spec.value(values, key)}\n" for name, key in names
                 if spec.value(values, key) is not None]
        _write(wizard.layout.system_path(path), "".join(lines))
        wizard.step(f"{path}: " + (", ".join(line.split("=")[0] for line in lines) or "empty"))


def start_step(wizard: Wizard, spec: ProfileSpec) -> None:
    """Start each unit whose needed [profile] keys are set; say which are missing."""
    values = profile_values(wizard)
    for unit, marker, needs in spec.start:
        missing = [key for key in needs if spec.value(values, key) is None]
        if missing:
            wizard.services.reporter.warn(
                f"{unit} is not started: set {', '.join(missing)} in the [profile] table "
                "of golemwz.toml")
            wizard.configured.append(f"{unit} not started (needs {', '.join(missing)})")
            continue
        _write(wizard.layout.system_path(marker), "configured by golemwz\n")
        # --no-block: the unit is ordered after golemwz.service; waiting would deadlock.
        wizard.services.runner.run(["systemctl", "start", "--no-block", unit])
        wizard.step(f"started {unit}")
        wizard.configured.append(f"{unit} started")


def zfs_step(wizard: Wizard, spec: ProfileSpec) -> None:
    zfs_pool.configure(wizard, spec)


def _write(path: Path, text: str) -> None:
    write_atomically(text.encode(), path)
    os.chmod(path, 0o600 if path.name.endswith(".env") else 0o644)


STEPS: dict[str, Callable[[Wizard, ProfileSpec], None]] = {
    "storage": storage_step,
    "access": access_step,
    "network": network_step,
    "persistent": persistent_step,
    "gpu_vfio": gpu_vfio_step,
    "zfs": zfs_step,
    "env_files": env_files_step,
    "start": start_step,
}
