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


def stage_times(output: str) -> dict[str, float | None]:
    """Each stage's seconds from a `golem-live build` output (None: from the cache)."""
    times: dict[str, float | None] = {m.group(1): None for m in CACHED.finditer(output)}
    times.update({m.group(1): float(m.group(2)) for m in DONE.finditer(output)})
    return times


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Tool:
    """One builder's measurements: seconds per scenario (one per repeat), ISO bytes."""

    name: str
    seconds: dict[str, list[float]] = field(default_factory=dict)
    iso_bytes: int | None = None
    commands: list[str] = field(default_factory=list)

    def add(self, scenario: str, seconds: float) -> None:
        self.seconds.setdefault(scenario, []).append(seconds)

    def median(self, scenario: str) -> float | None:
        return median(self.seconds.get(scenario, []))


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.3f}"


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.0f} MiB"


def render(ours: Tool, theirs: Tool, stages: Mapping[str, Mapping[str, float | None]],
           machine: str, date: str, repeats: int) -> str:
    """docs/benchmarks.md: the side-by-side table, our per-stage table, the commands."""
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {date}: {machine}. Medians of {repeats} run(s) per "
        "scenario; end-to-end wall time of the command.",
        "",
        f"| scenario | {ours.name} | {theirs.name} | ours / theirs |",
        "| --- | --- | --- | --- |",
    ]
    for key, words in SCENARIOS:
        mine, other = ours.median(key), theirs.median(key)
        lines.append(f"| {words} | {_secs(mine)} | {_secs(other)} | {_ratio(mine, other)} |")
    lines.append(f"| ISO size | {_mib(ours.iso_bytes)} | {_mib(theirs.iso_bytes)} | "
                 f"{_ratio(ours.iso_bytes, theirs.iso_bytes)} |")
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
    for tool in (ours, theirs):
        if tool.commands:
            lines += ["", f"## Commands: {tool.name}", "", "```shell", *tool.commands, "```"]
    return "\n".join(lines) + "\n"
