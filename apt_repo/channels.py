"""Channels of the repository and how a git ref maps to one (upstream's version.sh)."""

from __future__ import annotations

from builder.errors import BuildError

CHANNELS = ("release", "testing", "unstable")


def channel_for_ref(ref: str) -> str:
    """`v*` tags → release, `testing*` tags → testing, anything else → unstable.

    Accepts a full ref (refs/tags/v1.0) or a bare tag name (v1.0). Branches
    (refs/heads/...) are never tags, so they are unstable whatever their name.
    """
    if ref.startswith("refs/tags/"):
        tag = ref[len("refs/tags/"):]
    elif ref.startswith("refs/"):
        return "unstable"
    else:
        tag = ref
    if tag.startswith("testing"):
        return "testing"
    if tag.startswith("v"):
        return "release"
    return "unstable"


def check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise BuildError(f"unknown channel {channel!r}", f"use one of {', '.join(CHANNELS)}")
    return channel
