"""The CLI's user-facing behaviour: one clear line per error, exit codes, plan output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def golem_live(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "golem_live.cli", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, cwd=cwd, timeout=120)


def single_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_profile(tmp_path: Path) -> None:
    line = single_error_line(golem_live("plan", "--profile", "nope", "--tmp-dir",
                                        str(tmp_path), "--work-dir", str(tmp_path)))
    assert "unknown profile 'nope'" in line and "gpu-node" in line


def test_bad_version(tmp_path: Path) -> None:
    line = single_error_line(golem_live("plan", "--profile", "gpu-node", "--version", "a b",
                                        "--tmp-dir", str(tmp_path)))
    assert "invalid version" in line


def test_unknown_stage_for_until(tmp_path: Path) -> None:
    line = single_error_line(golem_live("build", "--profile", "gpu-node", "--until", "nope",
                                        "--tmp-dir", str(tmp_path), "--work-dir",
                                        str(tmp_path)))
    assert "unknown stage 'nope'" in line and "bootstrap" in line


def test_plan_of_a_fresh_cache_lists_every_stage_as_never_built(tmp_path: Path) -> None:
    result = golem_live("plan", "--profile", "gpu-node", "--tmp-dir", str(tmp_path / "t"),
                        "--work-dir", str(tmp_path / "w"), "--offline")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()
             if not line.startswith(" ")]
    assert names == ["bootstrap", "packages", "squashfs-base", "overlay", "squashfs",
                     "bootloader", "iso", "usb"]
    assert result.stdout.count("will run") == 8
    assert result.stdout.count("never built") == 8


def test_missing_local_debs_dir(tmp_path: Path) -> None:
    line = single_error_line(golem_live("plan", "--profile", "gpu-node", "--local-debs",
                                        str(tmp_path / "missing"), "--tmp-dir", str(tmp_path)))
    assert "does not exist" in line


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="checks the non-root message")
def test_build_needs_root(tmp_path: Path) -> None:
    line = single_error_line(golem_live("build", "--profile", "gpu-node", "--tmp-dir",
                                        str(tmp_path), "--work-dir", str(tmp_path)))
    assert "needs root" in line


def test_clean_sweep_on_an_empty_dir(tmp_path: Path) -> None:
    result = golem_live("clean", "--sweep", "--tmp-dir", str(tmp_path / "t"), "--work-dir",
                        str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr
    assert "nothing left mounted" in result.stdout


def test_profiles_are_listed_one_line_each_with_their_description() -> None:
    result = golem_live("profiles")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert {"gpu-node", "golem-provider"} <= set(lines)
    assert "Debian only" in lines["gpu-node"]


def test_profiles_reference_prints_every_key() -> None:
    from builder.profile import SETTINGS

    result = golem_live("profiles", "--reference")
    assert result.returncode == 0, result.stderr
    for setting in SETTINGS:
        assert f"| `{setting.key}` |" in result.stdout
