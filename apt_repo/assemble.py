"""One repository build, shared by `golem-live repo build` and the repository stage:
the project's own .debs + local .deb directories + GOLEM's GitHub releases → signed archive.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apt_repo.archive import ArchiveResult, ArchiveSpec, build_archive
from apt_repo.components import Component
from apt_repo.debpkg import WizardPackage, build_wizard_deb
from apt_repo.github import Fetched, GitHubClient
from apt_repo.keys import SigningKey
from builder.errors import BuildError
from builder.runner import Runner


@dataclass(frozen=True)
class RepoRequest:
    project_root: Path
    spec: ArchiveSpec
    wizard: WizardPackage
    packages_dirs: tuple[Path, ...] = ()
    components: tuple[Component, ...] = ()  # fetched from GitHub; () = none
    required: tuple[str, ...] = ()  # package names that must end up in the repository


@dataclass(frozen=True)
class RepoOutcome:
    archive: ArchiveResult
    fetched: tuple[Fetched, ...]


def local_debs(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise BuildError(f".deb directory {directory} does not exist",
                         "point --packages-dir / LOCAL_DEBS at a directory of .deb files")
    debs = sorted(p for p in directory.glob("*.deb") if p.is_file())
    if not debs:
        raise BuildError(f"no .deb files in {directory}",
                         "put the GOLEM packages (*.deb) there or fetch them from GitHub")
    return debs


def build_repository(runner: Runner, request: RepoRequest, root: Path, key: SigningKey,
                     public_keyring: Path, client: GitHubClient | None,
                     progress: Callable[[str], None] = lambda _: None,
                     extra_keyrings: tuple[Path, ...] = ()) -> RepoOutcome:
    if request.components and client is None:
        raise BuildError("GOLEM components requested but no GitHub access configured",
                         "internal error: pass a GitHubClient")
    with tempfile.TemporaryDirectory(prefix="golem-repo-") as tmp:
        work = Path(tmp)
        debs = [build_wizard_deb(runner, request.project_root, request.wizard,
                                 work / "own", request.spec.date)]
        for directory in request.packages_dirs:
            debs += local_debs(directory)
        fetched: list[Fetched] = []
        for component in request.components:
            assert client is not None
            progress(f"fetching {component.name} from {component.repo}")
            got = client.fetch(component, request.spec.suite, work / "github" / component.name)
            progress(f"{component.name}: {got.tag} ({', '.join(f.name for f in got.files)})")
            fetched.append(got)
            debs += got.files
        archive = build_archive(runner, debs, root, request.spec, key, public_keyring,
                                extra_keyrings)
    present = {info.package for info in archive.packages}
    missing = [name for name in request.required if name not in present]
    if missing:
        raise BuildError(f"the repository lacks {', '.join(missing)} "
                         f"(it has {', '.join(sorted(present))})",
                         "add the .deb files (LOCAL_DEBS / --packages-dir) or fix "
                         "apt_repo/components.toml")
    return RepoOutcome(archive, tuple(fetched))


def write_manifest(path: Path, outcome: RepoOutcome) -> None:
    spec_root = outcome.archive.root
    data = {
        "fingerprint": outcome.archive.fingerprint,
        "release": str(outcome.archive.release.relative_to(spec_root)),
        "packages": [{"package": i.package, "version": i.version,
                      "architecture": i.architecture} for i in outcome.archive.packages],
        "github": [{"component": f.component, "repo": f.repo, "tag": f.tag,
                    "files": [p.name for p in f.files],
                    # what was verified, and where from: to audit the signed repository
                    "assets": [{"name": name, "url": url, "sha256": sha256}
                               for name, url, sha256 in f.sources]}
                   for f in outcome.fetched],
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
