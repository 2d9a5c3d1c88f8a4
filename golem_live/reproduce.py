"""`golem-live reproduce`: build a version twice from scratch and compare, byte for byte.

Both builds get the same SOURCE_DATE_EPOCH and run cold in their own TMP_DIR and
WORK_DIR. When the images differ, every stage's output is compared in build order
and each stage whose output differs is named with the files that differ in it;
diffoscope, when installed, writes a report for each beside them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from builder.cache import file_digest
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.mounts import safe_rmtree
from builder.runner import SubprocessRunner
from golem_live.options import build_options, config_from, plan_from, run_plan
from release.artifacts import sha256_of

MEDIA = ("usb", "iso")
SHOWN = 10


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            yield str(path.relative_to(root)), path


def differing_files(first: Path, second: Path) -> list[str]:
    """Paths (relative) whose content differs, or that exist on one side only."""
    left = dict(_files(first))
    right = dict(_files(second))
    found = [name for name in sorted(set(left) | set(right))
             if name not in left or name not in right
             or file_digest(left[name]) != file_digest(right[name])]
    return found


def first_byte_difference(first: Path, second: Path) -> int | None:
    offset = 0
    with open(first, "rb") as a, open(second, "rb") as b:
        while True:
            block_a, block_b = a.read(1 << 20), b.read(1 << 20)
            if block_a != block_b:
                for index, (x, y) in enumerate(zip(block_a, block_b, strict=False)):
                    if x != y:
                        return offset + index
                return offset + min(len(block_a), len(block_b))
            if not block_a:
                return None
            offset += len(block_a)


def _entries(options: dict[str, Any], config: BuildConfig) -> list[tuple[str, Path]]:
    plan = plan_from(options, config, offline=True)
    return [(step.stage.name, Path(step.cache.entry(step.key))) for step in plan.steps]


@click.command()
@build_options
@click.option("--keep", is_flag=True, help="Keep both builds (default: removed when equal).")
def reproduce(keep: bool, **kwargs: Any) -> None:
    """Build the profile twice from scratch and check the images are byte-identical."""
    base = Path(kwargs["tmp_dir"]) / "reproduce"
    if base.exists():
        safe_rmtree(base)
    first = config_from(kwargs)
    runs: list[tuple[dict[str, Any], BuildConfig]] = []
    for label in ("a", "b"):
        options = {**kwargs, "tmp_dir": base / label / "tmp", "work_dir": base / label / "work",
                   "source_date_epoch": first.source_date_epoch}
        config = config_from(options)
        click.echo(f"build {label}: {config.tmp_dir} (SOURCE_DATE_EPOCH "
                   f"{config.source_date_epoch})", err=True)
        run_plan(plan_from(options, config))
        runs.append((options, config))
    (opts_a, config_a), (opts_b, config_b) = runs
    different = []
    for media in MEDIA:
        image_a = config_a.work_dir / config_a.image_file(media)
        image_b = config_b.work_dir / config_b.image_file(media)
        offset = first_byte_difference(image_a, image_b)
        if offset is None:
            click.echo(f"{image_a.name}: identical (sha256 {sha256_of(image_a)})")
        else:
            different.append(media)
            click.echo(f"{image_a.name}: differs from byte {offset}")
    if not different:
        click.echo("reproducible: both builds are byte-identical")
        if not keep:
            safe_rmtree(base)
        return
    _explain(_entries(opts_a, config_a), _entries(opts_b, config_b), base)
    raise BuildError(f"the builds differ ({', '.join(different)})",
                     f"see the stage named above; both builds are kept under {base}")


def _explain(entries_a: list[tuple[str, Path]], entries_b: list[tuple[str, Path]],
             base: Path) -> None:
    """Every stage whose output differs, in build order, with its first differing files.
    An early stage's difference may be harmless (logs a later stage removes): the last
    stage listed before the images is usually the one to look at."""
    for (stage, entry_a), (_, entry_b) in zip(entries_a, entries_b, strict=True):
        files = differing_files(entry_a, entry_b)
        if not files:
            click.echo(f"stage {stage}: same output")
            continue
        click.echo(f"stage {stage}: {len(files)} files differ")
        for name in files[:SHOWN]:
            click.echo(f"  {name}")
        if shutil.which("diffoscope"):
            report = base / f"diffoscope-{stage}.txt"
            SubprocessRunner(base / "diffoscope.log").run(
                ["diffoscope", "--text", str(report), str(entry_a / files[0]),
                 str(entry_b / files[0])], check=False)
            click.echo(f"  diffoscope report: {report}")
