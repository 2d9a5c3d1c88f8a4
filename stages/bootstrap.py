"""Stage 1: a minimal Debian system with debootstrap."""

from __future__ import annotations

from builder.chroot import stop_processes_inside
from builder.config import BuildConfig
from builder.mounts import mounts_under, unmount
from builder.preflight import check_debian_mirror
from builder.stage import Stage, StageContext


class BootstrapStage(Stage):
    name = "bootstrap"
    version = 1
    tools = ("debootstrap",)
    description = "debootstrap a minimal Debian system"
    config_keys = ("profile.debian.suite", "profile.debian.mirror",
                   "profile.debian.variant", "profile.debian.arch",
                   "profile.debian.components")

    def preflight(self, config: BuildConfig) -> None:
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
        ctx.progress(f"debootstrap {debian.suite} ({debian.variant}) from {debian.mirror}")
        ctx.runner.run([
            "debootstrap",
            f"--variant={debian.variant}",
            f"--arch={debian.arch}",
            f"--components={','.join(debian.components)}",
            debian.suite, str(root), debian.mirror,
        ])
