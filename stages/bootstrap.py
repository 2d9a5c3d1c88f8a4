"""Stage 1: a minimal Debian system with mmdebstrap, the archive's signature checked.

mmdebstrap resolves and installs the essential set with apt (signatures always
checked, against the keyring named here) and dpkg without an fsync per file: about
14 s here where debootstrap's shell loop took 21-32 s for the same 78 packages.
"""

from __future__ import annotations

from pathlib import Path

from apt_repo.sources import DEBIAN_KEYRING
from builder.chroot import stop_processes_inside
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.mounts import mounts_under, unmount
from builder.packagecache import harvest_bootstrap, seed_bootstrap
from builder.preflight import check_debian_mirror
from builder.stage import Stage, StageContext


class BootstrapStage(Stage):
    name = "bootstrap"
    # 3: no .deb files left in the output (they go to the package cache); 4: mmdebstrap
    version = 4
    code = ("apt_repo.sources", "builder.packagecache")
    tools = ("mmdebstrap",)
    description = "mmdebstrap a minimal Debian system"
    config_keys = ("profile.debian.suite", "profile.debian.mirror",
                   "profile.debian.variant", "profile.debian.arch",
                   "profile.debian.components", "profile.debian.path_exclude")

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
            # mmdebstrap mounts /proc, /sys and /dev itself; a kill leaves them
            # behind, and maybe a dpkg still running inside.
            stop_processes_inside(root)
            for point in mounts_under(root):
                unmount(ctx.runner, point)

        ctx.stack.callback(unmount_leftovers)
        # Cached packages in place first: apt checks each one's hash against its index
        # and downloads only what is missing (so the target is not empty: check/empty);
        # apt's cache and lists stay for the harvest, which then empties the cache.
        seed_bootstrap(ctx.config, root, ctx.progress)
        ctx.progress(f"mmdebstrap {debian.suite} ({debian.variant}) from {debian.mirror}")
        ctx.runner.run([
            "mmdebstrap", "--mode=root", "--format=directory",
            f"--variant={debian.variant}",
            f"--arch={debian.arch}",
            f"--components={','.join(debian.components)}",
            f"--keyring={DEBIAN_KEYRING}",
            "--skip=check/empty,cleanup/apt/cache,cleanup/apt/lists",
            # Kept in the image's dpkg configuration (99mmdebstrap): the packages stage
            # and the live system's own installs leave the same files out.
            *(f"--dpkgopt=path-exclude={glob}" for glob in debian.path_exclude),
            debian.suite, str(root), debian.mirror,
        ])
        harvest_bootstrap(ctx.config, root, ctx.progress)
