"""The stage list of a profile, in build order: what the engine (builder/) runs.

The engine knows no particular stage; a profile's list is composed here from its
settings (ubuntu-image composes its state lists per image type the same way).
"""

from __future__ import annotations

from apt_repo.github import GitHubSettings
from builder.config import BuildConfig
from builder.stage import Stage
from stages.bootloader import BootloaderStage
from stages.bootstrap import BootstrapStage
from stages.iso import IsoStage
from stages.modules import modules_stage
from stages.overlay import OverlayStage
from stages.packages import PackagesStage
from stages.repository import RepositoryStage
from stages.squashfs import BaseSquashfsStage, SquashfsStage
from stages.usb import UsbImageStage


def stage_list(config: BuildConfig, github: GitHubSettings | None = None) -> list[Stage]:
    """`github` points GOLEM's release downloads elsewhere (a mirror, a test's fake)."""
    with_repository = bool(config.profile.golem.packages)
    stages: list[Stage] = [BootstrapStage()]
    if with_repository:
        stages.append(RepositoryStage(github=github))
    # One stage per module: two profiles asking for the same module share its entry.
    modules = [modules_stage(name) for name in config.profile.kernel_modules]
    stages += modules
    stages += [PackagesStage(with_repository, tuple(m.name for m in modules)),
               BaseSquashfsStage(), OverlayStage(),
               SquashfsStage(), BootloaderStage(), IsoStage(), UsbImageStage()]
    return stages
