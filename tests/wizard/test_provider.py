"""Runtime JSON, the provider's argv sequence, the environment file."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from golemwz.errors import WizardError
from golemwz.layout import SystemLayout
from golemwz.pci import PciAddress
from golemwz.provider import (
    ProviderSettings,
    configure_runtime_json,
    duration_price,
    env_file_text,
    install_runtime_json,
    setup_provider,
)
from wizard_fakes import ACCOUNT, RUNTIME_JSON, RecordingRunner


@pytest.fixture
def layout(tmp_path: Path) -> SystemLayout:
    layout = SystemLayout.under(tmp_path)
    layout.yagna_plugins_dir.mkdir(parents=True)
    (layout.yagna_plugins_dir / "ya-runtime-vm-nvidia.json").write_text(json.dumps(RUNTIME_JSON))
    return layout


def gpus(*slots: str) -> list[PciAddress]:
    return [PciAddress.parse(s) for s in slots]


def test_runtime_copy_has_absolute_paths_and_one_pci_device_per_gpu(
        layout: SystemLayout) -> None:
    target = install_runtime_json(layout, gpus("0000:02:00.0", "10000:01:00.0", "0000:01:00.0"))
    assert target == layout.user_plugins_dir / "ya-runtime-vm-nvidia.json"
    runtime = json.loads(target.read_text())[0]
    plugins = layout.yagna_plugins_dir
    assert runtime["supervisor-path"] == f"{plugins}/exe-unit"
    assert runtime["runtime-path"] == f"{plugins}/ya-runtime-vm-nvidia/ya-runtime-vm-nvidia"
    assert runtime["extra-args"] == [  # the GPU no longer selected (09:00.0) is gone
        "--cap-handoff",
        "--runtime-arg=--pci-device=0000:01:00.0",
        "--runtime-arg=--pci-device=0000:02:00.0",
        "--runtime-arg=--pci-device=10000:01:00.0",
    ]


def test_runtime_json_without_vm_nvidia_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "ya-runtime-vm-nvidia.json"
    source.write_text(json.dumps([{"name": "vm", "extra-args": []}]))
    with pytest.raises(WizardError, match="no 'vm-nvidia' runtime"):
        configure_runtime_json(source, gpus("0000:01:00.0"))


def test_duration_price_is_per_second() -> None:
    assert duration_price(Decimal("0.36")) == "0.0001"
    assert duration_price(Decimal("0.25")) == "0.000069444444444444"
    assert duration_price(Decimal("0")) == "0"


def as_golem(*argv: str) -> tuple[str, ...]:
    return ("runuser", "-u", "golem", "--", *argv)


PRICING = ("--exe-unit", "vm-nvidia", "--pricing", "linear", "--price", "Duration=0.0001",
           "--price", "CPU=0", "--price", "Init price=0.5")


def test_provider_argv_sequence_creates_the_preset(layout: SystemLayout) -> None:
    layout.installer_resources_dir.mkdir(parents=True)
    runner = RecordingRunner(responses={
        as_golem("ya-provider", "preset", "list"): (0, '[{"name": "default"}]')})
    settings = ProviderSettings(ACCOUNT, Decimal("0.36"), Decimal("0.5"), "rig-7")
    setup_provider(settings, layout, runner)
    assert runner.argvs == [
        as_golem("golemsp", "setup", "--no-interactive"),
        as_golem("ya-provider", "pre-install"),
        as_golem("golemsp", "manifest-bundle", "add", str(layout.installer_resources_dir)),
        as_golem("golemsp", "settings", "set", "--node-name", "rig-7", "--account", ACCOUNT),
        as_golem("ya-provider", "preset", "list", "--json"),
        as_golem("ya-provider", "preset", "create", "--no-interactive",
                 "--preset-name", "vm-nvidia", *PRICING),
        as_golem("ya-provider", "preset", "activate", "vm-nvidia"),
    ]
    assert all(call.env == {"HOME": str(layout.golem_home), "USER": "golem"}
               for call in runner.calls)


def test_existing_preset_is_updated(layout: SystemLayout) -> None:
    runner = RecordingRunner(responses={
        as_golem("ya-provider", "preset", "list"): (0, '[{"name": "vm-nvidia"}]')})
    setup_provider(ProviderSettings(ACCOUNT, Decimal("0.36"), Decimal("0.5"), None),
                   layout, runner)
    assert as_golem("golemsp", "settings", "set", "--account", ACCOUNT) in runner.argvs
    assert as_golem("ya-provider", "preset", "update", "--no-interactive",
                    "--name", "vm-nvidia", *PRICING) in runner.argvs
    assert runner.matching(*as_golem("ya-provider", "preset", "create")) == []


def test_env_file_quotes_each_setting() -> None:
    text = env_file_text((("SUBNET", "public"), ("YA_PAYMENT_NETWORK_GROUP", "mainnet")))
    assert text.splitlines()[1:] == ['SUBNET="public"', 'YA_PAYMENT_NETWORK_GROUP="mainnet"']
