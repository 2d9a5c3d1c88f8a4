"""Cache keys, the plan and its execution, with small fake stages (no root needed)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from builder.config import BuildConfig, make_config
from builder.errors import BuildError
from builder.mounts import mount
from builder.pipeline import execute, make_plan
from builder.stage import Stage, StageContext
from tests.fakes import RecordingRunner


class Recorder:
    def __init__(self) -> None:
        self.ran: list[str] = []


class FakeStage(Stage):
    fail_with: ClassVar[BaseException | None] = None

    def __init__(self, recorder: Recorder, input_name: str | None = None) -> None:
        self.recorder = recorder
        self.input_name = input_name

    def input_files(self, config: BuildConfig) -> list[Path]:
        return [config.project_root / self.input_name] if self.input_name else []

    def run(self, ctx: StageContext) -> None:
        self.recorder.ran.append(self.name)
        previous = "".join((p / "out.txt").read_text() for p in ctx.inputs.values())
        (ctx.output / "out.txt").write_text(previous + self.name + "\n")
        if self.fail_with is not None:
            mount(ctx.stack, ctx.runner, ctx.output / "mnt", "--bind", "/nowhere")
            raise self.fail_with


class First(FakeStage):
    name = "first"
    config_keys = ("profile.debian.suite",)


class Second(FakeStage):
    name = "second"
    depends = ("first",)
    config_keys = ("profile.packages",)


class Third(FakeStage):
    name = "third"
    depends = ("second",)


class Final(FakeStage):
    name = "final"
    depends = ("third",)
    final = True

    def published(self, config: BuildConfig) -> list[str]:
        return ["out.txt"]


def stages(recorder: Recorder) -> list[Stage]:
    return [First(recorder), Second(recorder), Third(recorder, "rootfs/overlay/common/etc/motd.j2"),
            Final(recorder)]


@pytest.fixture
def config(fake_project: Path, tmp_path: Path) -> BuildConfig:
    return make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp", tmp_path / "work")


def run(config: BuildConfig, recorder: Recorder, **kwargs: object) -> RecordingRunner:
    runner = RecordingRunner()
    plan = make_plan(config, stages(recorder), **kwargs)  # type: ignore[arg-type]
    execute(plan, lambda message: None, lambda log, progress: runner)
    return runner


def test_cold_build_runs_everything_and_publishes(config: BuildConfig) -> None:
    recorder = Recorder()
    run(config, recorder)
    assert recorder.ran == ["first", "second", "third", "final"]
    published = config.work_dir / "out.txt"
    assert published.read_text() == "first\nsecond\nthird\nfinal\n"


def test_second_build_runs_nothing(config: BuildConfig) -> None:
    run(config, Recorder())
    recorder = Recorder()
    plan = make_plan(config, stages(recorder))
    assert [s.will_run for s in plan.steps] == [False] * 4
    run(config, recorder)
    assert recorder.ran == []


def test_editing_an_input_file_reruns_from_that_stage(config: BuildConfig) -> None:
    run(config, Recorder())
    motd = config.project_root / "rootfs/overlay/common/etc/motd.j2"
    motd.write_text(motd.read_text() + "changed\n")
    recorder = Recorder()
    plan = make_plan(config, stages(recorder))
    assert plan.step("third").changes == ("file changed rootfs/overlay/common/etc/motd.j2",)
    assert plan.step("final").changes == ("input stage third changed",)
    run(config, recorder)
    assert recorder.ran == ["third", "final"]


def test_changing_a_config_value_reruns_its_readers_and_says_which(fake_project: Path,
                                                                   config: BuildConfig) -> None:
    run(config, Recorder())
    profile = fake_project / "rootfs/profiles/gpu-node.toml"
    profile.write_text(profile.read_text().replace('suite = "trixie"', 'suite = "bookworm"'))
    changed = make_config(fake_project, "gpu-node", "1.0", config.tmp_dir, config.work_dir)
    recorder = Recorder()
    plan = make_plan(changed, stages(recorder))
    assert plan.step("first").changes == ("config profile.debian.suite",)
    # profile.packages (a tuple, a list once read back from the manifest) did not change
    assert plan.step("second").changes == ("input stage first changed",)
    run(changed, recorder)
    assert recorder.ran == ["first", "second", "third", "final"]


def test_until_stops_and_force_reruns_dependents(config: BuildConfig) -> None:
    recorder = Recorder()
    run(config, recorder, until="second")
    assert recorder.ran == ["first", "second"]
    assert not (config.work_dir / "out.txt").exists()
    run(config, Recorder())
    recorder = Recorder()
    run(config, recorder, force=("second",))
    assert recorder.ran == ["second", "third", "final"]


def test_unknown_stage_name_is_a_clear_error(config: BuildConfig) -> None:
    with pytest.raises(BuildError, match="unknown stage 'nope'.*first, second"):
        make_plan(config, stages(Recorder()), until="nope")


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), BuildError("boom", "fix it")])
def test_failed_or_interrupted_stage_leaves_no_entry_and_unmounts(
        config: BuildConfig, failure: BaseException) -> None:
    recorder = Recorder()
    Second.fail_with = failure
    try:
        with pytest.raises(type(failure)):
            runner = run(config, recorder)
    finally:
        Second.fail_with = None
    second_cache = config.tmp_dir / "cache" / "second"
    assert [p.name for p in second_cache.iterdir() if not p.name.startswith(".tmp")] == []
    assert not any(p.name.startswith(".tmp-") for p in second_cache.iterdir())
    # The next build reuses "first" and completes.
    recorder = Recorder()
    runner = run(config, recorder)
    assert recorder.ran == ["second", "third", "final"]
    assert runner.calls == []


def test_mount_is_undone_when_the_stage_fails(config: BuildConfig) -> None:
    runner = RecordingRunner()
    Second.fail_with = BuildError("boom")
    try:
        plan = make_plan(config, stages(Recorder()))
        with pytest.raises(BuildError, match="stage second failed: boom"):
            execute(plan, lambda message: None, lambda log, progress: runner)
    finally:
        Second.fail_with = None
    programs = [argv[0] for argv in runner.argvs]
    assert programs == ["mount", "umount"]
    assert runner.argvs[1][1].endswith("/mnt")


def test_manifest_lives_beside_each_entry(config: BuildConfig) -> None:
    run(config, Recorder())
    plan = make_plan(config, stages(Recorder()))
    step = plan.step("first")
    manifest = (step.cache.dir / f"{step.key}.json").read_text()
    assert '"profile.debian.suite": "trixie"' in manifest
    assert step.cache.entry(step.key).is_dir()


def test_stage_code_is_part_of_the_key(config: BuildConfig) -> None:
    from stages.usb import UsbImageStage

    files = make_plan(config, [UsbImageStage()]).step("usb").manifest.files
    assert {"code:stages/usb.py", "code:disk/assemble.py",
            "code:disk/layout.py"} <= set(files)
    fake = make_plan(config, stages(Recorder())).step("first").manifest.files
    assert "code:tests/test_pipeline.py" in fake


def cache_entry(config: BuildConfig, recorder: Recorder) -> Path:
    step = make_plan(config, stages(recorder)).step("final")
    return step.cache.entry(step.key) / "out.txt"


def test_a_published_image_is_a_copy_so_editing_it_leaves_the_cache_alone(
        config: BuildConfig) -> None:
    run(config, Recorder())
    published = config.work_dir / "out.txt"
    cached = cache_entry(config, Recorder())
    assert published.stat().st_ino != cached.stat().st_ino
    # Someone drops their secrets into the published image (as with a loop mount).
    with open(published, "r+") as image:
        image.write("WALLET")
    assert cached.read_text() == "first\nsecond\nthird\nfinal\n"
    recorder = Recorder()
    run(config, recorder)
    assert recorder.ran == []  # cached, and the pristine image is published again
    assert published.read_text() == "first\nsecond\nthird\nfinal\n"


def test_an_untouched_published_copy_is_not_copied_again(config: BuildConfig) -> None:
    run(config, Recorder())
    published = config.work_dir / "out.txt"
    inode = published.stat().st_ino
    run(config, Recorder())
    assert published.stat().st_ino == inode


def test_the_sparse_copy_keeps_holes_and_content(tmp_path: Path) -> None:
    from builder.publish import copy_sparse

    source = tmp_path / "disk.img"
    with open(source, "wb") as handle:
        handle.write(b"head")
        handle.seek(64 << 20)
        handle.write(b"middle")
        handle.truncate(200 << 20)
    target = tmp_path / "copy.img"
    copy_sparse(source, target)
    assert target.stat().st_size == source.stat().st_size
    with open(target, "rb") as handle:
        assert handle.read(4) == b"head"
        handle.seek(64 << 20)
        assert handle.read(6) == b"middle"
    assert target.stat().st_blocks * 512 < 16 << 20  # the holes stayed holes


class Sourced(FakeStage):
    """A stage whose output depends on an outside source's state (like the archive)."""

    name = "sourced"
    state: ClassVar[dict[str, str] | BuildError] = {"archive": "v1"}

    def resolved_inputs(self, config: BuildConfig) -> dict[str, str]:
        if isinstance(self.state, BuildError):
            raise self.state
        return dict(self.state)

    def explain(self, config: BuildConfig, previous: dict[str, str], current: dict[str, str],
                previous_entry: Path | None) -> list[str]:
        assert previous_entry is not None and (previous_entry / "out.txt").exists()
        return [f"archive moved from {previous['archive']} to {current['archive']}"]


def sourced_plan(config: BuildConfig, state: dict[str, str] | BuildError,
                 offline: bool = False):
    Sourced.state = state
    return make_plan(config, [Sourced(Recorder())], offline=offline)


def test_a_changed_outside_source_reruns_the_stage_and_says_why(config: BuildConfig) -> None:
    execute(sourced_plan(config, {"archive": "v1"}), lambda m: None,
            lambda log, progress: RecordingRunner())
    assert sourced_plan(config, {"archive": "v1"}).steps[0].cached
    changed = sourced_plan(config, {"archive": "v2"}).steps[0]
    assert changed.will_run and changed.changes == ("archive moved from v1 to v2",)


def test_an_unreachable_source_reuses_what_the_last_build_saw(config: BuildConfig) -> None:
    execute(sourced_plan(config, {"archive": "v1"}), lambda m: None,
            lambda log, progress: RecordingRunner())
    for plan in (sourced_plan(config, BuildError("cannot read InRelease")),
                 sourced_plan(config, {"archive": "v2"}, offline=True)):
        assert plan.steps[0].cached
        assert len(plan.notes) == 1 and "as the last build saw them" in plan.notes[0]


def test_an_unreachable_source_with_no_build_before_plans_a_run(config: BuildConfig) -> None:
    plan = sourced_plan(config, BuildError("cannot read InRelease"))
    assert plan.steps[0].will_run
    assert plan.notes == ["sourced: cannot read InRelease; its sources could not be looked up"]


def test_the_plan_records_how_long_each_stage_ran(config: BuildConfig) -> None:
    recorder = Recorder()
    plan = make_plan(config, stages(recorder))
    execute(plan, lambda m: None, lambda log, progress: RecordingRunner())
    assert set(plan.durations) == {"first", "second", "third", "final"}
    assert all(seconds >= 0 for seconds in plan.durations.values())
    again = make_plan(config, stages(recorder))
    execute(again, lambda m: None, lambda log, progress: RecordingRunner())
    assert again.durations == {}
    assert again.duration_table() == [f"{name:<12}   cached"
                                      for name in ("first", "second", "third", "final")]
