"""What several stages share (not a stage): the live medium's file names and the
template engine. Stages still never import each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from builder.errors import BuildError

# What GRUB and live-boot need in live/; anything else there (filesystem.size, ...)
# goes along onto the ISO and the USB image.
LIVE_FILES = ("vmlinuz", "initrd.img", "filesystem.squashfs")
# In the packages stage's output: the date (SOURCE_DATE_EPOCH) its chroot used, the
# Debian archive's; the packages layer of the squashfs is dated by it.
ARCHIVE_EPOCH_FILE = "archive-date"


def require_live_files(squashfs_out: Path) -> None:
    """The squashfs stage's output must hold the live medium before media are made of it."""
    for name in LIVE_FILES:
        if not (squashfs_out / "live" / name).exists():
            raise BuildError(f"the squashfs stage output lacks live/{name}",
                             "rebuild it: golem-live build --force squashfs")


def render_template(source: Path, context: dict[str, Any]) -> str:
    """Render a jinja2 file; an undefined name is an error, not an empty string."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    try:
        return env.from_string(source.read_text()).render(context)
    except jinja2.TemplateError as err:
        raise BuildError(f"template {source} failed to render: {err}",
                         "fix the template or the profile value it uses") from None
