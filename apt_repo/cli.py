"""`golem-live repo ...`: the maintainer's commands for the signed APT repository.

Attach with `main.add_command(repo)` (from apt_repo.cli import repo). The
environment is read here and nowhere else: GNUPGHOME (gpg's own variable),
SOURCE_DATE_EPOCH and GITHUB_TOKEN, each as the default of an explicit option.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import click

from apt_repo.archive import ArchiveSpec
from apt_repo.assemble import RepoRequest, build_repository, write_manifest
from apt_repo.channels import CHANNELS, channel_for_ref
from apt_repo.components import COMPONENTS_FILE, load_components
from apt_repo.debpkg import WizardPackage
from apt_repo.github import DEFAULT_API, GitHubClient, GitHubSettings
from apt_repo.keys import (
    PROJECT_KEYRING,
    KeySpec,
    SigningKey,
    check_outside,
    create_key,
    default_gnupghome,
    export_public,
    resolve_signing_key,
    secret_export_hint,
)
from builder.config import load_profile
from builder.errors import BuildError
from builder.runner import SubprocessRunner

PUBLIC_KEY_NAME = "golem-gpu-live.gpg"  # published next to dists/ and pool/
PROJECT_ROOT = Path(__file__).resolve().parents[2]
F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(func: F) -> F:
    """BuildError → click's one-line `Error: ...` and exit status 1, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BuildError as err:
            raise click.ClickException(err.line()) from None

    return wrapper  # type: ignore[return-value]


def _gnupghome_option(func: F) -> F:
    return click.option("--gnupghome", type=click.Path(path_type=Path), envvar="GNUPGHOME",
                        default=None, show_envvar=True,
                        help="GnuPG home holding the secret key (default: ~/.gnupg).")(func)


def _project_option(func: F) -> F:
    return click.option("--project-root", type=click.Path(file_okay=False, path_type=Path),
                        default=PROJECT_ROOT, hidden=True)(func)


def _project_version() -> str:
    try:
        return metadata.version("golem-gpu-live")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _project_keyring(project_root: Path, profile: str) -> Path:
    """The public keyring images of `profile` carry (its golem.keyring, under the project)."""
    configured = load_profile(project_root, profile).golem.keyring
    return project_root / (configured or PROJECT_KEYRING)


@click.group("repo")
def repo() -> None:
    """The signed APT repository with GOLEM's components."""


@repo.command("key")
@click.option("--name", required=True, help="Real name on the key.")
@click.option("--email", required=True, help="E-mail address on the key.")
@click.option("--expire", default="3y", show_default=True,
              help="gpg expiry (e.g. 2y, 0 = never); renew before it passes.")
@click.option("--ed25519", is_flag=True, help="Ed25519 instead of RSA 4096.")
@click.option("--export", "export_to", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Public keyring to write (default: the profile's golem.keyring).")
@click.option("--profile", default="golem-provider", show_default=True,
              help="Profile whose golem.keyring receives the public key.")
@_gnupghome_option
@_project_option
@one_line_errors
def key_command(name: str, email: str, expire: str, ed25519: bool, export_to: Path | None,
                profile: str, gnupghome: Path | None, project_root: Path) -> None:
    """Create the signing key in GNUPGHOME and export its public part for the image."""
    home = gnupghome or default_gnupghome(None)
    check_outside(home, project_root)
    dest = export_to or _project_keyring(project_root, profile)
    fingerprint = create_key(home, KeySpec(name=name, email=email, expire=expire,
                                           ed25519=ed25519))
    key = SigningKey(home, fingerprint)
    export_public(key, dest)
    click.echo(fingerprint)
    click.echo(f"public key written to {dest}; the secret key stays in {home}", err=True)
    click.echo(f"for CI, store the output of `{secret_export_hint(key)}` "
               "as the repository secret APT_GPG_KEY", err=True)


@repo.command("channel")
@click.argument("ref")
def channel_command(ref: str) -> None:
    """Print the channel of a git ref: v* → release, testing* → testing, else unstable."""
    click.echo(channel_for_ref(ref))


@repo.command("build")
@click.option("--channel", type=click.Choice(CHANNELS), default="release", show_default=True)
@click.option("--packages-dir", "packages_dirs", multiple=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="A directory of .deb files to include (repeatable).")
@click.option("--key", "fingerprint", default=None,
              help="Fingerprint of the signing key (default: the only secret key).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Repository root to write (default: WORK_DIR/repo/CHANNEL).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="WORK_DIR (default: PROJECT/work); logs go to WORK_DIR/logs.")
@click.option("--profile", default="golem-provider", show_default=True,
              help="Profile whose suite, architecture and GOLEM packages the repository serves.")
@click.option("--codename", default=None,
              help="Debian codename in dists/ (default: the profile's suite).")
@click.option("--valid-days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Valid-Until = Date + this; re-publish more often than that.")
@click.option("--github/--no-github", "use_github", default=True,
              help="Fetch the components of components.toml from GitHub releases.")
@click.option("--github-api", default=DEFAULT_API, show_default=True)
@click.option("--github-token", envvar="GITHUB_TOKEN", default=None, show_envvar=True,
              help="Optional token (raises the API rate limit).")
@click.option("--source-date-epoch", type=int, envvar="SOURCE_DATE_EPOCH", default=None,
              show_envvar=True, help="Release Date (default: now).")
@click.option("--keyring", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also verify against this public keyring (default: the profile's "
                   "golem.keyring if it exists), i.e. the key images carry.")
@click.option("--wizard-version", default=None, help="Version of the golemwz package.")
@_gnupghome_option
@_project_option
@one_line_errors
def build_command(channel: str, packages_dirs: tuple[Path, ...], fingerprint: str | None,
                  output: Path | None, work_dir: Path | None, profile: str, codename: str | None,
                  valid_days: int,
                  use_github: bool, github_api: str, github_token: str | None,
                  source_date_epoch: int | None, keyring: Path | None,
                  wizard_version: str | None, gnupghome: Path | None,
                  project_root: Path) -> None:
    """Build, sign and verify the repository of one channel."""
    now = int(time.time())
    date = now if source_date_epoch is None else source_date_epoch
    if date + valid_days * 86400 <= now:
        raise BuildError(f"SOURCE_DATE_EPOCH {date} is more than {valid_days} days ago: the "
                         "repository would be expired (Valid-Until) before it is published",
                         "set SOURCE_DATE_EPOCH=$(date +%s) or unset it")
    served = load_profile(project_root, profile)
    key = resolve_signing_key(gnupghome or default_gnupghome(None), fingerprint)
    work_dir = work_dir or project_root / "work"
    root = output or work_dir / "repo" / channel
    project_keyring = keyring or _project_keyring(project_root, profile)
    if keyring is not None and not keyring.is_file():
        raise BuildError(f"keyring {keyring} does not exist", "check --keyring")
    extra = (project_keyring,) if project_keyring.is_file() else ()
    request = RepoRequest(
        project_root=project_root,
        spec=ArchiveSpec(date=date, valid_days=valid_days, suite=channel,
                         codename=codename or served.debian.suite,
                         architectures=(served.debian.arch,),
                         description=f"GOLEM provider components for golem-gpu-live "
                                     f"({channel} channel)"),
        wizard=WizardPackage(version=wizard_version or _project_version()),
        packages_dirs=packages_dirs,
        components=load_components(COMPONENTS_FILE) if use_github else (),
        required=("golemwz", *served.golem.packages),
    )
    client = GitHubClient(GitHubSettings(api_url=github_api, token=github_token))
    root.mkdir(parents=True, exist_ok=True)
    runner = SubprocessRunner(work_dir / "logs" / f"repo-{channel}.log")
    outcome = build_repository(runner, request, root, key, root / PUBLIC_KEY_NAME, client,
                               progress=lambda line: click.echo(line, err=True),
                               extra_keyrings=extra)
    write_manifest(root / "manifest.json", outcome)
    if not extra:
        click.echo(f"warning: {project_keyring} does not exist; images built from this "
                   "checkout will not trust the repository (run `golem-live repo key`)",
                   err=True)
    click.echo(f"{root}: {len(outcome.archive.packages)} packages, signed by "
               f"{outcome.archive.fingerprint}, verified with gpgv")


if __name__ == "__main__":  # python -m apt_repo.cli ...
    repo()
