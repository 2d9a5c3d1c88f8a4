"""`golem-live release`: the published files of a built version (release/artifacts.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import click

from apt_repo.channels import CHANNELS
from apt_repo.keys import default_gnupghome, resolve_signing_key
from builder.errors import BuildError
from builder.pipeline import Plan
from builder.publish import is_current
from builder.runner import SubprocessRunner
from golem_live.options import build_options, config_from, plan_from
from release.artifacts import (
    META,
    MetaVersion,
    block_map,
    compress,
    copy_into,
    created_stamp,
    sha256_of,
    sign,
    updated_meta,
    write_meta,
    write_sums,
)
from stages.packages import LOCK_FILE

RELEASE_TOOLS = ("xz", "bmaptool")


def _built_file(plan: Plan, stage_name: str, file_name: str) -> Path:
    step = plan.step(stage_name)
    if not step.cached:
        raise BuildError(f"version {plan.config.version} of profile {plan.config.profile.name} "
                         f"is not built (stage {stage_name} is not cached)",
                         "build it first: make image (same PROFILE and VERSION)")
    return Path(step.cache.entry(step.key)) / file_name


def _previous_meta(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError) as err:
        raise BuildError(f"cannot read the previous meta.json {path}: {err}",
                         "give a valid file or leave --previous-meta out") from None


@click.command()
@build_options
@click.option("--channel", type=click.Choice(CHANNELS), default="release", show_default=True,
              help="The imager's channel this version is listed in.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Where the release files go (default: WORK_DIR/release).")
@click.option("--previous-meta", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="The published meta.json to add this version to.")
@click.option("--gnupghome", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="GNUPGHOME holding the repository's signing key (default: GNUPGHOME).")
@click.option("--key", "key_id", default=None, help="Fingerprint of the signing key.")
def release(channel: str, out_dir: Path | None, previous_meta: Path | None,
            gnupghome: Path | None, key_id: str | None, **kwargs: Any) -> None:
    """Compress, map, checksum and sign the built images of a version for publishing."""
    missing = [tool for tool in RELEASE_TOOLS if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"missing host tool(s): {', '.join(missing)}",
                         "install them: apt-get install xz-utils bmap-tools (or make deps)")
    config = config_from(kwargs)
    key = resolve_signing_key(gnupghome or default_gnupghome(os.environ.get("GNUPGHOME")),
                              key_id)
    # Offline: the release is of what was built, whatever the archive serves today.
    plan = plan_from(kwargs, config, offline=True)
    image = config.work_dir / config.image_file("usb")
    iso = config.work_dir / config.image_file("iso")
    _built_file(plan, "usb", config.image_file("usb"))
    lock = _built_file(plan, "packages", LOCK_FILE)
    for published in (image, iso):
        if not published.is_file():
            raise BuildError(f"{published} is missing", "build it first: make image")
    # The publish record says whether the copy is the entry's, untouched since (no need
    # to hash two 500 MB images).
    if not is_current(image, plan.step("usb").key):
        raise BuildError(f"{image.name} in WORK_DIR differs from the build's image (edited?)",
                         "rebuild to publish the pristine image: make image")
    out = out_dir or config.work_dir / "release"
    out.mkdir(parents=True, exist_ok=True)
    runner = SubprocessRunner(config.tmp_dir / "logs" / "release.log",
                              echo=lambda line: click.echo(f"  $ {line}", err=True))

    def say(message: str) -> None:
        click.echo(message, err=True)

    say(f"compressing {image.name} (xz, all cores)")
    compressed = compress(runner, image, out)
    say("block map")
    bmap = block_map(runner, image, out)
    files = [compressed, bmap, copy_into(iso, out),
             copy_into(lock, out, f"{config.image_name}.packages.lock")]
    version = MetaVersion(id=config.version, path=compressed.name,
                          sha256=sha256_of(compressed),
                          created=created_stamp(config.source_date_epoch))
    meta = write_meta(out, updated_meta(_previous_meta(previous_meta or out / META),
                                        channel, version))
    sums = write_sums(out, [*files, meta], say)
    signature = sign(key, sums)
    for path in [*files, meta, sums, signature]:
        click.echo(str(path))

