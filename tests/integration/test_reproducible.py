"""Two cold builds of gpu-node give byte-identical images (issue 11): the session's
build and a second one from scratch, with the same SOURCE_DATE_EPOCH, pinned to the
first build's package lock (as a release is rebuilt from its lock)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.config import make_config
from builder.pipeline import make_plan
from golem_live.reproduce import differing_files
from stages.catalog import stage_list
from stages.packages import LOCK_FILE
from tests.conftest import MEASUREMENTS, PROJECT_ROOT, BuiltImage, build_args, golem_live

pytestmark = pytest.mark.root


def stage_entries(tmp_dir: Path, work_dir: Path,
                  lock: Path | None = None) -> dict[str, tuple[str, Path]]:
    config = make_config(PROJECT_ROOT, "gpu-node", "test", tmp_dir, work_dir,
                         packages_lock=lock)
    plan = make_plan(config, stage_list(config), offline=True)
    return {s.stage.name: (s.key, Path(s.cache.entry(s.key))) for s in plan.steps}


def test_a_second_cold_build_is_byte_identical(gpu_node_image: BuiltImage,
                                               tmp_path: Path) -> None:
    tmp_dir, work_dir = tmp_path / "tmp", tmp_path / "work"
    first = stage_entries(gpu_node_image.tmp_dir, gpu_node_image.work_dir)
    # A copy: the first entry may be evicted while the second build runs.
    lock = tmp_path / "golem-gpu-live-test.packages.lock"
    lock.write_bytes((first["packages"][1] / LOCK_FILE).read_bytes())
    result = golem_live("build", *build_args(tmp_dir, work_dir), "--packages-lock", str(lock))
    if result.returncode != 0 and "do not match" in result.stderr and \
            " locked " in result.stderr:
        pytest.skip("the Debian archive no longer serves a locked version: "
                    + result.stderr.strip().splitlines()[-1][:300])
    assert result.returncode == 0, result.stderr[-3000:]
    second = stage_entries(tmp_dir, work_dir, lock)
    assert (second["packages"][1] / LOCK_FILE).read_bytes() == lock.read_bytes()
    differing = []
    for media, image in (("usb", gpu_node_image.img), ("iso", gpu_node_image.iso)):
        other = work_dir / image.name
        if subprocess.run(["cmp", "--quiet", str(image), str(other)]).returncode != 0:
            differing.append(media)
    MEASUREMENTS["reproducible (second cold build)"] = "identical" if not differing else \
        f"differs: {', '.join(differing)}"
    if differing:  # name each stage whose output differs, and its first differing files
        report = [f"{name}: {differing_files(first[name][1], second[name][1])[:5]}"
                  for name in ("packages", "squashfs-base", "overlay", "squashfs", "bootloader",
                               "iso", "usb")]
        pytest.fail(f"images differ: {differing}\n" + "\n".join(report))
