"""Stage 1: a minimal Debian system with debootstrap, the archive's signature checked.

debootstrap falls back to an unverified download when it finds no keyring; the
keyring is therefore named explicitly and --force-check-gpg makes a missing or
wrong one an error instead of a silent downgrade.
"""

from __future__ import annotations

from pathlib import Path

from apt_repo.sources import DEBIAN_KEYRING
from builder.chroot import stop_processes_inside
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.mounts import mounts_under, unmount
from builder.packagecache import harvest_debootstrap, seed_debootstrap
from builder.preflight import check_debian_mirror
from builder.stage import Stage, StageContext


class BootstrapStage(Stage):
    name = "bootstrap"
    version = 3  # 3: no .deb files left in the output (they go to the package cache)
    code = ("apt_repo.sources", "builder.packagecache")
    tools = ("debootstrap",)
    description = "debootstrap a minimal Debian system"
    config_keys = ("profile.debian.suite", "profile.debian.mirror",
                   "profile.debian.variant", "profile.debian.arch",
                   "profile.debian.components")

    def input_files(self, config: BuildConfig) -> list[Path]:
        return [Path(DEBIAN_KEYRING)]  # a different trust anchor is a different bootstrap

    def preflight(self, config: BuildConfig) -> None:
        if not Path(DEBIAN_KEYRING).is_file():
            raise BuildError(f"the Debian archive keyring {DEBIAN_KEYRING} is missing, so the "
                             "archive's signatures cannot be checked",
                             "install it: apt-get install debian-archive-keyring (or make deps)")
        check_debian_mirror(config.profile.debian.mirror, config.profile.debian.suite)

    def run(self, ctx: StageContext) -> None:
        debian = ctx.config.profile.debian
        root = ctx.output / "rootfs"
        root.mkdir()

        def unmount_leftovers() -> None:
            # debootstrap mounts /proc and /sys itself; a kill leaves them behind,
            # and maybe a dpkg still running inside.
            stop_processes_inside(root)
            for point in mounts_under(root):
                unmount(ctx.runner, point)

        ctx.stack.callback(unmount_leftovers)
        # Cached packages in place first: debootstrap checks each one's hash against its
        # index and downloads only what is missing.
        seed_debootstrap(ctx.config, root, ctx.progress)
        ctx.progress(f"debootstrap {debian.suite} ({debian.variant}) from {debian.mirror}")
        ctx.runner.run([
            "debootstrap",
            f"--variant={debian.variant}",
            f"--arch={debian.arch}",
            f"--components={','.join(debian.components)}",
            f"--keyring={DEBIAN_KEYRING}", "--force-check-gpg",
            debian.suite, str(root), debian.mirror,
        ])
        harvest_debootstrap(ctx.config, root, ctx.progress)
