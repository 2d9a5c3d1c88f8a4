"""`golemwz check FILE`: validate a first-boot or saved TOML anywhere, touching nothing.

A person prepares golemwz.toml on a laptop before booting the stick; this runs the
boot's own reading and validation (config.read_toml, config.parse_layer) and lists
every problem at once, where the boot would stop at the first one. It needs no
root, mounts nothing and never writes: it only reads FILE.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from golemwz.config import (
    UNATTENDED_DEFAULTS,
    merge_env,
    parse_env_file,
    parse_layer,
    read_text,
    read_toml,
)
from golemwz.errors import ConfigError
from golemwz.layout import FIRST_BOOT_FILE_NAME, GOLEM_ENV_FILE_NAME
from golemwz.profile_spec import ProfileSpec

# What an unattended boot (non_interactive_install = true) stops without; the keys of
# config.UNATTENDED_DEFAULTS it fills in (wizard.Wizard.obtain) and says so. The GLM
# keys are needed only where GOLEM's packages are installed (the golem-provider
# image, not gpu-node), which a laptop cannot tell: they are notes, not errors.
UNATTENDED_REQUIRED = ("accepted_terms",)
UNATTENDED_GLM = ("glm_account", "glm_per_hour")


def check_file(path: Path, spec: ProfileSpec | None = None) -> tuple[list[ConfigError],
                                                                      list[str]]:
    """(errors, notes) for the file; no errors means the boot accepts every value.
    `spec`: the profile whose [profile] keys the file may set (None: GOLEM's wizard)."""
    if path.name == GOLEM_ENV_FILE_NAME:  # the imager's KEY=VALUE file, on its own
        try:
            text = read_text(path, path.name)
        except ConfigError as unreadable:
            return [unreadable], []
        if text is None:
            return [ConfigError("", f"{path} does not exist", "give the path of a golem.env")], []
        return parse_env_file(text, str(path))[1], []
    try:
        data = read_toml(path, path.name)
    except ConfigError as unreadable:
        return [unreadable], []
    if data is None:
        return [ConfigError("", f"{path} does not exist",
                            "give the path of a golemwz.toml or golemwz-saved.toml")], []
    settings, errors = parse_layer(data, str(path), spec)
    notes: list[str] = []
    # The boot merges golem.env (GOLEM's imager writes it beside golemwz.toml) under the
    # first-boot file's [env]; a saved configuration is read alone.
    env_path = path.with_name(GOLEM_ENV_FILE_NAME)
    if path.name == FIRST_BOOT_FILE_NAME:
        try:
            env_text = read_text(env_path, GOLEM_ENV_FILE_NAME)
        except ConfigError as unreadable:
            env_text, errors = None, errors + [unreadable]
        if env_text is not None:
            env, env_errors = parse_env_file(env_text, str(env_path))
            errors += env_errors
            merged = merge_env(env, settings.env)
            notes.append(f"{env_path} is read too: the provider gets "
                         + (", ".join(name for name, _value in merged or ()) or "no variable")
                         + f" ({FIRST_BOOT_FILE_NAME}'s [env] wins)")
    if settings.glm_account == "":
        notes.append("glm_account is empty: payments go to the node's own wallet")
    if settings.configuration_server:
        notes.append(f"configuration_server {settings.configuration_server} is kept, but "
                     "this image does not poll it yet")
    if settings.non_interactive_install and spec is None:
        for key in UNATTENDED_REQUIRED:
            if getattr(settings, key) is None and not any(e.key == key for e in errors):
                errors.append(ConfigError(
                    key, f"{path}: {key} is missing and non_interactive_install is true",
                    f"add {key}, see golemwz-example.toml"))
        if settings.accepted_terms is False:
            errors.append(ConfigError(
                "accepted_terms", f"{path}: accepted_terms = false: the wizard stops at once",
                "write accepted_terms = true once you accept the terms"))
        notes += [f"{key} is missing: needed on the golem-provider image (unattended)"
                  for key in UNATTENDED_GLM
                  if getattr(settings, key) is None and not any(e.key == key for e in errors)]
        notes += [f"{key} is missing: the unattended boot takes {default}"
                  for key, default in UNATTENDED_DEFAULTS.items()
                  if getattr(settings, key) is None and not any(e.key == key for e in errors)]
    return errors, notes


def run_check(path: Path, out: TextIO, spec: ProfileSpec | None = None) -> int:
    """Print every error with its key and fix (exit 2), or "valid" (exit 0)."""
    errors, notes = check_file(path, spec)
    for error in errors:
        out.write(f"{error.key or '(file)'}: {error.line()}\n")
    for note in notes:
        out.write(f"note: {note}\n")
    if errors:
        out.write(f"{path}: {len(errors)} error{'s' if len(errors) > 1 else ''}\n")
        return 2
    out.write(f"{path}: valid\n")
    return 0
