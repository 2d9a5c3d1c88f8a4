"""The plan, computed before anything runs, and its execution, for any list of stages.

The engine knows no particular stage: callers pass the list (stages/catalog.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from builder.cache import Manifest, StageCache, make_manifest
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.publish import publish_copy
from builder.runner import CommandResult, Runner, SubprocessRunner
from builder.stage import Stage, StageContext


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    manifest: Manifest
    cache: StageCache
    cached: bool
    will_run: bool
    changes: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.manifest.key()


@dataclass
class Plan:
    config: BuildConfig
    steps: list[PlannedStage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # shown before the plan or the build
    # Filled by execute: seconds each stage that ran took (a cached one is not listed).
    durations: dict[str, float] = field(default_factory=dict)

    def duration_table(self) -> list[str]:
        """One line per stage: its time, or that it came from the cache."""
        lines = []
        for step in self.steps:
            seconds = self.durations.get(step.stage.name)
            shown = f"{seconds:7.1f}s" if seconds is not None else "  cached"
            lines.append(f"{step.stage.name:<12} {shown}")
        return lines

    def step(self, name: str) -> PlannedStage:
        for step in self.steps:
            if step.stage.name == name:
                return step
        raise KeyError(name)


def cache_root(config: BuildConfig, stage: Stage) -> Path:
    # Final images live beside WORK_DIR's published files: a reflink needs one filesystem.
    return (config.work_dir / ".cache") if stage.final else (config.tmp_dir / "cache")


def _closure(stages: Sequence[Stage], names: set[str], downward: bool) -> set[str]:
    """`names` plus everything they depend on (downward) or that depends on them."""
    result = set(names)
    changed = True
    while changed:
        changed = False
        for stage in stages:
            if downward and stage.name in result:
                new = set(stage.depends) - result
            elif not downward and set(stage.depends) & result and stage.name not in result:
                new = {stage.name}
            else:
                new = set()
            if new:
                result |= new
                changed = True
    return result


def make_plan(config: BuildConfig, stages: Sequence[Stage], until: str | None = None,
              force: Sequence[str] = (), offline: bool = False) -> Plan:
    """`offline`: do not look up outside sources (resolved inputs); take them as the last
    build saw them."""
    names = [s.name for s in stages]
    for name in [until, *force]:
        if name is not None and name not in names:
            raise BuildError(f"unknown stage {name!r}", f"stages are: {', '.join(names)}")
    wanted = _closure(stages, {until}, downward=True) if until else set(names)
    forced = _closure(stages, set(force), downward=False)
    plan = Plan(config)
    keys: dict[str, str] = {}
    for stage in stages:
        missing = [d for d in stage.depends if d not in keys and d in names]
        if missing:
            raise BuildError(f"stage {stage.name} depends on {missing[0]}, which comes later",
                             "fix the stage order")
        try:
            values = {k: config.value(k) for k in stage.config_keys}
        except KeyError as err:
            raise BuildError(f"stage {stage.name} reads {err}", "fix its config_keys") from None
        cache = StageCache(cache_root(config, stage), stage.name)
        last = cache.last_manifest()
        resolved = _resolve(stage, config, last, plan.notes, offline)
        manifest = make_manifest(stage.name, stage.version, values,
                                 stage.input_files(config),
                                 {d: keys[d] for d in stage.depends if d in keys},
                                 config.project_root, code=stage.code_files(),
                                 resolved=resolved)
        keys[stage.name] = manifest.key()
        cached = cache.has(manifest.key())
        changes = () if cached else tuple(_explained_changes(stage, config, manifest, last, cache))
        will_run = stage.name in wanted and (not cached or stage.name in forced)
        plan.steps.append(PlannedStage(stage, manifest, cache, cached, will_run, changes))
    plan.steps = [s for s in plan.steps if s.stage.name in wanted]
    return plan


def _resolve(stage: Stage, config: BuildConfig, last: Manifest | None,
             notes: list[str], offline: bool) -> dict[str, str]:
    if offline:
        problem = "offline"
    else:
        try:
            return stage.resolved_inputs(config)
        except BuildError as err:
            problem = err.problem
    if last is not None and last.resolved:
        # Keep what the last build saw, so a cached stage stays usable without a network.
        notes.append(f"{stage.name}: {problem}; taking its sources as the last build saw them "
                     "(newer packages, security updates too, are not looked for)")
        return dict(last.resolved)
    notes.append(f"{stage.name}: {problem}; its sources could not be looked up")
    return {"unresolved": problem} if not offline else {}


def _explained_changes(stage: Stage, config: BuildConfig, manifest: Manifest,
                       last: Manifest | None, cache: StageCache) -> list[str]:
    changes = manifest.changes_since(last)
    if last is None or last.resolved == manifest.resolved:
        return changes
    entry = cache.entry(last.key())
    try:
        words = stage.explain(config, last.resolved, manifest.resolved,
                              entry if entry.is_dir() else None)
    except BuildError as err:
        words = [f"could not tell which packages changed ({err.problem})"]
    others = [c for c in changes if not c.startswith("source changed ")]
    return [*words, *others] if words else changes


Progress = Callable[[str], None]
RunnerFactory = Callable[[Path, Progress], Runner]


def _default_runner(log_path: Path, progress: Progress) -> Runner:
    return SubprocessRunner(log_path, echo=lambda line: progress(f"  $ {line[:110]}"))


def execute(plan: Plan, progress: Progress,
            runner_factory: RunnerFactory = _default_runner, jobs: int = 4) -> list[Path]:
    """Run the stages that need it; return the published files.

    A stage starts once the stages it depends on are done; stages ready together (the
    ISO and the USB image, the bootloader beside everything) run in threads, each with
    its own log, runner and undo stack. A lone ready stage runs in the calling thread.
    On a failure nothing new starts and the running stages finish; on an interrupt their
    commands are stopped and each unwinds its own stack before the interrupt goes on.
    """
    (plan.config.tmp_dir / "logs").mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    in_plan = {step.stage.name for step in plan.steps}
    pending = list(plan.steps)
    cancel = threading.Event()
    running: dict[Future[None], PlannedStage] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        try:
            while pending or running:
                ready = [step for step in pending if failure is None
                         and all(d in outputs for d in step.stage.depends if d in in_plan)]
                for step in ready:
                    pending.remove(step)
                    if not step.will_run:
                        _use_cached(step, outputs, progress)
                        continue
                ready = [step for step in ready if step.will_run]
                if len(ready) == 1 and not running:  # nothing else could start meanwhile
                    _run_step(plan, ready[0], outputs, progress, runner_factory, cancel)
                    continue
                for step in ready:
                    _announce(step, plan, progress)
                    running[pool.submit(_run_step, plan, step, outputs, progress,
                                        runner_factory, cancel, False)] = step
                if not running:
                    if failure is not None or not pending:
                        break
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    del running[future]
                    error = future.exception()
                    if error is not None and failure is None:
                        failure = error
            if failure is not None:
                raise failure
        except BaseException:
            cancel.set()
            _stop_children()
            raise
    return publish(plan, outputs)


def _use_cached(step: PlannedStage, outputs: dict[str, Path], progress: Progress) -> None:
    step.cache.sweep_temps()
    progress(f"[{step.stage.name}] cached ({step.key[:12]})")
    step.cache.mark_used(step.manifest)
    outputs[step.stage.name] = step.cache.entry(step.key)


def _announce(step: PlannedStage, plan: Plan, progress: Progress) -> None:
    log_path = plan.config.tmp_dir / "logs" / f"{step.stage.name}.log"
    reason = ", ".join(step.changes[:4]) if step.changes else "forced"
    progress(f"[{step.stage.name}] running ({reason}); log: {log_path}")


class _CancellableRunner:
    """After an interrupt, refuses to start checked commands (work) in a stage's thread;
    unchecked ones (umount, losetup --detach: the undo) still run."""

    def __init__(self, inner: Runner, cancel: threading.Event) -> None:
        self.inner = inner
        self.cancel = cancel

    def run(self, argv: Sequence[str | os.PathLike[str]], *, input: bytes | None = None,
            env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
            check: bool = True, capture: bool = False) -> CommandResult:
        if check and self.cancel.is_set():
            raise KeyboardInterrupt("build interrupted")
        return self.inner.run(argv, input=input, env=env, cwd=cwd, check=check,
                              capture=capture)


def _stop_children() -> None:
    """SIGTERM the process groups the runner started (each command leads its own) for
    the stages still running in threads: their commands fail and their stacks unwind."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and int(fields[2]) == int(entry.name):  # ppid, pgid
            try:
                os.killpg(int(entry.name), signal.SIGTERM)
            except ProcessLookupError:
                pass


def _run_step(plan: Plan, step: PlannedStage, outputs: dict[str, Path], progress: Progress,
              runner_factory: RunnerFactory, cancel: threading.Event,
              announce: bool = True) -> None:
    config = plan.config
    name = step.stage.name
    step.cache.sweep_temps()
    log_path = config.tmp_dir / "logs" / f"{name}.log"
    log_path.write_text(f"# stage {name} key {step.key}\n")
    started = time.monotonic()
    if announce:
        _announce(step, plan, progress)

    def stage_progress(message: str, _name: str = name, _t0: float = started) -> None:
        progress(f"[{_name} {time.monotonic() - _t0:6.1f}s] {message}")

    temp = step.cache.new_temp()
    try:
        with ExitStack() as stack:
            ctx = StageContext(
                config=config, output=temp,
                inputs={d: outputs[d] for d in step.stage.depends if d in outputs},
                runner=_CancellableRunner(runner_factory(log_path, stage_progress), cancel),
                stack=stack, log_path=log_path, progress=stage_progress,
                resolved=step.manifest.resolved)
            step.stage.run(ctx)
        outputs[name] = step.cache.commit(temp, step.manifest)
    except BuildError as err:
        _discard(step.cache, temp)
        if cancel.is_set():  # a command stopped by the interrupt: report that
            raise KeyboardInterrupt("build interrupted") from None
        if err.log_path is None:
            err.log_path = log_path
        raise BuildError(f"stage {name} failed: {err.problem}", err.fix,
                         err.log_path) from None
    except BaseException:
        _discard(step.cache, temp)
        raise
    plan.durations[name] = time.monotonic() - started
    progress(f"[{name}] done in {plan.durations[name]:.1f}s")


def _discard(cache: StageCache, temp: Path) -> None:
    # The stack has unwound (mounts gone); a failure here must not hide the first error.
    # A temp dir is never read by a lookup, so leaving one behind is safe.
    try:
        cache.sweep_temps()
    except (BuildError, OSError):
        pass


def publish(plan: Plan, outputs: dict[str, Path]) -> list[Path]:
    """Copy final stages' files into WORK_DIR (builder/publish.py says why not links)."""
    published: list[Path] = []
    work_dir = plan.config.work_dir
    for step in plan.steps:
        if not step.stage.final or step.stage.name not in outputs:
            continue
        for name in step.stage.published(plan.config):
            target = work_dir / name
            publish_copy(outputs[step.stage.name] / name, target, step.key)
            published.append(target)
    return published
