"""Runtime JSON, the provider's argv sequence, the environment file."""

from __future__ import annotations

import json
import shutil
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
    install_runtimes,
    setup_provider,
)
from wizard_fakes import ACCOUNT, RecordingRunner, install_golem_files


@pytest.fixture
def layout(tmp_path: Path) -> SystemLayout:
    layout = SystemLayout.under(tmp_path)
    install_golem_files(layout)
    return layout


def gpus(*slots: str) -> list[PciAddress]:
    return [PciAddress.parse(s) for s in slots]


def test_runtime_copy_has_absolute_paths_and_one_pci_device_per_gpu(
        layout: SystemLayout) -> None:
    target = install_runtimes(layout, gpus("0000:02:00.0", "10000:01:00.0", "0000:01:00.0"))[0]
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
    runner = RecordingRunner(responses={
        as_golem("ya-provider", "preset", "list"): (0, '[{"name": "default"}]')})
    settings = ProviderSettings(ACCOUNT, Decimal("0.36"), Decimal("0.5"), "rig-7")
    setup_provider(settings, layout, runner)
    assert runner.argvs == [
        as_golem("mkdir", "-p", str(layout.terms_tag.parent)),
        as_golem("touch", str(layout.terms_tag)),
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


def test_every_packaged_runtime_is_copied_and_only_vm_nvidia_gets_the_gpus(
        layout: SystemLayout) -> None:
    """ya-provider reads only ~/.local/lib/yagna/plugins/ya-*.json once it exists (yagna
    agent/provider/src/startup_config.rs default_plugins): vm and wasi must be there too."""
    (layout.yagna_plugins_dir / "README").write_text("not a runtime\n")
    copies = install_runtimes(layout, gpus("0000:01:00.0"))
    assert sorted(p.name for p in layout.user_plugins_dir.iterdir()) == [
        "ya-runtime-vm-nvidia.json", "ya-runtime-vm.json", "ya-runtime-wasi.json"]
    assert sorted(copies) == sorted(layout.user_plugins_dir.iterdir())
    plugins = layout.yagna_plugins_dir
    by_name = {r["name"]: r for c in copies for r in json.loads(c.read_text())}
    assert set(by_name) == {"vm-nvidia", "vm", "wasmtime"}
    assert by_name["vm"]["runtime-path"] == f"{plugins}/ya-runtime-vm/ya-runtime-vm"
    assert by_name["wasmtime"]["supervisor-path"] == f"{plugins}/exe-unit"
    assert by_name["vm"]["extra-args"] == ["--cap-handoff"]  # no --pci-device
    assert by_name["wasmtime"]["extra-args"] == ["--cap-handoff"]
    assert "--runtime-arg=--pci-device=0000:01:00.0" in by_name["vm-nvidia"]["extra-args"]


def test_an_absolute_path_is_kept_and_a_relative_one_follows_its_own_json(
        layout: SystemLayout) -> None:
    other = layout.yagna_plugins_dir / "ya-runtime-extra.json"
    other.write_text(json.dumps([{"name": "extra", "supervisor-path": "/opt/x/exe-unit",
                                  "runtime-path": "extra/run"}]))
    install_runtimes(layout, gpus("0000:01:00.0"))
    (runtime,) = json.loads((layout.user_plugins_dir / other.name).read_text())
    assert runtime["supervisor-path"] == "/opt/x/exe-unit"
    assert runtime["runtime-path"] == f"{layout.yagna_plugins_dir}/extra/run"


def test_a_broken_runtime_json_names_its_file(layout: SystemLayout) -> None:
    broken = layout.yagna_plugins_dir / "ya-runtime-vm.json"
    broken.write_text('{"name": "vm"}')  # an object, not a list
    with pytest.raises(WizardError, match=f"{broken} is not a list") as raised:
        install_runtimes(layout, gpus("0000:01:00.0"))
    assert f"dpkg -S {broken}" in raised.value.line()


def test_without_the_nvidia_runtime_nothing_is_copied(layout: SystemLayout) -> None:
    (layout.yagna_plugins_dir / "ya-runtime-vm-nvidia.json").unlink()
    with pytest.raises(WizardError, match="install ya-runtime-vm-nvidia"):
        install_runtimes(layout, gpus("0000:01:00.0"))
    assert not layout.user_plugins_dir.exists()


def test_the_manifest_bundle_is_at_ya_installer_resources_path() -> None:
    # ya-installer-resources' deb installs /usr/lib/yagna/installer (tests/golem_fakes.py).
    assert SystemLayout().installer_resources_dir == Path("/usr/lib/yagna/installer")


@pytest.mark.parametrize("missing", ["", "whitelist", "certs", "golem-certs"])
def test_a_missing_manifest_bundle_is_an_error_before_any_command(
        layout: SystemLayout, missing: str) -> None:
    """golemsp manifest-bundle add reads whitelist/, certs/ and golem-certs/ (yagna
    golem_cli/src/manifest.rs); without them the node has no GOLEM certificate."""
    shutil.rmtree(layout.installer_resources_dir / missing)
    runner = RecordingRunner()
    with pytest.raises(WizardError) as raised:
        setup_provider(ProviderSettings(ACCOUNT, Decimal("0.36"), Decimal("0"), None),
                       layout, runner)
    assert "apt install --reinstall ya-installer-resources" in raised.value.line()
    assert (missing or "does not exist") in raised.value.problem
    assert runner.calls == []


def test_an_empty_account_is_the_nodes_own_wallet_no_account_flag(
        layout: SystemLayout) -> None:
    """golem-gpu-imager: "Leave empty to use the node's default wallet"
    (src/ui/configuration/view.rs); golemsp's --account takes only a NodeId."""
    runner = RecordingRunner()
    setup_provider(ProviderSettings("", Decimal("0.36"), Decimal("0"), None), layout, runner)
    assert runner.matching(*as_golem("golemsp", "settings")) == []
    assert not any("--account" in argv for argv in runner.argvs)
    runner = RecordingRunner()
    setup_provider(ProviderSettings("", Decimal("0.36"), Decimal("0"), "rig-7"), layout, runner)
    assert runner.matching(*as_golem("golemsp", "settings")) == [
        as_golem("golemsp", "settings", "set", "--node-name", "rig-7")]


def test_the_terms_tag_of_golems_installer_is_made_as_golem(layout: SystemLayout) -> None:
    """GOLEM's installer (join.golem.network as-provider, check_terms_of_use) takes
    ~/.local/share/ya-installer/terms/testnet-01.tag for accepted terms."""
    runner = RecordingRunner()
    setup_provider(ProviderSettings(ACCOUNT, Decimal("0.36"), Decimal("0"), None), layout, runner)
    tag = layout.local_dir / "share/ya-installer/terms/testnet-01.tag"
    assert layout.terms_tag == tag
    assert runner.argvs[:2] == [as_golem("mkdir", "-p", str(tag.parent)),
                                as_golem("touch", str(tag))]
    assert not tag.exists()  # never written by root


def test_a_symlink_planted_in_the_user_plugins_directory_is_replaced_not_followed(
        layout: SystemLayout, tmp_path: Path) -> None:
    """~/.local is the stick's storage: anyone who held it may have put a link there."""
    victim = tmp_path / "etc-shadow"
    victim.write_text("root:secret\n")
    layout.user_plugins_dir.mkdir(parents=True)
    (layout.user_plugins_dir / "ya-runtime-vm.json").symlink_to(victim)
    install_runtimes(layout, gpus("0000:01:00.0"))
    assert victim.read_text() == "root:secret\n"
    copy = layout.user_plugins_dir / "ya-runtime-vm.json"
    assert not copy.is_symlink() and copy.stat().st_mode & 0o777 == 0o644
