"""Directories the wizard makes on the storage partition, which whoever held the stick
can write: a symbolic link anywhere on the way (a bind mount, a mkdir or a file write
would follow it out of the partition) is refused."""

from __future__ import annotations

from pathlib import Path

from golemwz.errors import WizardError


def safe_directory(base: Path, relative: str) -> Path:
    """base/relative, created where missing, with no symbolic link below base."""
    current = base
    for part in Path(relative).parts:
        current = current / part
        if current.is_symlink():
            raise WizardError(f"{current} on the storage partition is a symbolic link",
                              "remove it (the wizard uses only real directories there)")
        if not current.exists():
            current.mkdir(mode=0o750)
        elif not current.is_dir():
            raise WizardError(f"{current} on the storage partition is not a directory",
                              "remove or rename it")
    return current
