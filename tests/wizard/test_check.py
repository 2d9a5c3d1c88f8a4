"""`golemwz check FILE` (issue 10 item 14), and hostile values through it (items 1, 3, 4)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from golemwz.cli import main
from golemwz.config import parse_layer
from wizard_fakes import FULL_FIRST_BOOT


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "golemwz.toml"
    path.write_text(text)
    status = main(["check", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return status, captured.out


def test_a_good_file_is_valid_and_nothing_is_touched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = check(tmp_path, FULL_FIRST_BOOT, capsys)
    assert status == 0
    assert out.splitlines() == [f"{tmp_path / 'golemwz.toml'}: valid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golemwz.toml"]


def test_every_error_is_listed_with_its_key_and_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (FULL_FIRST_BOOT.replace('"0.36"', '"1e15"').replace('"rig-7"', '"my rig!"')
            .replace("accepted_terms = true\n", "") + 'PATH = "/run/golemwz/conf"\n')
    status, out = check(tmp_path, text, capsys)
    assert status == 2
    lines = out.splitlines()
    assert lines[-1].endswith(": 4 errors")
    keys = [line.split(":")[0] for line in lines[:-1]]
    assert keys == ["glm_node_name", "glm_per_hour", "env.PATH", "accepted_terms"]
    assert all(" — " in line for line in lines[:-1])  # each names its fix


def test_unreadable_or_missing_files_are_config_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "absent.toml")]) == 2
    assert "does not exist" in capsys.readouterr().out
    assert main(["check", str(tmp_path)]) == 2  # a directory
    assert "cannot be read" in capsys.readouterr().out
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert main(["check", str(binary)]) == 2


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000,              # RecursionError in tomllib
    "a = " + "{b = " * 3000 + "1" + "}" * 3000,    # the same with inline tables
    "glm_per_hour = " + "9" * 5000,                # ValueError: int too long to convert
    "[" + "env." * 3000 + "X]",                    # deep tables parse, then validate
    "glm_account = " + "[" * 300 + "]" * 300,     # repr() of the value may recurse
])
def test_item4_deep_nesting_and_huge_integers_are_config_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    status, out = check(tmp_path, text, capsys)
    assert status == 2, out
    assert "internal error" not in out and str(tmp_path) in out


@pytest.mark.parametrize("price", [
    "1e15", "1e308", "1E+999999999", "-0", "1_000", "NaN", "Infinity", "-1", "+1",
    "0x10", "1001", "0.0000000000000000001", " ", "", "1.", ".5", "١",
])
def test_item3_prices_outside_plain_bounded_decimals_are_rejected(price: str) -> None:
    for key in ("glm_per_hour", "init_price"):
        settings, errors = parse_layer({key: price}, "golemwz.toml")
        assert [e.key for e in errors] == [key], price
        assert getattr(settings, key) is None


@pytest.mark.parametrize("raw, expected", [
    ("0.25", "0.25"), ("0", "0"), ("1000", "1000"), (" 2.5 ", "2.5"), (0, "0"), (7, "7"),
    (0.25, "0.25"), (3.0, "3"), ("0.000000000000000001", "0.000000000000000001"),
])
def test_item3_plain_prices_are_accepted(raw: object, expected: str) -> None:
    settings, errors = parse_layer({"glm_per_hour": raw}, "golemwz.toml")
    assert errors == []
    assert settings.glm_per_hour == Decimal(expected)


@pytest.mark.parametrize("value", [10**3000, 1e300, float("inf"), float("nan"), -1, 10**6])
def test_item3_numbers_from_toml_outside_bounds_are_rejected(value: object) -> None:
    _settings, errors = parse_layer({"init_price": value}, "golemwz.toml")
    assert [e.key for e in errors] == ["init_price"]


def test_python_m_golemwz_check_runs_from_a_checkout(tmp_path: Path) -> None:
    """How a person checks a file on a laptop: the standard library and the sources."""
    import subprocess
    import sys

    from conftest import WIZARD_SOURCE

    good = tmp_path / "golemwz.toml"
    good.write_text(FULL_FIRST_BOOT)
    # -S: no site-packages (so no tomli_w): checking must not need the wizard's deps.
    done = subprocess.run([sys.executable, "-S", "-m", "golemwz", "check", str(good)],
                          env={"PYTHONPATH": str(WIZARD_SOURCE)}, capture_output=True,
                          text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, f"{good}: valid"), done.stderr
