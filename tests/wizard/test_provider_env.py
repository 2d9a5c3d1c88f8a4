"""[env] reaches only the provider's environment file (issue 10 items 1 and 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from golemwz.cli import main
from golemwz.config import parse_layer
from golemwz.confstore import CONF_MOUNT_OPTIONS
from golemwz.errors import WizardError
from golemwz.provider import env_file_text, write_env_file
from golemwz.runner import SubprocessRunner
from wizard_fakes import FULL_FIRST_BOOT, FakeMachine, ScriptedUI, quiet_reporter


@pytest.mark.parametrize("name", [
    "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "IFS", "BASH_ENV", "ENV",
    "HOME", "SHELL", "YA_NET_TYPE\n", "ya_net_type", "EXE_UNIT_PATH", "DATA_DIR",
])
def test_item1_env_names_outside_the_provider_allow_list_are_rejected(name: str) -> None:
    settings, errors = parse_layer({"env": {name: "/run/golemwz/conf"}}, "golemwz.toml")
    assert len(errors) == 1 and errors[0].key.startswith("env.")
    assert "\n" not in errors[0].line()  # a newline in the name is shown escaped
    assert settings.env is None


def test_item1_a_path_in_env_stops_the_boot_before_any_command_as_golem(
        machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT + 'PATH = "/run/golemwz/conf"\n')
    assert main([], machine.services(ScriptedUI())) == 2
    assert "env.PATH" in machine.console_lines()[-1]
    assert machine.runner.matching("runuser") == []


def test_item1_env_reaches_the_env_file_and_no_command(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    assert machine.runner.matching("runuser")  # the provider was set up...
    for call in machine.runner.calls:  # ...with none of [env] in any command's environment
        assert not {"YA_NET_TYPE", "SUBNET"} & set(call.env or {}), call.argv
    env_file = machine.layout.provider_env_file
    assert env_file.read_text().splitlines()[1:] == ['SUBNET="public"', 'YA_NET_TYPE="hybrid"']
    assert env_file.stat().st_mode & 0o777 == 0o600  # item 6


def test_item1_quotes_and_backslashes_cannot_end_a_value() -> None:
    text = env_file_text((("SUBNET", 'x" YAGNA_APPKEY="stolen'), ("NODE_NAME", "a\\b$c`d")))
    assert text.splitlines()[1:] == [r'SUBNET="x\" YAGNA_APPKEY=\"stolen"',
                                     r'NODE_NAME="a\\b\$c\`d"']
    with pytest.raises(WizardError, match="control character"):
        env_file_text((("SUBNET", "public\nLD_PRELOAD=/x.so"),))


def test_item1_the_runner_refuses_a_loader_or_path_variable(tmp_path: Path) -> None:
    runner = SubprocessRunner(quiet_reporter())
    marker = tmp_path / "ran"
    for env in ({"PATH": str(tmp_path)}, {"LD_PRELOAD": "/x.so"}, {"PYTHONPATH": "/x"}):
        with pytest.raises(WizardError, match="refusing to run"):
            runner.run(["touch", str(marker)], env=env)
    assert not marker.exists()
    runner.run(["touch", str(marker)], env={"HOME": str(tmp_path)})
    assert marker.exists()


def test_item1_conf_partition_noexec_and_storage_nosuid(machine: FakeMachine) -> None:
    machine.write_first_boot(FULL_FIRST_BOOT)
    assert main([], machine.services(ScriptedUI())) == 0
    assert set("noexec,nosuid,nodev".split(",")) <= set(CONF_MOUNT_OPTIONS.split(","))
    conf = [a for a in machine.runner.matching("mount") if "/dev/sda3" in a]
    assert conf and all("noexec" in a[2] for a in conf)
    storage = [a for a in machine.runner.matching("mount") if "/dev/sda5" in a]
    assert storage and all(a[1:3] == ("-o", "nosuid,nodev") for a in storage)


def test_item6_env_file_is_private_atomic_and_removed_when_empty(tmp_path: Path) -> None:
    path = tmp_path / "etc/default/golem-provider"
    path.parent.mkdir(parents=True)
    path.write_text("OLD=1\n")
    os.chmod(path, 0o644)
    before = path.stat().st_ino
    assert write_env_file(path, (("YAGNA_APPKEY", "secret"),))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_ino != before  # replaced by rename, never rewritten in place
    assert os.listdir(path.parent) == ["golem-provider"]  # no temporary left
    assert not write_env_file(path, ())
    assert not path.exists()
