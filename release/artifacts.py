"""The files a release publishes, made from a build's images.

For a version V of the USB image NAME (golem-gpu-live-V):
    NAME.img.xz           the USB image, multi-threaded xz (what the imager downloads)
    NAME.bmap             bmaptool's block map of NAME.img (write only mapped blocks)
    NAME.iso              the hybrid ISO
    NAME.packages.lock    package version sha256 of everything the image installed
    meta.json             GOLEM's imager index (release/meta.schema.json), this version added
    SHA256SUMS            over all of the above
    SHA256SUMS.asc        its detached signature by the repository's signing key

Everything is written to a temporary name and renamed into place, so an interrupted
release leaves no half-written artifact under its final name.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_repo.channels import CHANNELS
from apt_repo.keys import SigningKey, open_gpg
from builder.cache import sha256_of
from builder.errors import BuildError
from builder.runner import Runner

SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.asc"
META = "meta.json"


def _into_place(temp: Path, final: Path) -> Path:
    os.replace(temp, final)
    return final


def _temp(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def compress(runner: Runner, image: Path, out: Path) -> Path:
    """xz -T0 (all cores) beside the image (xz removes its partial output when killed),
    tested, then moved into `out`."""
    final = out / f"{image.name}.xz"
    beside = image.with_name(f"{image.name}.xz")
    runner.run(["xz", "-T0", "-6", "--keep", "--force", "--", str(image)])
    try:
        runner.run(["xz", "--test", "--", str(beside)])
        return _into_place(beside, final)
    finally:
        beside.unlink(missing_ok=True)


def block_map(runner: Runner, image: Path, out: Path) -> Path:
    final = out / f"{image.name.removesuffix('.img')}.bmap"
    temp = _temp(final)
    runner.run(["bmaptool", "create", "--output", str(temp), str(image)])
    return _into_place(temp, final)


def copy_into(source: Path, out: Path, name: str | None = None) -> Path:
    final = out / (name or source.name)
    temp = _temp(final)
    shutil.copyfile(source, temp)
    return _into_place(temp, final)


# --- the imager's index -------------------------------------------------------------


@dataclass(frozen=True)
class MetaVersion:
    id: str
    path: str
    sha256: str
    created: str


def created_stamp(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def check_meta(data: Any) -> None:
    """What release/meta.schema.json says, checked without a schema library (the builder's
    runtime); the tests validate the same files against the schema itself."""
    def bad(why: str) -> BuildError:
        return BuildError(f"meta.json is not in the imager's format: {why}",
                          "fix or remove the previous meta.json (--previous-meta)")

    if not isinstance(data, dict) or set(data) != {"channels"} or \
            not isinstance(data["channels"], list):
        raise bad("expected {\"channels\": [...]}")
    for channel in data["channels"]:
        if not isinstance(channel, dict) or set(channel) != {"name", "versions"}:
            raise bad("a channel is {name, versions}")
        if channel["name"] not in CHANNELS or not isinstance(channel["versions"], list):
            raise bad(f"unknown channel {channel.get('name')!r}")
        for version in channel["versions"]:
            if not isinstance(version, dict) or \
                    set(version) != {"id", "path", "sha256", "created"} or \
                    not all(isinstance(v, str) for v in version.values()):
                raise bad("a version is {id, path, sha256, created}, all strings")


def updated_meta(previous: dict[str, Any] | None, channel: str,
                 version: MetaVersion) -> dict[str, Any]:
    """`previous` with `version` added to `channel` (replacing one with the same id);
    versions oldest first, channels in the order release, testing, unstable."""
    data = previous if previous is not None else {"channels": []}
    check_meta(data)
    channels = {c["name"]: list(c["versions"]) for c in data["channels"]}
    kept = [v for v in channels.get(channel, []) if v["id"] != version.id]
    channels[channel] = sorted([*kept, vars(version)], key=lambda v: (v["created"], v["id"]))
    result = {"channels": [{"name": name, "versions": channels[name]}
                           for name in CHANNELS if name in channels]}
    check_meta(result)
    return result


def write_meta(out: Path, meta: dict[str, Any]) -> Path:
    final = out / META
    temp = _temp(final)
    temp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return _into_place(temp, final)


# --- checksums and their signature --------------------------------------------------


def write_sums(out: Path, files: list[Path], progress: Callable[[str], None]) -> Path:
    lines = []
    for path in sorted(files, key=lambda p: p.name):
        progress(f"sha256 {path.name}")
        lines.append(f"{sha256_of(path)}  {path.name}\n")
    final = out / SUMS
    temp = _temp(final)
    temp.write_text("".join(lines))
    return _into_place(temp, final)


def sign(key: SigningKey, sums: Path) -> Path:
    final = sums.with_name(SIGNATURE)
    temp = _temp(final)
    gpg = open_gpg(key.gnupghome)
    with open(sums, "rb") as handle:
        result = gpg.sign_file(handle, keyid=key.fingerprint, detach=True, binary=False,
                               output=str(temp))
    if not result or not temp.is_file() or temp.stat().st_size == 0:
        temp.unlink(missing_ok=True)
        reason = (result.stderr or "").strip().splitlines()[-1:] if result else []
        raise BuildError(f"gpg could not sign {sums.name}: {reason[0] if reason else '?'}",
                         f"check the key with gpg --homedir {key.gnupghome} -K")
    return _into_place(temp, final)
