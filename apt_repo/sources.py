"""How apt reaches the repository: deb822 sources text, for the chroot and the image."""

from __future__ import annotations

from apt_repo.keys import IMAGE_KEYRING

SOURCES_NAME = "golem-gpu-live.sources"  # under /etc/apt/sources.list.d/


def deb822(uri: str, codename: str, keyring: str = IMAGE_KEYRING,
           component: str = "main") -> str:
    """One deb822 stanza, signatures checked against `keyring` only (never trusted=yes)."""
    if not uri or any(c.isspace() for c in uri):
        raise ValueError(f"bad repository URI {uri!r}")
    return (f"Types: deb\nURIs: {uri}\nSuites: {codename}\nComponents: {component}\n"
            f"Signed-By: {keyring}\n")
