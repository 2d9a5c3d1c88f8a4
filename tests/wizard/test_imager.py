"""A conf partition written by GOLEM's imager runs the wizard unattended (issue 9 item 4).

golem-gpu-imager v0.2.3 (src/disk.rs write_configuration_to_partition) finds the
partition by PARTUUID 33b921b8-edc5-46a0-8baa-d0b7ad84fc71, reformats it as FAT with
the label GOLEMCONF and writes exactly two files: golemwz.toml
(src/disk/configuration.rs to_toml_content) and golem.env (to_env_content). The texts
below are what those functions write for a non-interactive install with an empty wallet
(the node's own), no SSH key, a configuration server and the default metrics settings.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from golemwz.cli import main
from golemwz.config import parse_env_file, parse_layer
from golemwz.layout import CONF_PARTUUID, GOLEM_STORAGE_PARTUUID
from wizard_fakes import ACCOUNT, FakeMachine, ScriptedUI, image_partitions, lsblk_json

# to_toml_content: no storage_partition, gpu_pci_slot nor init_price, ever.
IMAGER_TOML = """# Golem Configuration
accepted_terms = true
glm_account = ""
glm_per_hour = "0.25"
non_interactive_install = true
ssh_keys = []
configuration_server = "https://config.example.com/golem/rig.toml"

# Environment Variables
[env]
YA_NET_TYPE = "hybrid"
SUBNET = "public"
YA_PAYMENT_NETWORK_GROUP = "testnet"
YAGNA_METRICS_URL = "https://metrics.golem.network:9092/"
YAGNA_METRICS_JOB_NAME = "community.1"
YAGNA_METRICS_GROUP = ""
"""
# to_env_content for the same configuration: an unset group is `YAGNA_METRICS_GROUP=`.
IMAGER_ENV = """YA_NET_TYPE=hybrid
SUBNET=public
YA_PAYMENT_NETWORK_GROUP=testnet
YAGNA_METRICS_URL=https://metrics.golem.network:9092/
YAGNA_METRICS_JOB_NAME=community.1
YAGNA_METRICS_GROUP=
"""


def as_golem(*argv: str) -> tuple[str, ...]:
    return ("runuser", "-u", "golem", "--", *argv)


def imager_partition(machine: FakeMachine, toml: str = IMAGER_TOML,
                     env: str | None = IMAGER_ENV) -> None:
    """Reformatted (label GOLEMCONF, nothing else kept) and the imager's two files."""
    conf = machine.layout.conf_mount_dir
    if conf.exists():
        for leftover in conf.iterdir():
            leftover.unlink()
    machine.write_first_boot(toml)
    if env is not None:
        machine.layout.first_boot_env.write_text(env)
    partitions = image_partitions()
    for entry in partitions:
        if entry["partuuid"] == CONF_PARTUUID:
            entry["label"] = "GOLEMCONF"
    machine.runner.responses[("lsblk",)] = (0, lsblk_json(*partitions))


def env_file(machine: FakeMachine) -> list[str]:
    return machine.layout.provider_env_file.read_text().splitlines()[1:]


def test_the_imagers_files_run_the_wizard_unattended(machine: FakeMachine) -> None:
    imager_partition(machine)
    ui = ScriptedUI()  # any question fails the test
    assert main([], machine.services(ui)) == 0
    layout, lines = machine.layout, machine.console_lines()
    assert ("golemwz: read first-boot configuration golemwz.toml and golem.env from "
            "Golem conf storage") in lines
    # storage_partition left out: `Golem storage` of the stick booted from.
    assert ("golemwz: storage_partition is not set (non_interactive_install): "
            "'Golem storage' of the stick booted from") in lines
    assert ("mount", "--bind", str(layout.storage_mount_dir / "golem-gpu-live"),
            str(layout.local_dir)) in machine.runner.argvs
    # gpu_pci_slot left out: every isolated NVIDIA GPU; init_price left out: 0.
    assert any(line.startswith("golemwz: gpu_pci_slot is not set") for line in lines)
    assert "golemwz: selected GPU 0000:01:00.0 (NVIDIA 10de:2684 VGA compatible controller)" \
        in lines
    create = machine.runner.matching(*as_golem("ya-provider", "preset", "create"))
    assert "Init price=0" in create[0]
    # glm_account = "": the node's own wallet, so no --account anywhere.
    assert not any("--account" in argv for argv in machine.runner.argvs)
    assert "golemwz: GLM account the node's own wallet, 0.25 GLM per hour, initial price 0" \
        in lines
    # golem.env and [env] through the same rules; the empty group is left out, so the
    # unit's YAGNA_METRICS_GROUP=GolemGpuLive stays.
    assert env_file(machine) == [
        'SUBNET="public"', 'YAGNA_METRICS_JOB_NAME="community.1"',
        'YAGNA_METRICS_URL="https://metrics.golem.network:9092/"', 'YA_NET_TYPE="hybrid"',
        'YA_PAYMENT_NETWORK_GROUP="testnet"']
    # configuration_server: kept, and one line says it is not polled yet.
    said = [line for line in lines if "configuration_server" in line]
    assert said == ["golemwz: warning: configuration_server https://config.example.com/golem/"
                    "rig.toml is kept, but this image does not poll it yet: the configuration "
                    "comes from golemwz.toml"]
    assert said[0].removeprefix("golemwz: ") in machine.log_text()
    assert any("does not poll it yet" in text for text in ui.texts("info"))  # on screen
    saved = tomllib.loads(layout.conf_saved_config.read_text())
    assert saved["configuration_server"] == "https://config.example.com/golem/rig.toml"
    assert saved["storage_partition"] == GOLEM_STORAGE_PARTUUID
    assert saved["gpu_pci_slot"] == "auto" and saved["init_price"] == "0"
    assert saved["glm_account"] == ""
    assert "YAGNA_METRICS_GROUP" not in saved["env"]
    # Both first-boot files are consumed; the terms tag of GOLEM's installer is there.
    assert not layout.first_boot_config.exists() and not layout.first_boot_env.exists()
    assert as_golem("touch", str(layout.terms_tag)) in machine.runner.argvs


def test_the_conf_partition_is_found_by_the_imagers_partuuid_alone(
        machine: FakeMachine) -> None:
    imager_partition(machine)
    partitions = image_partitions()
    for entry in partitions:
        if entry["partuuid"] == CONF_PARTUUID:
            entry["partlabel"] = None  # e.g. a table rewritten without names
    machine.runner.responses[("lsblk",)] = (0, lsblk_json(*partitions))
    assert main([], machine.services(ScriptedUI())) == 0
    assert machine.runner.matching("mount", "-o")[0][-2:] == (
        "/dev/sda3", str(machine.layout.conf_mount_dir))


def test_golemwz_toml_env_wins_over_golem_env_which_adds_its_own(
        machine: FakeMachine) -> None:
    imager_partition(machine, env=IMAGER_ENV.replace("SUBNET=public", "SUBNET=devnet-beta")
                     + "CENTRAL_NET_HOST=central.example.com:7464\n# a comment\n\n")
    assert main([], machine.services(ScriptedUI())) == 0
    lines = env_file(machine)
    assert 'SUBNET="public"' in lines  # the TOML's
    assert 'CENTRAL_NET_HOST="central.example.com:7464"' in lines  # only in golem.env


@pytest.mark.parametrize("line,problem", [
    ("PATH=/run/golemwz/conf", "golem.env line 7: env.PATH = 'PATH' is not a GOLEM provider "
                               "variable"),
    ("LD_PRELOAD=/run/golemwz/conf/x.so", "not a GOLEM provider variable"),
    ('SUBNET="public"', "is not an unquoted value"),
    ("SUBNET public", "is not a NAME=value line"),
    ("subnet=public", "is not a variable name"),
])
def test_a_bad_golem_env_line_stops_the_unattended_run_with_its_line_and_fix(
        machine: FakeMachine, line: str, problem: str) -> None:
    imager_partition(machine, env=IMAGER_ENV + line + "\n")
    assert main([], machine.services(ScriptedUI())) == 2
    error = machine.console_lines()[-1]
    assert error.startswith("golemwz: error: golem.env line 7: ") and problem in error
    assert " — " in error  # with its fix
    assert not machine.layout.conf_saved_config.exists()
    assert machine.layout.first_boot_env.exists()  # left to be fixed


def test_without_a_golem_storage_on_the_boot_stick_the_missing_key_is_the_error(
        machine: FakeMachine) -> None:
    imager_partition(machine)
    others = [p for p in image_partitions() if p["partlabel"] != "Golem storage"]
    others.append({**image_partitions()[4], "partuuid": "22222222-0000-0000-0000-000000000005",
                   "partlabel": "data"})
    machine.runner.responses[("lsblk",)] = (0, lsblk_json(*others))
    assert main([], machine.services(ScriptedUI())) == 2
    assert machine.console_lines()[-1].startswith(
        "golemwz: error: storage_partition is missing and non_interactive_install is true")


def test_interactively_the_defaults_are_not_taken_but_asked(machine: FakeMachine) -> None:
    imager_partition(machine, IMAGER_TOML.replace("non_interactive_install = true",
                                                  "non_interactive_install = false"))
    ui = ScriptedUI([GOLEM_STORAGE_PARTUUID, "0.5", ["0000:01:00.0"]])
    assert main([], machine.services(ui)) == 0
    assert [kind for kind, _title, _text in ui.shown if kind in
            ("choose_one", "ask_text", "choose_many")] == ["choose_one", "ask_text",
                                                           "choose_many"]
    assert "Init price=0.5" in machine.runner.matching(
        *as_golem("ya-provider", "preset", "create"))[0]


def test_check_agrees_with_the_boot_on_the_imagers_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "golemwz.toml").write_text(IMAGER_TOML)
    (tmp_path / "golem.env").write_text(IMAGER_ENV)
    assert main(["check", str(tmp_path / "golemwz.toml")]) == 0
    out = capsys.readouterr().out
    assert "note: storage_partition is missing: the unattended boot takes 'Golem storage' " \
           "of the stick booted from" in out
    assert "note: gpu_pci_slot is missing" in out and "note: init_price is missing" in out
    assert "does not poll it yet" in out
    assert f"{tmp_path / 'golem.env'} is read too" in out
    assert out.splitlines()[-1] == f"{tmp_path / 'golemwz.toml'}: valid"
    (tmp_path / "golem.env").write_text(IMAGER_ENV + "PATH=/tmp\n")
    assert main(["check", str(tmp_path / "golemwz.toml")]) == 2
    assert "golem.env line 7: env.PATH" in capsys.readouterr().out


@pytest.mark.parametrize("value", [
    "http://config.example.com/", "ftp://config.example.com/", "https:///path",
    "https://exa mple.com/", "config.example.com", "https://example.com:99999/", 42,
])
def test_configuration_server_must_be_an_https_url(value: object) -> None:
    settings, errors = parse_layer({"configuration_server": value}, "golemwz.toml")
    assert settings.configuration_server is None
    assert [e.key for e in errors] == ["configuration_server"]
    assert "is not an https URL" in errors[0].problem and "https://" in errors[0].fix


def test_accounts_and_servers_that_are_accepted() -> None:
    settings, errors = parse_layer({"glm_account": "", "configuration_server": ""}, "t")
    assert errors == [] and settings.glm_account == "" and settings.configuration_server is None
    settings, errors = parse_layer({"glm_account": ACCOUNT,
                                    "configuration_server": "https://h.example:8443/a?b=c"}, "t")
    assert errors == [] and settings.configuration_server == "https://h.example:8443/a?b=c"
    _settings, errors = parse_layer({"glm_account": "0x12"}, "t")
    assert "for the node's own wallet" in errors[0].fix


def test_the_imagers_env_names_are_allowed_and_empty_means_not_set() -> None:
    pairs, errors = parse_env_file(IMAGER_ENV + "CENTRAL_NET_HOST=h:7464\n", "golem.env")
    assert errors == []
    assert dict(pairs) == {"YA_NET_TYPE": "hybrid", "SUBNET": "public",
                           "YA_PAYMENT_NETWORK_GROUP": "testnet",
                           "YAGNA_METRICS_URL": "https://metrics.golem.network:9092/",
                           "YAGNA_METRICS_JOB_NAME": "community.1", "CENTRAL_NET_HOST": "h:7464"}


def test_an_empty_answer_for_the_account_is_the_nodes_own_wallet(
        machine: FakeMachine) -> None:
    """The same meaning as the imager's empty field, asked interactively."""
    machine.write_first_boot(IMAGER_TOML.replace('glm_account = ""\n', "").replace(
        "non_interactive_install = true", "non_interactive_install = false"))
    ui = ScriptedUI([GOLEM_STORAGE_PARTUUID, "", "0", ["0000:01:00.0"]])  # "" the account
    assert main([], machine.services(ui)) == 0
    (asked,) = [text for kind, title, text in ui.shown if title == "GLM account"]
    assert "empty: the node's own wallet" in asked
    assert not any("--account" in argv for argv in machine.runner.argvs)


def test_check_takes_a_golem_env_on_its_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = tmp_path / "golem.env"
    env.write_text(IMAGER_ENV)
    assert main(["check", str(env)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{env}: valid"]
    env.write_text(IMAGER_ENV + "SUBNET='x'\n")
    assert main(["check", str(env)]) == 2
    assert f"{env} line 7: env.SUBNET" in capsys.readouterr().out


def test_with_a_saved_configuration_golem_env_is_not_read(machine: FakeMachine) -> None:
    imager_partition(machine)
    assert main([], machine.services(ScriptedUI())) == 0
    machine.reboot()
    machine.layout.first_boot_env.write_text("SUBNET=other\n")
    assert main([], machine.services(ScriptedUI())) == 0
    assert 'SUBNET="public"' in env_file(machine)
    assert "the first-boot golem.env is not read" in machine.log_text()
