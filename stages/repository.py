"""The signed APT repository the golem-provider profile installs GOLEM's packages from.

Output (ctx.output):
    repo/dists/CODENAME/{InRelease,Release,Release.gpg,main/binary-ARCH/Packages{,.gz,.xz}}
    repo/pool/main/X/PACKAGE/PACKAGE_VERSION_ARCH.deb
    repo.gpg         public keyring that verifies repo/ (give it to apt as Signed-By)
    manifest.json    packages, GitHub tags taken, signing fingerprint

Sources: the wizard (golemwz, built here), then config.local_debs if set (it stands
in for GOLEM's sources: no GitHub then), else GOLEM's GitHub releases selected by
apt_repo/components.toml for the profile's channel.

Signing: with the maintainer key if one is given to the stage; otherwise with an
ephemeral key made in a throwaway GNUPGHOME that is deleted (agent stopped) before
the output is committed, so the cache never holds a secret key.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from apt_repo.archive import ArchiveSpec
from apt_repo.assemble import RepoRequest, build_repository, local_debs, write_manifest
from apt_repo.components import COMPONENTS_FILE, Component, load_components
from apt_repo.debpkg import WizardPackage, wizard_sources
from apt_repo.github import GitHubClient, GitHubSettings
from apt_repo.keys import (
    SigningKey,
    discard_home,
    ephemeral_home,
    ephemeral_key,
)
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.stage import Stage, StageContext

REPO_DIR = "repo"
KEYRING = "repo.gpg"
MANIFEST = "manifest.json"


class RepositoryStage(Stage):
    name = "repository"
    code = ("apt_repo.archive", "apt_repo.assemble", "apt_repo.components",
            "apt_repo.debpkg", "apt_repo.github", "apt_repo.keys")
    version = 1
    depends = ()
    config_keys = ("version", "local_debs", "source_date_epoch", "profile.debian.suite",
                   "profile.debian.arch", "profile.golem.channel", "profile.golem.packages")
    description = "signed APT repository: golemwz + GOLEM's components"
    tools = ("dpkg-deb", "apt-ftparchive", "gpg", "gpgv", "gpgconf")

    def __init__(self, github: GitHubSettings | None = None,
                 signing_key: SigningKey | None = None,
                 components_file: Path = COMPONENTS_FILE) -> None:
        self.github = github or GitHubSettings()
        self.signing_key = signing_key
        self.components_file = components_file

    def preflight(self, config: BuildConfig) -> None:
        """Without LOCAL_DEBS, GitHub must answer before anything is built."""
        if config.local_debs is None:
            try:
                GitHubClient(self.github).check_reachable()
            except BuildError as err:
                raise BuildError(err.problem, "give a directory of GOLEM .deb files "
                                 "(LOCAL_DEBS=DIR), or build PROFILE=gpu-node") from None

    def input_files(self, config: BuildConfig) -> list[Path]:
        files = [self.components_file, *wizard_sources(config.project_root)]
        if config.local_debs is not None and config.local_debs.is_dir():
            files += sorted(p for p in config.local_debs.glob("*.deb") if p.is_file())
        return files

    def run(self, ctx: StageContext) -> None:
        config = ctx.config
        components: tuple[Component, ...] = ()
        if config.local_debs is not None:
            local_debs(config.local_debs)  # fail before any work when it is empty
        else:
            components = load_components(self.components_file)
        request = RepoRequest(
            project_root=config.project_root,
            spec=ArchiveSpec(date=_epoch(config), valid_days=None,  # lives for one build
                             codename=config.profile.debian.suite,
                             suite=config.profile.golem.channel,
                             architectures=(config.profile.debian.arch,)),
            wizard=WizardPackage(version=config.version),
            packages_dirs=(config.local_debs,) if config.local_debs else (),
            components=components,
            required=("golemwz", *config.profile.golem.packages),
        )
        key, home = self.signing_key, None
        if key is None:
            home = ephemeral_home(ctx.output / ".gnupg")
            ctx.stack.callback(discard_home, ctx.runner, home)
        try:
            if key is None:
                assert home is not None
                ctx.progress("creating an ephemeral signing key for this build")
                key = ephemeral_key(home)
            outcome = build_repository(
                ctx.runner, request, ctx.output / REPO_DIR, key, ctx.output / KEYRING,
                GitHubClient(self.github) if components else None, progress=ctx.progress,
                extra_keyrings=self._project_keyring(config))
        finally:
            if home is not None:
                discard_home(ctx.runner, home)
        write_manifest(ctx.output / MANIFEST, outcome)
        if (ctx.output / ".gnupg").exists():
            shutil.rmtree(ctx.output / ".gnupg")
            raise BuildError("the ephemeral GNUPGHOME survived in the stage output",
                             "report this: secret keys must never reach the cache")

    def _project_keyring(self, config: BuildConfig) -> tuple[Path, ...]:
        """With the maintainer key, also check against the key the image will carry."""
        if self.signing_key is None or not config.profile.golem.keyring:
            return ()
        path = config.project_root / config.profile.golem.keyring
        return (path,) if path.is_file() else ()


def _epoch(config: BuildConfig) -> int:
    """The Release Date and the golemwz .deb's times: the build's SOURCE_DATE_EPOCH."""
    return config.source_date_epoch
