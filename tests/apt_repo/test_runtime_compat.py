"""The wizard's GPU arguments against the ya-runtime-vm that each channel's selection of
ya-runtime-vm-nvidia bundles.

The wizard writes one `--runtime-arg=--pci-device=SLOT` per GPU into the vm-nvidia
runtime's extra-args (golemwz provider.py); the exe-unit hands each `--runtime-arg`
value to the runtime binary, which ya-runtime-vm-nvidia builds from ya-runtime-vm at
the tag its CI names. ya-runtime-vm parses its command line with structopt 0.3
(clap 2): a field `pci_device: Option<String>` takes the flag once and clap refuses a
second occurrence; `Option<Vec<String>>` takes it any number of times.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from golemwz.pci import PciAddress
from golemwz.provider import PCI_DEVICE_ARG, RUNTIME_NAME, configure_runtime_json

from apt_repo.channels import CHANNELS
from apt_repo.components import Selection, load_components
from apt_repo.github import Release, select_release

NVIDIA_REPO = "golemfactory/ya-runtime-vm-nvidia"

# ya-runtime-vm's `pci_device` field, runtime/src/lib.rs at each tag (golemfactory/
# ya-runtime-vm): Option<String> up to v0.4.0 and in every pre-rel-v0.4.0-* build,
# Option<Vec<String>> from v0.4.1 on (v0.4.1, v0.4.2, v0.5.0, v0.5.1, v0.5.2).
SINGLE, SEVERAL = "Option<String>", "Option<Vec<String>>"
VM_PCI_DEVICE_FIELD = {
    "pre-rel-v0.4.0-rc2": SINGLE,
    "pre-rel-v0.4.0-ITL-rc15": SINGLE,
    "pre-rel-v0.4.0-ITL-rc17": SINGLE,
    "pre-rel-v0.4.0-ITL-rc18": SINGLE,
    "pre-rel-v0.4.0-ITL-rc19": SINGLE,
    "pre-rel-v0.4.0-ITL-rc21": SINGLE,
    "v0.4.0": SINGLE,
    "v0.4.1": SEVERAL,
    "v0.4.2": SEVERAL,
    "v0.5.0": SEVERAL,
    "v0.5.1": SEVERAL,
    "v0.5.2": SEVERAL,
}

# ya-runtime-vm-nvidia's releases after the v0.1.0 line: (tag, date of the tag, the
# ya-runtime-vm tag it bundles: `runtime-vm_version` in .github/workflows/ci.yml at that
# tag). Its pre-rel-* tags are GitHub prereleases, v* full releases.
NVIDIA_RELEASES = [
    ("v0.1.0", "2023-07-25", "pre-rel-v0.4.0-rc2"),
    ("v0.1.1", "2023-07-26", "pre-rel-v0.4.0-rc2"),
    ("v0.1.2", "2023-07-26", "pre-rel-v0.4.0-rc2"),
    ("pre-rel-v0.1.3-rc1", "2023-10-01", "pre-rel-v0.4.0-rc2"),
    ("pre-rel-v0.1.3-rc5", "2023-10-18", "pre-rel-v0.4.0-ITL-rc15"),
    ("pre-rel-v0.1.3-rc7", "2023-11-19", "pre-rel-v0.4.0-ITL-rc17"),
    ("pre-rel-v0.1.3-rc8", "2023-12-09", "pre-rel-v0.4.0-ITL-rc18"),
    ("pre-rel-v0.1.3-rc9", "2023-12-10", "pre-rel-v0.4.0-ITL-rc19"),
    ("pre-rel-v0.1.3-rc10", "2023-12-11", "pre-rel-v0.4.0-ITL-rc21"),
    ("v0.1.3", "2024-04-26", "pre-rel-v0.4.0-ITL-rc21"),
    ("v0.1.4", "2024-09-02", "v0.4.1"),
    ("v0.1.5", "2024-09-26", "v0.5.1"),
]
# What would break a pattern that is too loose: a single-device prerelease published
# after every multi-device release (upstream kept tagging pre-rel-v0.1.3-* for months).
DECOY = ("pre-rel-v0.1.3-rc11", "2025-01-01", "pre-rel-v0.4.0-ITL-rc21")

SLOTS = ("0000:01:00.0", "0000:02:00.0")


def nvidia_releases(extra: tuple[tuple[str, str, str], ...] = ()) -> list[Release]:
    return [Release(tag=tag, prerelease=tag.startswith("pre-rel"), draft=False,
                    published=f"{date}T00:00:00Z", assets=())
            for tag, date, _ in (*NVIDIA_RELEASES, *extra)]


def bundled_vm(nvidia_tag: str) -> str:
    return {tag: vm for tag, _, vm in (*NVIDIA_RELEASES, DECOY)}[nvidia_tag]


def runtime_argv(extra_args: list[str]) -> list[str]:
    """What the exe-unit passes to the runtime: the values of its --runtime-arg flags."""
    prefix = "--runtime-arg="
    return [arg[len(prefix):] for arg in extra_args if arg.startswith(prefix)]


def vm_runtime_error(vm_tag: str, argv: list[str]) -> str | None:
    """clap 2's verdict on the --pci-device flags of ya-runtime-vm at `vm_tag`."""
    count = sum(1 for arg in argv if arg == "--pci-device" or arg.startswith("--pci-device="))
    if VM_PCI_DEVICE_FIELD[vm_tag] == SINGLE and count > 1:
        return ("error: The argument '--pci-device <pci-device>' was provided more than "
                "once, but cannot be used multiple times")
    return None


def wizard_runtime_argv(tmp_path: Path, slots: tuple[str, ...]) -> list[str]:
    """The runtime arguments of the vm-nvidia descriptor that the wizard writes."""
    packaged = tmp_path / "ya-runtime-vm-nvidia.json"
    packaged.write_text(json.dumps([{
        "name": RUNTIME_NAME, "version": "0.1.5", "supervisor-path": "exe-unit",
        "runtime-path": "ya-runtime-vm-nvidia/ya-runtime-vm-nvidia",
        "description": "vm-nvidia runtime", "extra-args": ["--cap-handoff"]}]))
    runtimes = configure_runtime_json(packaged, [PciAddress.parse(s) for s in slots])
    (nvidia,) = [r for r in runtimes if r["name"] == RUNTIME_NAME]
    extra_args = nvidia["extra-args"]
    assert isinstance(extra_args, list)
    return runtime_argv([str(a) for a in extra_args])


def nvidia_selection(channel: str) -> Selection:
    (component,) = [c for c in load_components() if c.repo == NVIDIA_REPO]
    return component.for_channel(channel)


def test_the_wizard_sends_one_pci_device_per_gpu(tmp_path: Path) -> None:
    argv = wizard_runtime_argv(tmp_path, SLOTS)
    assert argv == [f"--pci-device={slot}" for slot in SLOTS]
    assert PCI_DEVICE_ARG == "--runtime-arg=--pci-device="


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_channel_bundles_a_runtime_that_takes_every_gpu(channel: str,
                                                              tmp_path: Path) -> None:
    selection = nvidia_selection(channel)
    chosen = select_release(nvidia_releases((DECOY,)), selection, NVIDIA_REPO)
    assert chosen.tag != DECOY[0], f"{channel}: the pattern {selection.tag!r} takes the decoy"
    vm_tag = bundled_vm(chosen.tag)
    for slots in (SLOTS[:1], SLOTS):
        error = vm_runtime_error(vm_tag, wizard_runtime_argv(tmp_path, slots))
        assert error is None, f"{channel}: {chosen.tag} bundles ya-runtime-vm {vm_tag}: {error}"


@pytest.mark.parametrize("channel", CHANNELS)
def test_no_single_device_release_matches_a_channel_newer_than_a_multi_device_one(
        channel: str) -> None:
    """Even if a multi-device release were withdrawn, no newer single-device one matches."""
    selection = nvidia_selection(channel)
    first_multi = min(date for tag, date, vm in NVIDIA_RELEASES
                      if VM_PCI_DEVICE_FIELD[vm] == SEVERAL)
    for tag, date, vm in (*NVIDIA_RELEASES, DECOY):
        if date > first_multi and selection.matches(tag, tag.startswith("pre-rel")):
            assert VM_PCI_DEVICE_FIELD[vm] == SEVERAL, f"{channel}: {tag} bundles {vm}"


def test_the_legacy_pattern_would_have_failed_two_gpus(tmp_path: Path) -> None:
    """Upstream's legacy repository.yml pattern: the check above has teeth."""
    chosen = select_release(nvidia_releases(), Selection("^pre-rel-v0.1.3-.*", True),
                            NVIDIA_REPO)
    assert chosen.tag == "pre-rel-v0.1.3-rc10"
    assert vm_runtime_error(bundled_vm(chosen.tag), wizard_runtime_argv(tmp_path, SLOTS))
    assert vm_runtime_error(bundled_vm(chosen.tag), wizard_runtime_argv(tmp_path, SLOTS[:1])) \
        is None


# --- the tables above against upstream's sources, where a mirror of them is at hand ----

MIRRORS = Path(os.environ.get("GOLEM_UPSTREAM_MIRRORS", "/work/.mirror"))


def _git_show(repo: str, tag: str, path: str) -> str:
    git_dir = MIRRORS / f"{repo.replace('/', '+')}/repo"
    if shutil.which("git") is None or not git_dir.is_dir():
        pytest.skip(f"no mirror of {repo} at {git_dir} (GOLEM_UPSTREAM_MIRRORS)")
    return subprocess.run(["git", "-C", str(git_dir), "show", f"{tag}:{path}"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.tools
@pytest.mark.parametrize(("tag", "field"), sorted(VM_PCI_DEVICE_FIELD.items()))
def test_pci_device_field_as_in_ya_runtime_vm(tag: str, field: str) -> None:
    source = _git_show("golemfactory/ya-runtime-vm", tag, "runtime/src/lib.rs")
    assert re.search(r"\bpci_device: " + re.escape(field) + ",", source)


@pytest.mark.tools
@pytest.mark.parametrize(("tag", "vm_tag"), [(t, vm) for t, _, vm in NVIDIA_RELEASES])
def test_bundled_runtime_as_in_ya_runtime_vm_nvidia_ci(tag: str, vm_tag: str) -> None:
    ci = _git_show(NVIDIA_REPO, tag, ".github/workflows/ci.yml")
    assert re.search(r"runtime-vm_version: " + re.escape(vm_tag) + r"\s*$", ci, re.M)
