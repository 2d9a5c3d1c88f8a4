"""`golem-live write IMAGE DEVICE`: put an image on a stick, safely (disk/write.py)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from builder.errors import BuildError
from builder.mounts import is_root
from builder.runner import SubprocessRunner
from disk.write import (
    BlockDevice,
    Image,
    block_device,
    open_image,
    refusal,
    verify_device,
    write_image,
)

SYSTEM_ROOT = Path("/")


def describe(target: BlockDevice, runner: SubprocessRunner) -> list[str]:
    """What is about to be overwritten: model, size, and each partition with its labels."""
    lines = [f"/dev/{target.name}: {target.model}, {target.size_bytes / 2**30:.1f} GiB"]
    listing = runner.run(["lsblk", "--json", "--bytes", "-o", "NAME,SIZE,PARTLABEL,LABEL,FSTYPE",
                          f"/dev/{target.name}"], capture=True, check=False)
    try:
        disk = json.loads(listing.stdout)["blockdevices"][0]
    except (ValueError, KeyError, IndexError):
        return lines
    for part in disk.get("children", []):
        labels = ", ".join(str(part[k]) for k in ("partlabel", "label", "fstype") if part.get(k))
        lines.append(f"  {part['name']}: {int(part['size']) / 2**20:.0f} MiB"
                     + (f" ({labels})" if labels else ""))
    if len(lines) == 1:
        lines.append("  no partitions")
    return lines


def _xz_lister(runner: SubprocessRunner) -> Callable[[Path], str]:
    def list_xz(path: Path) -> str:
        return runner.run(["xz", "--robot", "--list", str(path)], capture=True).stdout

    return list_xz


@click.command()
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("device", type=click.Path(path_type=Path))
@click.option("--bmap", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Block map (default: IMAGE.bmap when it exists): write only mapped blocks.")
@click.option("--yes", is_flag=True, help="Do not ask before overwriting DEVICE.")
def write(image: Path, device: Path, bmap: Path | None, yes: bool) -> None:
    """Write IMAGE (.img or .img.xz) to the whole disk DEVICE, then read it back to verify."""
    if not is_root():
        raise BuildError("writing a stick needs root (raw access to the device)",
                         f"run it as root: sudo golem-live write {image} {device}")
    runner = SubprocessRunner(Path(os.devnull))
    source: Image = open_image(image, bmap, _xz_lister(runner))
    target = block_device(SYSTEM_ROOT, device.resolve())
    reason = refusal(SYSTEM_ROOT, target, source.size_bytes)
    if reason:
        raise BuildError(reason, "nothing was written")
    for line in describe(target, runner):
        click.echo(line)
    if not yes:
        if not sys.stdin.isatty():
            raise BuildError(f"not overwriting /dev/{target.name} without a confirmation",
                             "run it at a terminal, or add --yes")
        click.confirm(f"Everything on /dev/{target.name} will be lost. Write {image.name}?",
                      abort=True)
    total = sum(length for _, length, _ in source.extents())
    with click.progressbar(length=total, label="writing ", file=sys.stderr) as bar:
        written = write_image(source, Path(f"/dev/{target.name}"), bar.update)
    with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
        verify_device(source, Path(f"/dev/{target.name}"), written, bar.update)
    mapped = " (mapped blocks only)" if source.bmap else ""
    click.echo(f"wrote and verified {total / 2**20:.0f} MiB{mapped} on /dev/{target.name}")
