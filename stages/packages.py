"""Stage 2: install the profile's packages in a chroot and create the user.

Leaves no build-time secrets behind: no SSH host keys, an empty machine-id,
no password for the user, no apt lists or downloaded packages.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path

from apt_repo.archive_state import (
    ARCHIVE_DATE,
    Source,
    archive_state,
    newer_packages,
    package_lock,
    sources_of,
)
from apt_repo.keys import IMAGE_KEYRING
from apt_repo.lock import check_against_lock, pin_chroot, read_package_lock
from apt_repo.sources import DEBIAN_KEYRING, deb822
from builder.chroot import POLICY_RC_D, Chroot
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.packagecache import apt_archives
from builder.preflight import check_debian_mirror
from builder.stage import Stage, StageContext
from stages.fast_install import deferred_initramfs
from stages.shared import ARCHIVE_EPOCH_FILE

SOURCES_FILE = "etc/apt/sources.list.d/debian.sources"
# package version sha256, one per installed package (the release's NAME.packages.lock).
LOCK_FILE = "packages.lock"
# Where the build's signed repository is visible inside the chroot while installing.
BUILD_REPO_DIR = "var/lib/golem-live/build-repo"
BUILD_REPO_SOURCES = "etc/apt/sources.list.d/golem-build.sources"
# Packages a dependency stage generated (its debs/ dir, e.g. compiled kernel modules),
# visible inside the chroot while installing.
LOCAL_DEBS_DIR = "var/lib/golem-live/stage-debs"
EXTRA_SOURCES = "etc/apt/sources.list.d/extra.sources"
EXTRA_KEYRING = "/etc/apt/keyrings/extra-apt"  # + the key file's suffix (.gpg or .asc)


def debian_sources(suite: str, mirror: str, security_mirror: str,
                   components: tuple[str, ...]) -> str:
    """deb822 sources for the suite, its updates and (when given) its security archive."""
    text = deb822(mirror, (suite, f"{suite}-updates"), DEBIAN_KEYRING, components)
    if security_mirror:
        text += "\n" + deb822(security_mirror, f"{suite}-security", DEBIAN_KEYRING, components)
    return text


def debian_suites(config: BuildConfig) -> list[Source]:
    debian = config.profile.debian
    return sources_of(debian.mirror, debian.security_mirror, debian.suite)


def installed_versions(entry: Path | None) -> dict[str, str] | None:
    """What a previous build installed (its packages.txt), or None when unknown."""
    try:
        text = (entry / "packages.txt").read_text() if entry else None
    except OSError:
        return None
    if text is None:
        return None
    return parse_listing(text)


def parse_listing(text: str) -> dict[str, str]:
    """dpkg-query's `Package<TAB>Version` lines (packages.txt) as a dict."""
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def maintainer_keyring(config: BuildConfig) -> Path | None:
    if not config.profile.golem.keyring:
        return None
    path = config.project_root / config.profile.golem.keyring
    return path if path.is_file() else None


def extra_keyring(config: BuildConfig) -> Path | None:
    extra = config.profile.extra_apt
    return config.project_root / extra.keyring if extra.url and extra.keyring else None


def image_extra_keyring(config: BuildConfig) -> str:
    """Where the image keeps the extra repository's key (apt reads .asc armored)."""
    return EXTRA_KEYRING + (Path(config.profile.extra_apt.keyring).suffix or ".gpg")


def extra_sources(config: BuildConfig) -> str:
    """deb822 of the profile's extra repository; a suite ending in / is a flat one."""
    extra = config.profile.extra_apt
    keyring = image_extra_keyring(config)
    if extra.suite.endswith("/"):
        return (f"Types: deb\nURIs: {extra.url}\nSuites: {extra.suite}\n"
                f"Signed-By: {keyring}\n")
    return deb822(extra.url, extra.suite, keyring, extra.components)


def extra_not_configured(config: BuildConfig) -> str | None:
    """The progress line when the profile names extra packages but no repository."""
    extra = config.profile.extra_apt
    if extra.url or not extra.packages:
        return None
    return (f"extra APT repository not configured (extra_apt.url is empty): "
            f"{', '.join(extra.packages)} left out; to install them set extra_apt.url, "
            f"extra_apt.suite, extra_apt.components and extra_apt.keyring in a profile "
            f"that extends {config.profile.name} (README: profile reference)")


def build_repo_sources(codename: str) -> str:
    # Signature checks stay on: the repository is signed even for a local build.
    return deb822(f"file:/{BUILD_REPO_DIR}", codename, IMAGE_KEYRING)


def copy_tree(ctx: StageContext, source: Path, target: Path) -> None:
    # --reflink=auto is free on btrfs/xfs and a plain copy elsewhere.
    ctx.runner.run(["cp", "-a", "--reflink=auto", str(source), str(target)])


def remove_build_secrets(root: Path) -> None:
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Empty, not absent: systemd then generates a fresh id at every boot.
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for pattern in ("var/lib/apt/lists/*_*", "var/cache/apt/*.bin",
                    # caches holding inode numbers and times, and shadow's backups
                    "var/cache/ldconfig/aux-cache", "etc/*-",
                    "var/cache/apt/archives/*.deb", "var/log/*.log",
                    "var/log/apt/*", "var/cache/debconf/*-old", "var/lib/dpkg/*-old"):
        for path in root.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
    resolv = root / "etc/resolv.conf"
    if resolv.exists() or resolv.is_symlink():
        resolv.unlink()
    resolv.write_text("")


class PackagesStage(Stage):
    name = "packages"
    code = ("builder.chroot", "apt_repo.sources", "apt_repo.archive_state",
            "builder.packagecache", "apt_repo.lock", "stages.fast_install")
    version = 1
    tools = ("chroot", "mount", "umount", "cp")
    description = "install the profile's packages in a chroot"
    depends: tuple[str, ...] = ("bootstrap",)

    def __init__(self, with_repository: bool = False, deb_stages: tuple[str, ...] = ()) -> None:
        # golem-provider: GOLEM's packages come from the signed repository stage;
        # deb_stages (modules-NAME) generate packages installed before the profile's.
        self.depends = ("bootstrap", *(("repository",) if with_repository else ()),
                        *deb_stages)
    config_keys = ("profile.debian", "profile.packages", "profile.preseed",
                   "profile.user", "profile.user_groups", "profile.golem.packages",
                   "profile.extra_apt", "packages_lock")

    def input_files(self, config: BuildConfig) -> list[Path]:
        keys = [maintainer_keyring(config), extra_keyring(config)]
        return [key for key in keys if key is not None]

    def resolved_inputs(self, config: BuildConfig) -> dict[str, str]:
        # The archive's package indexes: a security update or point release reruns the
        # stage (which upgrades everything), an unchanged archive keeps the cache.
        debian = config.profile.debian
        return archive_state(debian_suites(config), debian.components, debian.arch)

    def explain(self, config: BuildConfig, previous: dict[str, str], current: dict[str, str],
                previous_entry: Path | None) -> list[str]:
        changed = sorted(name for name in current if previous.get(name) != current[name]
                         and name != ARCHIVE_DATE)
        if not changed:
            return []
        installed = installed_versions(previous_entry)
        if installed is None:
            return [f"Debian archive changed: {', '.join(changed)}"]
        newer = newer_packages(installed, changed, debian_suites(config))
        if not newer:
            return [f"Debian archive changed ({', '.join(changed)}): none of the installed "
                    "packages is newer"]
        shown = ", ".join(f"{p} {old} -> {new}" for p, old, new in newer[:5])
        more = f", and {len(newer) - 5} more" if len(newer) > 5 else ""
        return [f"Debian archive changed: {len(newer)} packages newer ({shown}{more})"]

    def preflight(self, config: BuildConfig) -> None:
        key = extra_keyring(config)
        if key is not None and not key.is_file():
            raise BuildError(f"extra_apt.keyring {config.profile.extra_apt.keyring} does not "
                             "exist", "put the repository's public key there")
        check_debian_mirror(config.profile.debian.mirror, config.profile.debian.suite)
        if config.packages_lock:
            read_package_lock(config.packages_lock)  # every bad line, before anything runs

    def run(self, ctx: StageContext) -> None:
        profile = ctx.config.profile
        debian = profile.debian
        root = ctx.output / "rootfs"
        ctx.progress("copying the bootstrap rootfs")
        copy_tree(ctx, ctx.inputs["bootstrap"] / "rootfs", root)

        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / SOURCES_FILE).parent.mkdir(parents=True, exist_ok=True)
        (root / SOURCES_FILE).write_text(debian_sources(
            debian.suite, debian.mirror, debian.security_mirror, debian.components))
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
        resolv = root / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)

        lock = read_package_lock(ctx.config.packages_lock) if ctx.config.packages_lock else None
        pin_files = pin_chroot(root, lock) if lock else []
        if lock is not None:
            ctx.progress(f"pinned to the {len(lock.entries)} packages of {lock.path}")
        # Timestamps written inside (initramfs, /etc/shadow's last change) follow the
        # archive's date, so an unchanged archive gives the same files.
        epoch = ctx.resolved.get(ARCHIVE_DATE) or str(ctx.config.source_date_epoch)
        (ctx.output / ARCHIVE_EPOCH_FILE).write_text(f"{epoch}\n")
        with ExitStack() as mounts:
            chroot = Chroot(root, ctx.runner, mounts, env={"SOURCE_DATE_EPOCH": epoch})
            ctx.progress("apt-get update")
            chroot.run(["apt-get", "update"])
            if profile.preseed:
                chroot.run(["debconf-set-selections"],
                           input=("\n".join(profile.preseed) + "\n").encode())
            # Downloads go through the shared package cache (TMP_DIR/packages).
            with apt_archives(ctx.config, ctx.runner, root, ctx.progress), \
                    deferred_initramfs(chroot, ctx.progress):
                # The bootstrap came from the suite alone: bring it up to -updates and
                # -security.
                ctx.progress("upgrading the bootstrap to the archive's current packages")
                # Pinned: the lock's versions, older ones too.
                downgrades = ["--allow-downgrades"] if lock else []
                chroot.run(["apt-get", "dist-upgrade", "--yes", *downgrades, "-o",
                            "Dpkg::Options::=--force-confold"])
                self._install_stage_debs(ctx, chroot)
                ctx.progress(f"installing {len(profile.packages)} packages and their "
                             "dependencies")
                chroot.run(["apt-get", "install", "--yes", "--no-install-recommends",
                            "-o", "Dpkg::Options::=--force-confold", *profile.packages])
                if "repository" in ctx.inputs:
                    self._install_from_repository(ctx, chroot)
                self._install_extra(ctx, chroot)
            ctx.progress(f"creating user {profile.user}")
            groups = ",".join(profile.user_groups)
            chroot.run(["useradd", "--create-home", "--shell", "/bin/bash",
                        *(["--groups", groups] if groups else []), profile.user])
            # Locked until the wizard sets a password: no secret ships in the image.
            chroot.run(["passwd", "--lock", profile.user])
            listing = chroot.run(["dpkg-query", "--show", "--showformat",
                                  "${Package}\t${Version}\n"], capture=True)
            chroot.run(["apt-get", "clean"])
        installed = parse_listing(listing.stdout)
        # Before the lists go: what exactly was installed, to reproduce or audit the build.
        built_lock = package_lock(installed, root / "var/lib/apt/lists")
        if lock is not None:
            check_against_lock(lock, built_lock)
        for path in pin_files:  # the image updates as any other
            path.unlink()
        (ctx.output / LOCK_FILE).write_text(built_lock)

        shutil.rmtree(root / BUILD_REPO_DIR, ignore_errors=True)
        (root / BUILD_REPO_SOURCES).unlink(missing_ok=True)
        (ctx.output / "packages.txt").write_text(listing.stdout)
        policy.unlink()
        remove_build_secrets(root)

    @staticmethod
    def _install_stage_debs(ctx: StageContext, chroot: Chroot) -> None:
        """Before the profile's packages, so what they depend on (e.g. nvidia-open-kernel-VER)
        is already provided and apt never reaches for a DKMS alternative."""
        debs = sorted(deb for path in ctx.inputs.values() for deb in (path / "debs").glob("*.deb"))
        if not debs:
            return
        inside = chroot.root / LOCAL_DEBS_DIR
        inside.mkdir(parents=True, exist_ok=True)
        for deb in debs:
            shutil.copyfile(deb, inside / deb.name)
        ctx.progress(f"installing {', '.join(d.name for d in debs)} (built by earlier stages)")
        chroot.run(["apt-get", "install", "--yes", "--no-install-recommends",
                    "-o", "Dpkg::Options::=--force-confold",
                    *(f"/{LOCAL_DEBS_DIR}/{d.name}" for d in debs)])
        shutil.rmtree(inside)

    @staticmethod
    def _install_extra(ctx: StageContext, chroot: Chroot) -> None:
        config = ctx.config
        extra = config.profile.extra_apt
        note = extra_not_configured(config)
        if note:
            ctx.progress(note)
        key = extra_keyring(config)
        if key is None:
            return
        keyring = chroot.root / image_extra_keyring(config).lstrip("/")
        keyring.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(key, keyring)
        keyring.chmod(0o644)
        # Kept in the image: it updates from the same repository, signatures checked.
        (chroot.root / EXTRA_SOURCES).write_text(extra_sources(config))
        ctx.progress(f"installing {', '.join(extra.packages) or 'nothing'} from {extra.url}")
        chroot.run(["apt-get", "update"])
        if extra.packages:
            chroot.run(["apt-get", "install", "--yes", "--no-install-recommends",
                        "-o", "Dpkg::Options::=--force-confold", *extra.packages])

    @staticmethod
    def _install_from_repository(ctx: StageContext, chroot: Chroot) -> None:
        profile = ctx.config.profile
        root = chroot.root
        repository = ctx.inputs["repository"]
        keyring = root / IMAGE_KEYRING.lstrip("/")
        keyring.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repository / "repo.gpg", keyring)
        keyring.chmod(0o644)
        (root / BUILD_REPO_DIR).parent.mkdir(parents=True, exist_ok=True)
        ctx.runner.run(["cp", "-a", str(repository / "repo"), str(root / BUILD_REPO_DIR)])
        (root / BUILD_REPO_SOURCES).write_text(build_repo_sources(profile.debian.suite))
        ctx.progress("installing GOLEM's packages from the signed repository")
        chroot.run(["apt-get", "update"])
        chroot.run(["apt-get", "install", "--yes", "--no-install-recommends",
                    "-o", "Dpkg::Options::=--force-confold", *profile.golem.packages])
        maintainer_key = maintainer_keyring(ctx.config)
        if maintainer_key is not None:
            # Installed systems update from the published repository, which the
            # maintainer's key signs; the build's own key only signed this install.
            keyring.unlink()
            shutil.copyfile(maintainer_key, keyring)
            keyring.chmod(0o644)
        else:
            ctx.progress("no maintainer key (golem-live repo key): the image trusts this "
                         "build's repository key, so it cannot verify published updates")
