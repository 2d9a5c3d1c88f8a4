"""Stage 2: install the profile's packages in a chroot and create the user.

Leaves no build-time secrets behind: no SSH host keys, an empty machine-id,
no password for the user, no apt lists or downloaded packages.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path

from builder.chroot import POLICY_RC_D, Chroot
from builder.config import BuildConfig
from builder.preflight import check_debian_mirror
from builder.stage import Stage, StageContext

SOURCES_FILE = "etc/apt/sources.list.d/debian.sources"


def debian_sources(suite: str, mirror: str, security_mirror: str,
                   components: tuple[str, ...]) -> str:
    """deb822 sources for the suite, its updates and (when given) its security archive."""
    comps = " ".join(components)
    text = (f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\n"
            f"Components: {comps}\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    if security_mirror:
        text += (f"\nTypes: deb\nURIs: {security_mirror}\nSuites: {suite}-security\n"
                 f"Components: {comps}\n"
                 "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    return text


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
    version = 1
    tools = ("chroot", "mount", "umount", "cp")
    description = "install the profile's packages in a chroot"
    depends = ("bootstrap",)
    config_keys = ("profile.debian", "profile.packages", "profile.preseed",
                   "profile.user", "profile.user_groups")

    def preflight(self, config: BuildConfig) -> None:
        check_debian_mirror(config.profile.debian.mirror, config.profile.debian.suite)

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

        with ExitStack() as mounts:
            chroot = Chroot(root, ctx.runner, mounts)
            ctx.progress("apt-get update")
            chroot.run(["apt-get", "update"])
            if profile.preseed:
                chroot.run(["debconf-set-selections"],
                           input=("\n".join(profile.preseed) + "\n").encode())
            ctx.progress(f"installing {len(profile.packages)} packages and their dependencies")
            chroot.run(["apt-get", "install", "--yes", "--no-install-recommends",
                        "-o", "Dpkg::Options::=--force-confold", *profile.packages])
            ctx.progress(f"creating user {profile.user}")
            groups = ",".join(profile.user_groups)
            chroot.run(["useradd", "--create-home", "--shell", "/bin/bash",
                        *(["--groups", groups] if groups else []), profile.user])
            # Locked until the wizard sets a password: no secret ships in the image.
            chroot.run(["passwd", "--lock", profile.user])
            listing = chroot.run(["dpkg-query", "--show", "--showformat",
                                  "${Package}\t${Version}\n"], capture=True)
            chroot.run(["apt-get", "clean"])

        (ctx.output / "packages.txt").write_text(listing.stdout)
        policy.unlink()
        remove_build_secrets(root)
