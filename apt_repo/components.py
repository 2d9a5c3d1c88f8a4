"""The component list (components.toml) as typed, frozen data."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_repo.channels import CHANNELS
from builder.errors import BuildError

COMPONENTS_FILE = Path(__file__).with_name("components.toml")
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Selection:
    """Which release of a component to take: latest whose tag matches `tag`."""

    tag: str
    prerelease: bool

    def matches(self, tag_name: str, is_prerelease: bool) -> bool:
        if is_prerelease and not self.prerelease:
            return False
        return re.search(self.tag, tag_name) is not None


@dataclass(frozen=True)
class Component:
    name: str
    repo: str  # owner/name on GitHub
    selection: Selection
    assets: tuple[str, ...] = ("*.deb",)
    channels: tuple[tuple[str, Selection], ...] = ()  # per-channel overrides

    def for_channel(self, channel: str) -> Selection:
        return dict(self.channels).get(channel, self.selection)


def _selection(data: dict[str, Any], where: str, base: Selection | None = None) -> Selection:
    tag = data.get("tag", base.tag if base else None)
    prerelease = data.get("prerelease", base.prerelease if base else False)
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"{where}: `tag` must be a non-empty string")
    if not isinstance(prerelease, bool):
        raise ValueError(f"{where}: `prerelease` must be true or false")
    try:
        re.compile(tag)
    except re.error as err:
        raise ValueError(f"{where}: `tag` {tag!r} is not a valid regular expression ({err})"
                         ) from None
    return Selection(tag=tag, prerelease=prerelease)


def _component(data: dict[str, Any], index: int) -> Component:
    where = f"component #{index + 1}"
    unknown = set(data) - {"name", "repo", "tag", "prerelease", "assets", "channels"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = data.get("name")
    repo = data.get("repo")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: `name` must be a non-empty string")
    where = f"component {name!r}"
    if not isinstance(repo, str) or not REPO_RE.match(repo):
        raise ValueError(f"{where}: `repo` must be OWNER/NAME")
    assets = data.get("assets", ["*.deb"])
    if not isinstance(assets, list) or not assets or not all(isinstance(a, str) for a in assets):
        raise ValueError(f"{where}: `assets` must be a non-empty list of globs")
    base = _selection(data, where)
    overrides = data.get("channels", {})
    if not isinstance(overrides, dict):
        raise ValueError(f"{where}: `channels` must be a table")
    channels = []
    for channel, table in sorted(overrides.items()):
        if channel not in CHANNELS or not isinstance(table, dict):
            raise ValueError(f"{where}: `channels.{channel}` is not one of "
                             f"{', '.join(CHANNELS)} or not a table")
        channels.append((channel, _selection(table, f"{where} channel {channel}", base)))
    return Component(name=name, repo=repo, selection=base, assets=tuple(assets),
                     channels=tuple(channels))


def parse_components(text: str, source: str = "components.toml") -> tuple[Component, ...]:
    try:
        data = tomllib.loads(text)
        entries = data.get("component", [])
        if not isinstance(entries, list) or not entries:
            raise ValueError("no [[component]] entries")
        components = tuple(_component(entry, i) for i, entry in enumerate(entries))
    except (tomllib.TOMLDecodeError, ValueError) as err:
        raise BuildError(f"{source} is invalid: {err}",
                         "fix it (see the comment at the top of the file)") from None
    names = [c.name for c in components]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BuildError(f"{source} lists {', '.join(duplicates)} more than once",
                         "keep one [[component]] per name")
    return components


def load_components(path: Path = COMPONENTS_FILE) -> tuple[Component, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise BuildError(f"cannot read the component list {path}: {err.strerror}",
                         "restore apt_repo/components.toml") from None
    return parse_components(text, str(path))
