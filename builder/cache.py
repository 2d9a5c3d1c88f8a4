"""Content-addressed stage cache.

Layout per stage, under a cache root:
    <root>/<stage>/<key>/          the committed output (a directory)
    <root>/<stage>/<key>.json      its manifest: every input that went into the key
    <root>/<stage>/last.json       the manifest of the most recent build (for diffs)
    <root>/<stage>/.tmp-*          work in progress; never read, swept on start

An entry exists only once its directory has been renamed into place, so a build
killed at any point leaves at most a .tmp-* directory that no lookup ever uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.mounts import safe_rmtree

MANIFEST_FORMAT = 1
KEEP_ENTRIES = 2  # per stage: the newest and the one before, so a revert is instant


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes alone."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's content (links by target, directories by their files)."""
    digest = hashlib.sha256()
    if path.is_symlink():
        digest.update(b"link:" + os.readlink(path).encode())
    elif path.is_dir():
        for child in sorted(p for p in path.rglob("*") if not p.is_dir() or p.is_symlink()):
            digest.update(str(child.relative_to(path)).encode() + b"\0")
            digest.update(file_digest(child).encode())
    elif path.exists():
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"mode:%o" % (path.stat().st_mode & 0o111))
    else:
        digest.update(b"missing")
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    stage: str
    version: int
    config: dict[str, Any]  # dotted key -> value
    files: dict[str, str]  # path (relative to the project when inside it) -> sha256
    deps: dict[str, str]  # dependency stage -> its key
    # State of outside sources resolved at plan time (Stage.resolved_inputs), e.g. the
    # hashes of the Debian archive's package indexes.
    resolved: dict[str, str] = field(default_factory=dict)

    def key(self) -> str:
        fields = asdict(self)
        if not self.resolved:  # keys of stages without resolved inputs stay as they were
            del fields["resolved"]
        payload = canonical_json({"format": MANIFEST_FORMAT, **fields})
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def to_json(self) -> str:
        return json.dumps({"key": self.key(), **asdict(self)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(stage=data["stage"], version=data["version"], config=data["config"],
                   files=data["files"], deps=data["deps"], resolved=data.get("resolved", {}))

    def changes_since(self, previous: Manifest | None) -> list[str]:
        """Human-readable list of what differs from a previous build of the stage."""
        if previous is None:
            return ["never built"]
        changes: list[str] = []
        if previous.version != self.version:
            changes.append(f"stage version {previous.version} -> {self.version}")
        for key in sorted(set(previous.config) | set(self.config)):
            if previous.config.get(key) != self.config.get(key):
                changes.append(f"config {key}")
        for path in sorted(set(previous.files) | set(self.files)):
            if path not in previous.files:
                changes.append(f"file added {path}")
            elif path not in self.files:
                changes.append(f"file removed {path}")
            elif previous.files[path] != self.files[path]:
                changes.append(f"file changed {path}")
        for name in sorted(set(previous.resolved) | set(self.resolved)):
            if previous.resolved.get(name) != self.resolved.get(name):
                changes.append(f"source changed {name}")
        for dep in sorted(set(previous.deps) | set(self.deps)):
            if previous.deps.get(dep) != self.deps.get(dep):
                changes.append(f"input stage {dep} changed")
        return changes


# The checkout the builder's own code runs from (may differ from a build's project root).
CODE_ROOT = Path(__file__).resolve().parent.parent


def _file_name(path: Path, roots: Iterable[Path]) -> str:
    """Relative names, so a key does not depend on where the checkout lives."""
    resolved = path.resolve()
    for root in roots:
        try:
            return str(resolved.relative_to(root))
        except ValueError:
            continue
    return str(path)


def make_manifest(stage: str, version: int, config: dict[str, Any], files: Iterable[Path],
                  deps: dict[str, str], project_root: Path,
                  code: Iterable[Path] = (), resolved: dict[str, str] | None = None) -> Manifest:
    digests = {_file_name(p, [project_root]): file_digest(p) for p in files}
    digests.update({"code:" + _file_name(p, [CODE_ROOT]): file_digest(p) for p in code})
    # As JSON gives it back (tuples as lists): a manifest read from the cache then
    # compares equal value by value, so `plan` names only what really changed.
    plain_config = json.loads(canonical_json(config))
    return Manifest(stage, version, plain_config, digests, dict(deps), dict(resolved or {}))


class StageCache:
    """The entries of one stage."""

    def __init__(self, root: Path, stage: str) -> None:
        self.dir = root / stage

    def entry(self, key: str) -> Path:
        return self.dir / key

    def has(self, key: str) -> bool:
        return self.entry(key).is_dir() and (self.dir / f"{key}.json").is_file()

    def manifest(self, key: str) -> Manifest:
        """What the entry `key` was built from."""
        return Manifest.from_json((self.dir / f"{key}.json").read_text())

    def last_manifest(self) -> Manifest | None:
        try:
            return Manifest.from_json((self.dir / "last.json").read_text())
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def new_temp(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.dir))

    def commit(self, temp: Path, manifest: Manifest) -> Path:
        """Atomically make `temp` the entry for the manifest's key."""
        key = manifest.key()
        target = self.entry(key)
        _write_atomic(self.dir / f"{key}.json", manifest.to_json())
        if target.exists():  # a forced rebuild replaces the entry
            trash = self.dir / f".tmp-old-{key}"
            os.rename(target, trash)
            os.rename(temp, target)
            safe_rmtree(trash)
        else:
            os.rename(temp, target)
        _write_atomic(self.dir / "last.json", manifest.to_json())
        self.prune(keep={key})
        return target

    def mark_used(self, manifest: Manifest) -> None:
        """A cache hit becomes the 'last build' that later diffs compare against."""
        _write_atomic(self.dir / "last.json", manifest.to_json())
        os.utime(self.entry(manifest.key()))

    def sweep_temps(self) -> list[Path]:
        removed = []
        if self.dir.is_dir():
            for temp in self.dir.glob(".tmp-*"):
                safe_rmtree(temp)
                removed.append(temp)
        return removed

    def prune(self, keep: set[str]) -> None:
        entries = sorted((p for p in self.dir.iterdir() if p.is_dir()
                          and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        survivors = {p.name for p in entries[:KEEP_ENTRIES]} | keep
        for entry in entries:
            if entry.name not in survivors:
                safe_rmtree(entry)
                (self.dir / f"{entry.name}.json").unlink(missing_ok=True)

    def clear(self) -> None:
        if self.dir.exists():
            safe_rmtree(self.dir)


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".tmp-{path.name}")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def remove_tree(path: Path) -> None:
    """Remove a directory tree that is not a mount point and has none below it."""
    if path.is_dir() and not path.is_symlink():
        safe_rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

