"""Installing packages into a build chroot without the work only a running system needs.

Two costs of dpkg in a chroot that is thrown away when anything fails (stages commit their
output atomically): an fsync for every file unpacked, and initramfs-tools generating the
initramfs each time a kernel, a module package or an initramfs hook arrives (linux-image's
postinst, then the trigger live-boot sets off: twice for gpu-node, about 10 s each on two
cores). While installing, dpkg runs with --force-unsafe-io and update-initramfs is diverted
to a no-op; afterwards the diversion goes and the initramfs is generated once, with every
hook in place (live-build diverts update-initramfs in its chroot the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from builder.chroot import Chroot

UNSAFE_IO_CONF = "etc/dpkg/dpkg.cfg.d/golem-live-unsafe-io"
UPDATE_INITRAMFS = "/usr/sbin/update-initramfs"
# Where initramfs-tools' own update-initramfs goes while the stub stands in for it.
DIVERTED_TO = UPDATE_INITRAMFS + ".golem-live"
DEFERRED_STUB = ("#!/bin/sh\n"
                 "# golem-live build: the initramfs is generated once, after the install\n"
                 "exit 0\n")


def allow_unsafe_io(root: Path) -> Path:
    """dpkg's configuration inside `root` for --force-unsafe-io; a root that is kept must
    have it removed again."""
    conf = root / UNSAFE_IO_CONF
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("# golem-live build: no fsync per unpacked file in a throwaway chroot\n"
                    "force-unsafe-io\n")
    return conf


def kernels(root: Path) -> list[str]:
    modules = root / "usr/lib/modules"
    return sorted(path.name for path in modules.iterdir()) if modules.is_dir() else []


@contextmanager
def deferred_initramfs(chroot: Chroot, progress: Callable[[str], None]) -> Iterator[None]:
    """Install inside the block; on leaving it normally the initramfs is generated once.

    On an exception nothing is restored: the stage's output is discarded anyway."""
    root = chroot.root
    conf = allow_unsafe_io(root)
    divert = ["dpkg-divert", "--local", "--rename", "--divert", DIVERTED_TO]
    chroot.run([*divert, "--add", UPDATE_INITRAMFS])
    stub = root / UPDATE_INITRAMFS.lstrip("/")
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text(DEFERRED_STUB)
    stub.chmod(0o755)
    yield
    stub.unlink()
    chroot.run([*divert, "--remove", UPDATE_INITRAMFS])
    conf.unlink()
    releases = kernels(root)
    if stub.exists() and releases:
        progress(f"generating the initramfs once for {', '.join(releases)}")
        chroot.run(["update-initramfs", "-c", "-k", "all"])
