"""How apt reaches a repository: the deb822 sources text every writer uses (chroot, image)."""

from __future__ import annotations

from apt_repo.keys import IMAGE_KEYRING

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"  # debian-archive-keyring

SOURCES_NAME = "golem-gpu-live.sources"  # under /etc/apt/sources.list.d/


def deb822(uri: str, suites: str | tuple[str, ...], keyring: str = IMAGE_KEYRING,
           components: tuple[str, ...] = ("main",)) -> str:
    """One deb822 stanza, signatures checked against `keyring` only (never trusted=yes)."""
    if not uri or any(c.isspace() for c in uri):
        raise ValueError(f"bad repository URI {uri!r}")
    suite_list = (suites,) if isinstance(suites, str) else suites
    return (f"Types: deb\nURIs: {uri}\nSuites: {' '.join(suite_list)}\n"
            f"Components: {' '.join(components)}\nSigned-By: {keyring}\n")
