"""Parsing a build's own progress records and rendering docs/benchmarks.md (no I/O)."""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The scenarios, in the order of the table: (key, what it measures).
SCENARIOS = (
    ("cold-empty", "cold build, empty package cache"),
    ("cold-warm", "cold build, warm package cache"),
    ("edit", "rebuild after editing one overlay file"),
    ("noop", "no-op rebuild"),
)
DONE = re.compile(r"^\s*[\d.]+s \[([\w-]+)\] done in ([\d.]+)s$", re.MULTILINE)
CACHED = re.compile(r"^\s*[\d.]+s \[([\w-]+)\] cached \(", re.MULTILINE)
FINISHED = re.compile(r"^build finished in ([\d.]+)s", re.MULTILINE)
# Issue 12's targets: (scenario, limit in seconds or None, limit as a share of live-build's)
EDIT_LIMIT, EDIT_SHARE = 5.0, 1 / 20
NOOP_LIMIT = 0.5
COLD_WARM_SHARE = 0.3


def stage_times(output: str) -> dict[str, float | None]:
    """Each stage's seconds from a `golem-live build` output (None: from the cache)."""
    times: dict[str, float | None] = {m.group(1): None for m in CACHED.finditer(output)}
    times.update({m.group(1): float(m.group(2)) for m in DONE.finditer(output)})
    return times


def own_seconds(output: str) -> float | None:
    """The build's own clock ("build finished in 0.1s"): the plan and the stages, without
    the Python start-up that the end-to-end time also counts."""
    found = FINISHED.search(output)
    return float(found.group(1)) if found else None


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Tool:
    """One builder's measurements: seconds per scenario (one per repeat), ISO bytes."""

    name: str
    seconds: dict[str, list[float]] = field(default_factory=dict)
    own: dict[str, list[float]] = field(default_factory=dict)  # the build's own clock
    repeats: int = 0
    iso_bytes: int | None = None
    commands: list[str] = field(default_factory=list)

    def add(self, scenario: str, seconds: float) -> None:
        self.seconds.setdefault(scenario, []).append(seconds)

    def median(self, scenario: str) -> float | None:
        return median(self.seconds.get(scenario, []))

    def own_median(self, scenario: str) -> float | None:
        return median(self.own.get(scenario, []))


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.3f}"


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.0f} MiB"


def _verdict(value: float | None, limit: float) -> str:
    return "not measured" if value is None else ("met" if value <= limit else "MISSED")


def _share(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else ours / theirs


def render_targets(ours: Tool, theirs: Tool) -> list[str]:
    """Issue 12's targets, each with what this run measured and whether it was met."""
    edit = ours.median("edit")
    edit_share = _share(edit, theirs.median("edit"))
    noop = ours.median("noop")  # end to end: Python's start-up and the plan count
    warm_share = _share(ours.median("cold-warm"), theirs.median("cold-warm"))
    rows = [
        (f"rebuild after one overlay edit: at most {EDIT_LIMIT:.0f} s", _secs(edit),
         _verdict(edit, EDIT_LIMIT)),
        ("... and at most 1/20 of live-build's", _ratio(edit, theirs.median("edit")),
         _verdict(edit_share, EDIT_SHARE)),
        (f"no-op rebuild: at most {NOOP_LIMIT} s (golem-live end to end, without make; "
         f"the stages' own clock {_secs(ours.own_median('noop'))})", _secs(noop),
         _verdict(noop, NOOP_LIMIT)),
        (f"cold build, warm package cache: at most {COLD_WARM_SHARE} of live-build's",
         _ratio(ours.median("cold-warm"), theirs.median("cold-warm")),
         _verdict(warm_share, COLD_WARM_SHARE)),
    ]
    lines = ["", "## Targets (issue 12)", "", "| target | measured | |", "| --- | --- | --- |"]
    return lines + [f"| {target} | {value} | {verdict} |" for target, value, verdict in rows]


def render(ours: Tool, theirs: Tool, stages: Mapping[str, Mapping[str, float | None]],
           machine: str, date: str, extra: Sequence[str] = ()) -> str:
    """docs/benchmarks.md: the side-by-side table, the targets, our per-stage table, any
    `extra` sections (write and boot times), the commands."""
    runs = ", ".join(f"{tool.name} {tool.repeats}" for tool in (ours, theirs) if tool.repeats)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {date}: {machine}. End-to-end wall time of each "
        f"command; the median of the runs of each scenario (runs per scenario: {runs}).",
        "",
        f"| scenario | {ours.name} | {theirs.name} | ours / theirs |",
        "| --- | --- | --- | --- |",
    ]
    for key, words in SCENARIOS:
        mine, other = ours.median(key), theirs.median(key)
        lines.append(f"| {words} | {_secs(mine)} | {_secs(other)} | {_ratio(mine, other)} |")
    lines.append(f"| ISO size | {_mib(ours.iso_bytes)} | {_mib(theirs.iso_bytes)} | "
                 f"{_ratio(ours.iso_bytes, theirs.iso_bytes)} |")
    lines += render_targets(ours, theirs)
    names: list[str] = []
    for times in stages.values():
        names += [n for n in times if n not in names]
    lines += ["", f"## {ours.name}: seconds per stage (last run of each scenario)", "",
              "| stage | " + " | ".join(words for key, words in SCENARIOS if key in stages)
              + " |",
              "| --- |" + " --- |" * sum(1 for key, _ in SCENARIOS if key in stages)]
    for name in names:
        cells = []
        for key, _ in SCENARIOS:
            if key in stages:
                value = stages[key].get(name)
                cells.append("cached" if name in stages[key] and value is None
                             else _secs(value))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += extra
    for tool in (ours, theirs):
        if tool.commands:
            lines += ["", f"## Commands: {tool.name}", "", "```shell", *tool.commands, "```"]
    return "\n".join(lines) + "\n"
