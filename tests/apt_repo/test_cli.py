"""`golem-live repo key|build|channel`: results, and every failure as one line."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from apt_repo.cli import repo
from apt_repo.keys import SigningKey

from .conftest import make_deb, need_tools

CLEAN_ENV = {"GNUPGHOME": None, "GITHUB_TOKEN": None, "SOURCE_DATE_EPOCH": None}


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(repo, list(args), env={**CLEAN_ENV, **(env or {})})


def assert_one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: ")
    assert text in result.output, result.output


def test_channel_command() -> None:
    assert invoke("channel", "refs/tags/v1.0").output == "release\n"
    assert invoke("channel", "refs/tags/testing-7").output == "testing\n"
    assert invoke("channel", "refs/heads/main").output == "unstable\n"


@pytest.mark.tools
def test_key_creates_key_outside_and_exports_public_part(tmp_path: Path,
                                                         project: Path) -> None:
    need_tools("gpg", "gpgconf")
    home = tmp_path / "gh"
    try:
        _check_key_command(tmp_path, project, home)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _check_key_command(tmp_path: Path, project: Path, home: Path) -> None:
    before = _files(project)
    result = invoke("key", "--name", "GOLEM repo", "--email", "repo@example.org", "--ed25519",
                    "--project-root", str(project), env={"GNUPGHOME": str(home)})
    assert result.exit_code == 0, result.output
    fingerprint = result.stdout.strip()
    assert len(fingerprint) == 40
    keyring = project / "rootfs/keys/golem-gpu-live.gpg"
    (tmp_path / "empty").mkdir(mode=0o700)
    shown = subprocess.run(["gpg", "--homedir", str(tmp_path / "empty"), "--show-keys",
                            "--with-colons", str(keyring)], capture_output=True, text=True,
                           check=True).stdout
    assert f"fpr:::::::::{fingerprint}:" in shown
    assert "\nsec:" not in shown and not shown.startswith("sec:")
    assert "export-secret-keys" in result.stderr and "APT_GPG_KEY" in result.stderr
    listed = subprocess.run(["gpg", "--homedir", str(home), "-K", "--with-colons"],
                            capture_output=True, text=True, check=True).stdout
    assert fingerprint in listed  # the secret key lives in GNUPGHOME only
    assert _files(project) - before == {"rootfs/keys/golem-gpu-live.gpg"}


def test_key_refuses_gnupghome_inside_the_project(project: Path) -> None:
    result = invoke("key", "--name", "x", "--email", "x@example.org", "--project-root",
                    str(project), "--gnupghome", str(project / ".gnupg"))
    assert_one_line_error(result, "is inside the project")
    assert not (project / ".gnupg").exists()


def test_build_without_any_secret_key(tmp_path: Path, project: Path) -> None:
    result = invoke("build", "--no-github", "--gnupghome", str(tmp_path / "empty"),
                    "--project-root", str(project))
    assert_one_line_error(result, f"no secret key in {tmp_path / 'empty'} — create one with "
                                  "`golem-live repo key`")


@pytest.mark.tools
def test_build_with_unknown_key(signing_key: SigningKey, project: Path) -> None:
    result = invoke("build", "--no-github", "--key", "0123456789ABCDEF0123",
                    "--project-root", str(project), env={"GNUPGHOME": str(
                        signing_key.gnupghome)})
    assert_one_line_error(result, "no secret key 0123456789ABCDEF0123 in")


def test_build_refuses_a_stale_source_date_epoch(project: Path) -> None:
    stale = str(int(time.time()) - 40 * 86400)
    result = invoke("build", "--no-github", "--project-root", str(project),
                    env={"SOURCE_DATE_EPOCH": stale})
    assert_one_line_error(result, f"SOURCE_DATE_EPOCH {stale} is more than 30 days ago")


@pytest.mark.tools
def test_build_with_empty_packages_dir(signing_key: SigningKey, project: Path,
                                       tmp_path: Path) -> None:
    (tmp_path / "debs").mkdir()
    result = invoke("build", "--no-github", "--packages-dir", str(tmp_path / "debs"),
                    "--gnupghome", str(signing_key.gnupghome), "--work-dir",
                    str(tmp_path / "work"), "--project-root", str(project))
    assert_one_line_error(result, f"no .deb files in {tmp_path / 'debs'}")


@pytest.mark.tools
def test_build_local_only_and_check_against_project_keyring(
        signing_key: SigningKey, other_key: SigningKey, project: Path,
        tmp_path: Path) -> None:
    """--no-github: the wizard + local .debs; a project keyring of another key fails it."""
    need_tools()
    debs = tmp_path / "debs"
    debs.mkdir()
    for package in ("golem-provider", "ya-runtime-vm-nvidia", "golem-nvidia-kernel",
                    "ya-runtime-wasi-cli", "ya-installer-resources"):
        make_deb(debs, package, "1.0", "amd64")
    args = ["build", "--no-github", "--packages-dir", str(debs), "--channel", "testing",
            "--gnupghome", str(signing_key.gnupghome), "--work-dir", str(tmp_path / "work"),
            "--project-root", str(project)]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "work/repo/testing"
    assert len(list(out.glob("dists/*/InRelease"))) == 1
    assert (out / "pool/main/g/golemwz").is_dir() and (out / "golem-gpu-live.gpg").is_file()
    assert "warning: " in result.stderr and "does not exist" in result.stderr
    assert not list(out.glob("*.log"))  # logs stay under WORK_DIR/logs, not in the site

    keyring = project / "rootfs/keys/golem-gpu-live.gpg"
    keyring.parent.mkdir(parents=True)
    keyring.write_bytes(subprocess.run(["gpg", "--homedir", str(other_key.gnupghome),
                                        "--export", other_key.fingerprint],
                                       capture_output=True, check=True).stdout)
    assert_one_line_error(invoke(*args), f"gpgv does not accept InRelease with the public key "
                                         f"{keyring}")
