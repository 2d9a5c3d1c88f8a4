"""GOLEM's GitHub releases: pick the latest release whose tag matches, download its .debs.

Every request is bounded (attempts × timeout); transient failures (connection
errors, timeouts, HTTP 429/5xx, truncated downloads) are retried with
exponential backoff. Everything else ends in one BuildError line.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from apt_repo.components import Component, Selection
from builder.errors import BuildError

DEFAULT_API = "https://api.github.com"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
NO_NETWORK_FIX = ("check the network (or set GITHUB_TOKEN if rate-limited), "
                  "or build from a directory of .deb files instead (--packages-dir / LOCAL_DEBS)")
T = TypeVar("T")
# Checksum files a release may carry next to its .debs, when the API gives no digest.
SUMS_NAMES = ("SHA256SUMS", "SHA256SUMS.txt", "sha256sums.txt", "checksums.txt")
MAX_SUMS_BYTES = 1 << 20
_SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *]?(\S+)")


@dataclass(frozen=True)
class GitHubSettings:
    api_url: str = DEFAULT_API
    token: str | None = field(default=None, repr=False)
    attempts: int = 4
    backoff: float = 1.0  # seconds before the 2nd attempt, doubled for each further one
    timeout: float = 30.0  # per connect/read
    max_pages: int = 5  # of 100 releases each


@dataclass(frozen=True)
class Asset:
    name: str
    url: str
    size: int
    sha256: str | None  # from the API's `digest` field, when GitHub gives one


@dataclass(frozen=True)
class Release:
    tag: str
    prerelease: bool
    draft: bool
    published: str  # ISO 8601, sorts as text
    assets: tuple[Asset, ...]


@dataclass(frozen=True)
class Fetched:
    component: str
    repo: str
    tag: str
    files: tuple[Path, ...]
    # (file name, source URL, verified SHA-256) per file, for the repository's manifest
    sources: tuple[tuple[str, str, str], ...] = ()


class _Transient(Exception):
    """A failure worth another attempt; str() is the reason shown if all attempts fail."""


def _reason(err: BaseException) -> str:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, requests.Timeout):
        return "timed out"
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text[:120]}" if text else type(err).__name__


def _asset(data: dict[str, Any]) -> Asset:
    digest = data.get("digest")
    sha256 = digest[len("sha256:"):].lower() if isinstance(digest, str) and \
        digest.startswith("sha256:") else None
    return Asset(name=str(data["name"]), url=str(data["browser_download_url"]),
                 size=int(data["size"]), sha256=sha256)


def _release(data: dict[str, Any]) -> Release:
    return Release(tag=str(data["tag_name"]), prerelease=bool(data.get("prerelease")),
                   draft=bool(data.get("draft")),
                   published=str(data.get("published_at") or data.get("created_at") or ""),
                   assets=tuple(_asset(a) for a in data.get("assets", [])))


def select_release(releases: list[Release], selection: Selection, repo: str) -> Release:
    """The latest non-draft release whose tag matches (prereleases only if allowed)."""
    candidates = [r for r in releases
                  if not r.draft and selection.matches(r.tag, r.prerelease)]
    if not candidates:
        newest = [r.tag for r in sorted(releases, key=lambda r: r.published, reverse=True)
                  if not r.draft][:5]
        scope = "" if selection.prerelease else " (prereleases excluded)"
        raise BuildError(
            f"no release of {repo} has a tag matching {selection.tag!r}{scope}; "
            f"newest tags: {', '.join(newest) or 'none'}",
            "adjust the pattern in apt_repo/components.toml")
    return max(candidates, key=lambda r: (r.published, r.tag))


def select_assets(release: Release, globs: tuple[str, ...], repo: str) -> list[Asset]:
    chosen = [a for a in release.assets if any(fnmatch.fnmatchcase(a.name, g) for g in globs)]
    if not chosen:
        raise BuildError(
            f"release {release.tag} of {repo} has no asset matching {', '.join(globs)}",
            "fix `assets` of the component in apt_repo/components.toml")
    for asset in chosen:
        if "/" in asset.name or asset.name.startswith(".") or not asset.name.endswith(".deb"):
            raise BuildError(f"release {release.tag} of {repo} has an unusable asset name "
                             f"{asset.name!r}", "narrow `assets` to the .deb files")
    return chosen


def parse_sums(text: str) -> dict[str, str]:
    """`sha256sum` output ("HEX  name" or "HEX *name") as {name: hex}; other lines ignored."""
    sums = {}
    for line in text.splitlines():
        match = _SUMS_LINE.fullmatch(line.strip())
        if match:
            sums[match.group(2).removeprefix("./")] = match.group(1).lower()
    return sums


class GitHubClient:
    def __init__(self, settings: GitHubSettings, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        self.sleep = sleep

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": "golem-gpu-live-repo"}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        return headers

    def _retrying(self, what: str, attempt_once: Callable[[], T]) -> T:
        reason = ""
        for attempt in range(max(1, self.settings.attempts)):
            if attempt:
                self.sleep(self.settings.backoff * 2 ** (attempt - 1))
            try:
                return attempt_once()
            except _Transient as err:
                reason = str(err)
        raise BuildError(f"cannot reach {what}: {reason} "
                         f"(after {self.settings.attempts} attempts)", NO_NETWORK_FIX)

    def _get(self, url: str, accept: str, stream: bool = False) -> requests.Response:
        try:
            resp = self.session.get(url, headers=self._headers(accept), stream=stream,
                                    timeout=self.settings.timeout)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise _Transient(_reason(err)) from err
        except requests.RequestException as err:
            raise BuildError(f"bad GitHub URL {url}: {_reason(err)}",
                             "check the API base URL") from None
        code = resp.status_code
        if code in (403, 429) and resp.headers.get("X-RateLimit-Remaining") == "0":
            resp.close()
            raise BuildError(f"GitHub API rate limit reached at {urlsplit(url).netloc}",
                             "set GITHUB_TOKEN to a token (no scopes needed) and retry")
        if code in RETRY_STATUS:
            resp.close()
            raise _Transient(f"HTTP {code}")
        if code == 401:
            resp.close()
            raise BuildError("GitHub rejected the token (HTTP 401)",
                             "renew GITHUB_TOKEN or unset it for anonymous access")
        if code >= 400:
            resp.close()
            raise BuildError(f"GitHub answered HTTP {code} for {url}",
                             "check `repo` of the component in apt_repo/components.toml")
        return resp

    def check_reachable(self) -> None:
        """One bounded request to the API root; BuildError when it does not answer."""
        base = self.settings.api_url.rstrip("/")

        def once() -> None:
            self._get(f"{base}/", "application/vnd.github+json").close()

        self._retrying(f"the GitHub API at {base}", once)

    def releases(self, repo: str) -> list[Release]:
        base = self.settings.api_url.rstrip("/")
        found: list[Release] = []
        for page in range(1, self.settings.max_pages + 1):
            url = f"{base}/repos/{repo}/releases?per_page=100&page={page}"

            def fetch_page(url: str = url) -> list[Any]:
                resp = self._get(url, "application/vnd.github+json")
                try:
                    data = resp.json()
                except ValueError as err:
                    raise _Transient(f"invalid JSON from {url}") from err
                if not isinstance(data, list):
                    raise BuildError(f"unexpected answer from {url} (not a list of releases)",
                                     "check the GitHub API base URL")
                return data

            data = self._retrying(f"the GitHub API at {base}", fetch_page)
            try:
                found.extend(_release(item) for item in data)
            except (KeyError, TypeError, ValueError) as err:
                raise BuildError(f"unexpected release data from {url}: missing {err}",
                                 "check the GitHub API base URL") from None
            if len(data) < 100:
                break
        return found

    def download(self, asset: Asset, dest_dir: Path) -> Path:
        dest = dest_dir / asset.name
        part = dest_dir / f".{asset.name}.part"

        def once() -> Path:
            digest = hashlib.sha256()
            size = 0
            resp = self._get(asset.url, "application/octet-stream", stream=True)
            try:
                with resp, open(part, "wb") as out:
                    for chunk in _chunks(resp):
                        size += len(chunk)
                        digest.update(chunk)
                        out.write(chunk)
            except (requests.ConnectionError, requests.Timeout) as err:
                raise _Transient(_reason(err)) from err
            if size != asset.size:
                raise _Transient(f"{asset.name}: got {size} bytes, GitHub lists {asset.size}")
            if asset.sha256 and digest.hexdigest() != asset.sha256:
                part.unlink(missing_ok=True)
                raise BuildError(f"{asset.name}: SHA-256 {digest.hexdigest()} does not match "
                                 f"the published {asset.sha256}",
                                 "the download was altered; retry, and report it if it persists")
            part.rename(dest)
            return dest

        try:
            return self._retrying(f"{asset.url}", once)
        finally:
            part.unlink(missing_ok=True)

    def read_text_asset(self, asset: Asset) -> str:
        """A small text asset (a checksum file), bounded in size."""
        if asset.size > MAX_SUMS_BYTES:
            raise BuildError(f"{asset.name} ({asset.size} bytes) is too large for a checksum "
                             "file", "check the release's assets")

        def once() -> str:
            resp = self._get(asset.url, "application/octet-stream")
            with resp:
                data = resp.content[:MAX_SUMS_BYTES + 1]
            if len(data) != asset.size:
                raise _Transient(f"{asset.name}: got {len(data)} bytes, GitHub lists "
                                 f"{asset.size}")
            return data.decode("utf-8", errors="replace")

        return self._retrying(asset.url, once)

    def verified(self, release: Release, assets: list[Asset], repo: str) -> list[Asset]:
        """Each asset with the SHA-256 it must have: the API's digest, else the release's
        NAME.sha256 or SHA256SUMS asset. An asset with none cannot be verified, and what
        cannot be verified is never signed into the repository."""
        by_name = {a.name: a for a in release.assets}
        sums: dict[str, str] = {}
        for name in SUMS_NAMES:
            if name in by_name:
                sums.update(parse_sums(self.read_text_asset(by_name[name])))
        result = []
        for asset in assets:
            published = dict(sums)
            own = by_name.get(f"{asset.name}.sha256")
            if own is not None:
                text = self.read_text_asset(own)
                found = parse_sums(text).get(asset.name) or next(
                    iter(re.findall(r"\b[0-9a-fA-F]{64}\b", text)), None)
                if found:
                    published[asset.name] = found.lower()
            listed = published.get(asset.name)
            if asset.sha256 and listed and listed != asset.sha256:
                raise BuildError(f"{asset.name} of {repo} {release.tag}: the API's digest "
                                 f"{asset.sha256} and the release's checksum file ({listed}) "
                                 "disagree", "report it upstream; do not use this release")
            sha256 = asset.sha256 or listed
            if sha256 is None:
                raise BuildError(f"{asset.name} of {repo} {release.tag} has no published "
                                 f"SHA-256 (no API digest, no {asset.name}.sha256 or "
                                 "SHA256SUMS asset): it cannot be verified",
                                 "pick a release that publishes checksums in "
                                 "apt_repo/components.toml, or build from verified local "
                                 ".debs (--packages-dir / LOCAL_DEBS)")
            result.append(dataclasses.replace(asset, sha256=sha256))
        return result

    def fetch(self, component: Component, channel: str, dest_dir: Path) -> Fetched:
        release = select_release(self.releases(component.repo),
                                 component.for_channel(channel), component.repo)
        assets = self.verified(release, select_assets(release, component.assets,
                                                      component.repo), component.repo)
        dest_dir.mkdir(parents=True, exist_ok=True)
        files = tuple(self.download(asset, dest_dir) for asset in assets)
        sources = tuple((a.name, a.url, a.sha256 or "") for a in assets)
        return Fetched(component.name, component.repo, release.tag, files, sources)


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    try:
        yield from resp.iter_content(chunk_size=1 << 16)
    except requests.exceptions.ChunkedEncodingError as err:
        raise requests.ConnectionError(str(err)) from err
