"""One walk through the real dialog TUI, in tmux, along the happy path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from golemwz.layout import GOLEM_STORAGE_PARTUUID
from wizard_fakes import ACCOUNT

DRIVER = Path(__file__).resolve().parent / "tmux_driver.py"
SCREEN_WAIT_SECONDS = 60  # generous: the machine may be busy with image builds

pytestmark = [pytest.mark.tools, pytest.mark.skipif(
    shutil.which("tmux") is None or shutil.which("dialog") is None,
    reason="needs the tmux and dialog programs (apt install tmux dialog)")]


class Tmux:
    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], check=True,
                              capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "wizard")

    def wait_for(self, text: str) -> str:
        """Poll the screen until `text` shows; fail with the screen if it never does."""
        deadline = time.monotonic() + SCREEN_WAIT_SECONDS
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        pytest.fail(f"'{text}' never appeared; the screen was:\n{screen}")

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "wizard", *keys)


def test_happy_path_through_the_dialog_tui(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    tmux = Tmux(tmp_path / "tmux.sock")
    command = f"{sys.executable} {DRIVER} {tmp_path / 'machine'} {result}; sleep 30"
    tmux("new-session", "-d", "-s", "wizard", "-x", "110", "-y", "35",
         "env", "TERM=screen", "sh", "-c", command)
    try:
        tmux.wait_for("Do you accept")
        tmux.keys("Enter")  # Yes
        tmux.wait_for("Golem storage")  # the storage menu
        tmux.keys("Enter")  # the first entry, Golem storage
        tmux.wait_for("The password of user")
        tmux.keys("Enter")
        tmux.wait_for("Account (0x...)")
        tmux.keys("-l", ACCOUNT)
        tmux.keys("Enter")
        tmux.wait_for("Price of one hour")
        tmux.keys("Enter")  # the suggested 0.25
        tmux.wait_for("GLM charged when")
        tmux.keys("Enter")  # 0
        tmux.wait_for("GPUs to share")
        tmux.keys("Enter")  # the GPU, checked already
        deadline = time.monotonic() + SCREEN_WAIT_SECONDS
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert result.exists(), tmux.screen()
    finally:
        subprocess.run(["tmux", "-S", str(tmp_path / "tmux.sock"), "kill-server"],
                       capture_output=True)
    outcome = json.loads(result.read_text())
    assert outcome["status"] == 0, outcome["console"]
    assert f'storage_partition = "{GOLEM_STORAGE_PARTUUID}"' in outcome["saved"]
    assert f'glm_account = "{ACCOUNT}"' in outcome["saved"]
    assert 'glm_per_hour = "0.25"' in outcome["saved"]
    assert 'gpu_pci_slot = [\n    "0000:01:00.0",\n]' in outcome["saved"]
    assert ["modprobe", "vfio-pci"] in outcome["argvs"]
