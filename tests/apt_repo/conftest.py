"""Fixtures for the repository tests: .debs built with dpkg-deb, throwaway gpg keys,
a fake GitHub releases API and a static HTTP server, both threads on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from apt_repo.keys import SigningKey, discard_home, ephemeral_key
from builder.runner import SubprocessRunner

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("dpkg-deb", "apt-ftparchive", "gpg", "gpgv", "gpgconf")


def need_tools(*tools: str) -> None:
    missing = [t for t in tools or TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


MAINTAINER_SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config")


def make_deb(out_dir: Path, package: str, version: str, arch: str = "all",
             files: dict[str, str] | None = None, depends: str = "",
             control_files: dict[str, str] | None = None,
             executables: tuple[str, ...] = ()) -> Path:
    """A tiny real .deb (dpkg-deb --build); installs /usr/share/PACKAGE/VERSION by default.

    `control_files` go into DEBIAN/ (maintainer scripts executable, e.g. a debconf
    preinst beside its `templates`); `executables` are paths of `files` made mode 0755.
    """
    need_tools("dpkg-deb")
    staging = out_dir / f".stage-{package}-{version}-{arch}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "DEBIAN").mkdir(parents=True)
    control = (f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
               f"Maintainer: Test <test@example.org>\nDescription: test package {package}\n")
    if depends:
        control += f"Depends: {depends}\n"
    (staging / "DEBIAN/control").write_text(control)
    for rel, text in (files or {f"usr/share/{package}/VERSION": version + "\n"}).items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_text(text)
        (staging / rel).chmod(0o755 if rel in executables else 0o644)
    for name, text in (control_files or {}).items():
        (staging / "DEBIAN" / name).write_text(text)
        (staging / "DEBIAN" / name).chmod(0o755 if name in MAINTAINER_SCRIPTS else 0o644)
    deb = out_dir / f"{package}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(staging), str(deb)],
                   check=True, capture_output=True)
    shutil.rmtree(staging)
    return deb


def make_project(root: Path) -> Path:
    """A project root with the real profiles and a stub wizard (for the golemwz package)."""
    shutil.copytree(PROJECT_ROOT / "rootfs/profiles", root / "rootfs/profiles")
    wizard = root / "rootfs/wizard/golemwz"
    wizard.mkdir(parents=True, exist_ok=True)
    (wizard / "__init__.py").write_text("")
    (wizard / "cli.py").write_text("def main() -> int:\n    return 0\n")
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def _new_key(home: Path) -> Iterator[SigningKey]:
    need_tools("gpg", "gpgconf")
    key = ephemeral_key(home)
    yield key
    discard_home(SubprocessRunner(home.parent / f"{home.name}-cleanup.log"), home)


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    """The repository's key (ed25519, fast), in a GNUPGHOME outside any project."""
    yield from _new_key(tmp_path_factory.mktemp("gpg") / "home")


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    """An unrelated key: what an attacker would sign with."""
    yield from _new_key(tmp_path_factory.mktemp("gpg-other") / "home")


# --- the fake GitHub releases API ---------------------------------------------------


@dataclass
class FakeGitHub:
    """Releases per repository, their assets, and failure injection."""

    releases: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    fail_next: int = 0  # answer this many requests (any path) with `fail_status`
    fail_status: int = 503
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, auth)
    base: str = ""

    def add_release(self, repo: str, tag: str, debs: list[Path], prerelease: bool = False,
                    draft: bool = False, published: str = "2024-01-01T00:00:00Z",
                    size_delta: int = 0, digest: str | None = "auto") -> None:
        assets = []
        for deb in debs:
            data = deb.read_bytes()
            path = f"/download/{repo}/{tag}/{deb.name}"
            self.blobs[path] = data
            asset: dict[str, Any] = {"name": deb.name, "size": len(data) + size_delta,
                                     "browser_download_url": self.base + path}
            if digest == "auto":
                asset["digest"] = "sha256:" + hashlib.sha256(data).hexdigest()
            elif digest is not None:
                asset["digest"] = digest
            assets.append(asset)
        self.releases.setdefault(repo, []).append({
            "tag_name": tag, "prerelease": prerelease, "draft": draft,
            "published_at": None if draft else published, "created_at": published,
            "assets": assets})


class _GitHubHandler(SimpleHTTPRequestHandler):
    fake: FakeGitHub

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        fake = self.fake
        url = urlsplit(self.path)
        fake.requests.append((url.path, self.headers.get("Authorization")))
        if fake.fail_next > 0:
            fake.fail_next -= 1
            self._send(fake.fail_status, b'{"message": "try again"}')
            return
        parts = url.path.strip("/").split("/")
        if url.path == "/":
            self._send(200, b"{}")
        elif len(parts) == 4 and parts[0] == "repos" and parts[3] == "releases":
            repo = f"{parts[1]}/{parts[2]}"
            if repo not in fake.releases:
                self._send(404, b'{"message": "Not Found"}')
                return
            query = parse_qs(url.query)
            page, per_page = int(query.get("page", ["1"])[0]), int(query["per_page"][0])
            ordered = sorted(fake.releases[repo], key=lambda r: r["created_at"], reverse=True)
            chunk = ordered[(page - 1) * per_page: page * per_page]
            self._send(200, json.dumps(chunk).encode())
        elif url.path in fake.blobs:
            self._send(200, fake.blobs[url.path], "application/octet-stream")
        else:
            self._send(404, b'{"message": "Not Found"}')


def _serve(handler: Any) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def start_fake_github() -> Iterator[FakeGitHub]:
    """Generator: the running fake (first next()), stopped when resumed."""
    fake = FakeGitHub()
    handler = type("Handler", (_GitHubHandler,), {"fake": fake})
    for server in _serve(handler):
        fake.base = f"http://127.0.0.1:{server.server_address[1]}"
        yield fake


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    yield from start_fake_github()


@pytest.fixture
def serve_dir() -> Iterator[Any]:
    """serve_dir(path) -> base URL of a static HTTP server for that directory."""
    servers: list[Iterator[ThreadingHTTPServer]] = []

    def start(directory: Path) -> str:
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        gen = _serve(partial(Quiet, directory=str(directory)))
        server = next(gen)
        servers.append(gen)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for gen in servers:
        next(gen, None)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
