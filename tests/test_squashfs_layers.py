"""The two squashfs layers: the top one holds exactly what the overlay changed."""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest

from builder.config import BuildConfig, make_config
from builder.errors import BuildError
from stages.shared import ARCHIVE_EPOCH_FILE
from stages.squashfs import (
    BASE_IMAGE,
    MODULE_FILE,
    TOP_IMAGE,
    BaseSquashfsStage,
    SquashfsStage,
    layer_diff,
    stage_top_layer,
)
from tests.fakes import RecordingRunner
from tests.test_stages_rootfs import context


@pytest.fixture
def config(fake_project: Path, tmp_path: Path) -> BuildConfig:
    return make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp", tmp_path / "work")


def lower_tree(root: Path) -> None:
    for rel, text in {"etc/motd": "motd", "etc/keep": "keep", "usr/lib/a/one": "1",
                      "usr/lib/a/two": "2", "opt/gone/x": "x", "boot/vmlinuz-6.1": "k",
                      "boot/initrd.img-6.1": "i"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "etc/link").symlink_to("keep")


def linked_copy(lower: Path, upper: Path) -> None:
    """What the overlay stage does first (cp -a --link: symlinks hard-linked too)."""
    for dirpath, dirnames, filenames in os.walk(lower):
        rel = Path(dirpath).relative_to(lower)
        (upper / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            os.link(Path(dirpath) / name, upper / rel / name, follow_symlinks=False)


def edit(upper: Path) -> None:
    (upper / "etc/motd").unlink()
    (upper / "etc/motd").write_text("edited")  # a fresh inode, as replace_file writes
    (upper / "etc/new.d").mkdir()
    (upper / "etc/new.d/conf").write_text("new")
    (upper / "usr/lib/a/two").unlink()  # removed
    shutil.rmtree(upper / "opt/gone")  # a removed directory
    (upper / "etc/link").unlink()
    (upper / "etc/link").symlink_to("motd")
    os.chmod(upper / "usr/lib", 0o700)


def test_the_diff_is_what_changed(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower_tree(lower)
    linked_copy(lower, upper)
    assert layer_diff(lower, upper).entries == []
    assert layer_diff(lower, upper).removed == []
    edit(upper)
    diff = layer_diff(lower, upper)
    assert sorted(diff.entries) == ["etc/link", "etc/motd", "etc/new.d/conf"]
    assert sorted(diff.dirs) == ["etc/new.d", "usr/lib"]
    assert sorted(diff.removed) == ["opt/gone", "usr/lib/a/two"]


def test_the_top_layer_tree_links_changes_and_whites_out_removals(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower_tree(lower)
    linked_copy(lower, upper)
    edit(upper)
    tree, pseudo = tmp_path / "tree", tmp_path / "pseudo"
    stage_top_layer(lower, upper, tree, pseudo)
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*")
                   if not p.is_dir() or p.is_symlink())
    assert files == ["etc/link", "etc/motd", "etc/new.d/conf"]
    assert (tree / "etc/motd").stat().st_ino == (upper / "etc/motd").stat().st_ino
    assert os.readlink(tree / "etc/link") == "motd"
    assert (tree / "usr/lib").stat().st_mode & 0o777 == 0o700
    # the parents of whiteouts exist, the whiteouts are overlayfs's: char device 0/0
    assert (tree / "usr/lib/a").is_dir() and (tree / "opt").is_dir()
    assert pseudo.read_text().splitlines() == ["opt/gone c 0 0 0 0 0",
                                               "usr/lib/a/two c 0 0 0 0 0"]


def test_stages_write_two_layers_and_the_module_list(config: BuildConfig,
                                                      tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    lower_tree(packages / "rootfs")
    (packages / ARCHIVE_EPOCH_FILE).write_text("1700000000\n")
    overlay = tmp_path / "overlay"
    linked_copy(packages / "rootfs", overlay / "rootfs")
    edit(overlay / "rootfs")
    runner = RecordingRunner()
    runner.side_effects[("mksquashfs",)] = lambda argv: Path(argv[2]).write_text(argv[2])
    with ExitStack() as stack:
        BaseSquashfsStage().run(context(config, tmp_path / "base", runner, stack,
                                        packages=packages))
    base_argv = runner.argvs[-1]
    assert base_argv[1:3] == (str(packages / "rootfs"), str(tmp_path / "base/live" / BASE_IMAGE))
    # dated by the archive, not by the commit
    assert base_argv[base_argv.index("-all-time") + 1] == "1700000000"
    assert "source_date_epoch" not in BaseSquashfsStage.config_keys

    out = tmp_path / "out"
    with ExitStack() as stack:
        SquashfsStage().run(context(config, out, runner, stack, packages=packages,
                                    overlay=overlay, **{"squashfs-base": tmp_path / "base"}))
    top_argv = runner.argvs[-1]
    assert top_argv[2] == str(out / "live" / TOP_IMAGE)
    assert top_argv[top_argv.index("-all-time") + 1] == str(config.source_date_epoch)
    assert "-pf" in top_argv
    live = out / "live"
    assert (live / MODULE_FILE).read_text() == f"{BASE_IMAGE}\n{TOP_IMAGE}\n"
    # the big layer is the base stage's file, not a copy
    assert (live / BASE_IMAGE).samefile(tmp_path / "base/live" / BASE_IMAGE)
    assert sorted(p.name for p in out.iterdir()) == ["live"]  # no scratch left


def test_an_overlay_that_replaces_the_kernel_is_refused(config: BuildConfig,
                                                        tmp_path: Path) -> None:
    packages, overlay = tmp_path / "packages", tmp_path / "overlay"
    lower_tree(packages / "rootfs")
    linked_copy(packages / "rootfs", overlay / "rootfs")
    (overlay / "rootfs/boot/vmlinuz-6.1").unlink()
    (overlay / "rootfs/boot/vmlinuz-6.1").write_text("other kernel")
    with ExitStack() as stack, pytest.raises(BuildError, match="overlay changes boot/vmlinuz"):
        SquashfsStage().run(context(config, tmp_path / "out", RecordingRunner(), stack,
                                    packages=packages, overlay=overlay,
                                    **{"squashfs-base": tmp_path / "base"}))


def test_a_rebuilt_lower_tree_sharing_no_inode_gives_the_same_diff(tmp_path: Path) -> None:
    # The packages entry rebuilt under the same key (its first copy evicted) while the
    # overlay entry stayed cached: no inode is shared, the content decides.
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower_tree(lower)
    linked_copy(lower, upper)
    edit(upper)
    expected = layer_diff(lower, upper)
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(lower, rebuilt, symlinks=True)  # same content, new inodes and times
    diff = layer_diff(rebuilt, upper)
    assert (diff.entries, diff.dirs, diff.removed) == \
        (expected.entries, expected.dirs, expected.removed)
    (rebuilt / "etc/keep").write_text("other")  # an entry the overlay left alone
    assert "etc/keep" in layer_diff(rebuilt, upper).entries
