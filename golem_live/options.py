"""What the commands share: the build options, the config and plan they give, and
running a plan with progress lines (build, plan, release, reproduce)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from apt_repo.github import GitHubSettings
from builder.config import BuildConfig, make_config
from builder.pipeline import Plan, execute, make_plan
from builder.preflight import check_root, check_tools
from stages.catalog import stage_list

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TMP_DIR = Path("/var/tmp/golem-gpu-live")
DEFAULT_WORK_DIR = PROJECT_ROOT / "work"



def build_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--profile", "-p", default="golem-provider", show_default=True,
                     help="Profile under rootfs/profiles/."),
        click.option("--version", "image_version", default="dev", show_default=True,
                     help="Version in the image file names."),
        click.option("--tmp-dir", type=click.Path(path_type=Path), default=DEFAULT_TMP_DIR,
                     show_default=True, help="Intermediate stage cache (TMP_DIR)."),
        click.option("--work-dir", type=click.Path(path_type=Path), default=DEFAULT_WORK_DIR,
                     show_default=True, help="Final images (WORK_DIR)."),
        click.option("--local-debs", type=click.Path(path_type=Path), default=None,
                     help="Directory of .deb files standing in for GOLEM's sources."),
        click.option("--github-api", default=None, metavar="URL",
                     help="GitHub API base for GOLEM's releases (a mirror or a test server)."),
        click.option("--github-token", default=None, envvar="GITHUB_TOKEN",
                     show_envvar=True, help="Token for GitHub's API (optional)."),
        click.option("--source-date-epoch", type=int, envvar="SOURCE_DATE_EPOCH",
                     default=None, show_envvar=True,
                     help="Timestamp for the outputs (default: the last commit's date)."),
        click.option("--packages-lock", type=click.Path(path_type=Path), default=None,
                     envvar="PACKAGES_LOCK", show_envvar=True,
                     help="Install exactly the packages of this NAME-VERSION.packages.lock "
                          "(an earlier build's); a difference fails the build."),
        click.option("--debian-mirror", default=None, metavar="URL",
                     help="Debian archive instead of the profile's (e.g. a "
                          "snapshot.debian.org URL, to rebuild an older release)."),
        click.option("--security-mirror", default=None, metavar="URL",
                     help="Security archive instead of the profile's (\"\" for none)."),
        click.option("--offline", is_flag=True,
                     help="Do not look up the Debian archive for newer packages; reuse what "
                          "the last build saw."),
        click.option("--project-root", type=click.Path(path_type=Path), default=PROJECT_ROOT,
                     hidden=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def config_from(options: dict[str, Any]) -> BuildConfig:
    return make_config(options["project_root"], options["profile"], options["image_version"],
                       options["tmp_dir"], options["work_dir"], options["local_debs"],
                       options["source_date_epoch"], options["packages_lock"],
                       options["debian_mirror"], options["security_mirror"])


def github_from(options: dict[str, Any]) -> GitHubSettings:
    token = options["github_token"]
    if options["github_api"]:
        return GitHubSettings(api_url=options["github_api"], token=token)
    return GitHubSettings(token=token)


def plan_from(options: dict[str, Any], config: BuildConfig, until: str | None = None,
              force: tuple[str, ...] = (), offline: bool | None = None) -> Plan:
    plan = make_plan(config, stage_list(config, github_from(options)), until=until, force=force,
                     offline=options["offline"] if offline is None else offline)
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    return plan


def progress_printer() -> Callable[[str], None]:
    started = time.monotonic()

    def show(message: str) -> None:
        click.echo(f"{time.monotonic() - started:7.1f}s {message}", err=True)

    return show


def run_plan(plan: Plan) -> list[Path]:
    """Check what the stages to run need, run them, publish; print the images."""
    config = plan.config
    to_run = [s for s in plan.steps if s.will_run]
    if to_run:
        check_root(True)
        check_tools(t for s in to_run for t in s.stage.tools)
        for step in to_run:
            step.stage.preflight(config)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    published = execute(plan, progress_printer())
    for line in plan.duration_table():
        click.echo(f"  {line}", err=True)
    for path in published:
        click.echo(f"{path} ({path.stat().st_size / 2**20:.0f} MiB)")
    click.echo(f"build finished in {time.monotonic() - started:.1f}s: "
               f"{len(to_run)} of {len(plan.steps)} stages ran", err=True)
    return published
