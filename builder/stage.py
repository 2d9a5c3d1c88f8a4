"""What a stage is: a name, a version, the config keys and input files it reads
(its cache key) and a `run` that writes only into its own output directory.

Stages never import each other; they see their dependencies' outputs only as
directories in `StageContext.inputs`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from builder.config import BuildConfig
from builder.runner import Runner


@dataclass(frozen=True)
class StageContext:
    config: BuildConfig
    output: Path  # a fresh temp dir; renamed into the cache on success
    inputs: Mapping[str, Path]  # dependency stage name -> its committed output dir
    runner: Runner
    stack: ExitStack  # register every mount, loop device and temp dir here
    log_path: Path
    progress: Callable[[str], None]
    # The stage's resolved inputs as planned (Stage.resolved_inputs).
    resolved: Mapping[str, str] = field(default_factory=dict)


class Stage:
    """Base class. Subclasses set the class attributes and implement run()."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    # Not a ClassVar: a stage may take an extra input for some profiles.
    depends: tuple[str, ...] = ()
    # Dotted paths into BuildConfig.as_dict(): e.g. "profile.suite", "version".
    config_keys: ClassVar[tuple[str, ...]] = ()
    # Final stages keep their entries under WORK_DIR and publish files there.
    final: ClassVar[bool] = False
    description: ClassVar[str] = ""
    # Project modules run() relies on besides its own (whose source is always part of
    # the key): editing the code that makes an output invalidates that output.
    code: ClassVar[tuple[str, ...]] = ()
    # Host programs run() needs; checked before anything runs.
    tools: ClassVar[tuple[str, ...]] = ()

    def input_files(self, config: BuildConfig) -> list[Path]:
        """Absolute paths of every file run() reads besides dependency outputs."""
        return []

    def code_files(self) -> list[Path]:
        names = (type(self).__module__, *self.code)
        files = []
        for name in names:
            source = getattr(importlib.import_module(name), "__file__", None)
            if source:
                files.append(Path(source))
        return files

    def resolved_inputs(self, config: BuildConfig) -> dict[str, str]:
        """State of outside sources the output depends on, looked up when planning (e.g.
        the hashes of an archive's package indexes): part of the key, so the stage reruns
        when the source changed. Raise BuildError when it cannot be looked up."""
        return {}

    def explain(self, config: BuildConfig, previous: dict[str, str], current: dict[str, str],
                previous_entry: Path | None) -> list[str]:
        """Say in words why changed resolved inputs matter (plan's "what changed")."""
        return []

    def preflight(self, config: BuildConfig) -> None:
        """Raise BuildError when a source the stage needs cannot be reached."""

    def run(self, ctx: StageContext) -> None:
        raise NotImplementedError

    def published(self, config: BuildConfig) -> list[str]:
        """For final stages: names of files in the output dir exposed in WORK_DIR."""
        return []
