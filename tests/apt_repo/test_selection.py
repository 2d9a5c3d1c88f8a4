"""Unit tests: channels, the component list, release and asset selection."""

from __future__ import annotations

import pytest

from apt_repo.channels import CHANNELS, channel_for_ref, check_channel
from apt_repo.components import Selection, load_components, parse_components
from apt_repo.github import Asset, Release, select_assets, select_release
from builder.errors import BuildError


@pytest.mark.parametrize(("ref", "channel"), [
    ("refs/tags/v1.2.3", "release"),
    ("v0.1", "release"),
    ("refs/tags/testing-2024-05", "testing"),
    ("testing1", "testing"),
    ("refs/tags/nightly", "unstable"),
    ("refs/tags/pre-v1", "unstable"),
    ("refs/heads/v1-branch", "unstable"),
    ("refs/heads/main", "unstable"),
    ("", "unstable"),
])
def test_channel_follows_version_sh(ref: str, channel: str) -> None:
    assert channel_for_ref(ref) == channel


def test_unknown_channel_is_one_line_error() -> None:
    assert check_channel("testing") == "testing"
    with pytest.raises(BuildError) as err:
        check_channel("stable")
    assert str(err.value) == "unknown channel 'stable' — use one of release, testing, unstable"


def test_shipped_component_list() -> None:
    components = {c.name: c for c in load_components()}
    assert set(components) == {"yagna", "ya-runtime-wasi", "ya-runtime-vm",
                               "ya-runtime-vm-nvidia", "golem-nvidia-kernel",
                               "ya-installer-resources"}
    assert all(c.repo == f"golemfactory/{c.name}" for c in components.values())
    assert components["yagna"].assets == ("golem-provider_*.deb",)
    assert components["ya-runtime-vm"].selection == Selection(r"^v0\.4\.", True)
    assert components["ya-runtime-vm"].for_channel("testing") == Selection(r"^v0\.5\.", True)
    # full releases only, and `^v*` written as meant (as a regex it matches anything)
    assert components["yagna"].selection == Selection("^v[0-9]", False)
    assert not components["yagna"].selection.matches("pre-rel-v0.17.6-nightly", False)


def test_channel_override_and_defaults() -> None:
    (comp,) = parse_components("""
[[component]]
name = "x"
repo = "o/x"
tag = '^v1\\.'
[component.channels.unstable]
prerelease = true
""")
    assert comp.for_channel("release") == Selection("^v1\\.", False)
    assert comp.for_channel("unstable") == Selection("^v1\\.", True)
    assert comp.assets == ("*.deb",)
    assert set(CHANNELS) >= {"release", "unstable"}


@pytest.mark.parametrize(("text", "message"), [
    ('[[component]]\nname = "x"\nrepo = "o/x"\ntag = "("', "not a valid regular expression"),
    ('[[component]]\nname = "x"\nrepo = "o/x"\ntag = "v"\ncolour = 1', "unknown key(s) colour"),
    ('[[component]]\nname = "x"\nrepo = "x"\ntag = "v"', "`repo` must be OWNER/NAME"),
    ('[[component]]\nname = "x"\nrepo = "o/x"\ntag = "v"\nprerelease = "yes"',
     "`prerelease` must be true or false"),
    ('[[component]]\nname = "x"\nrepo = "o/x"\ntag = "v"\n[component.channels.stable]\n',
     "`channels.stable` is not one of"),
    ('[[component]]\nname = "x"\nrepo = "o/x"\ntag = "v"\n'
     '[[component]]\nname = "x"\nrepo = "o/y"\ntag = "v"', "lists x more than once"),
    ("component = [", "is invalid"),
    ("", "no [[component]] entries"),
])
def test_bad_component_list_is_one_line(text: str, message: str) -> None:
    with pytest.raises(BuildError) as err:
        parse_components(text, "components.toml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _release(tag: str, published: str, prerelease: bool = False, draft: bool = False,
             assets: tuple[str, ...] = ("a_1_all.deb",)) -> Release:
    return Release(tag=tag, prerelease=prerelease, draft=draft, published=published,
                   assets=tuple(Asset(n, f"http://x/{n}", 1, None) for n in assets))


RELEASES = [
    _release("v0.13.0", "2023-01-01T00:00:00Z"),
    _release("v0.14.0", "2023-06-01T00:00:00Z"),
    _release("v0.15.0-rc1", "2023-09-01T00:00:00Z", prerelease=True),
    _release("v0.16.0", "2024-01-01T00:00:00Z", draft=True),
    _release("v1.0.0", "2024-02-01T00:00:00Z"),
    _release("v0.13.1", "2024-03-01T00:00:00Z"),  # a late backport: newest 0.13
]


def test_latest_matching_tag_wins_not_latest_overall() -> None:
    assert select_release(RELEASES, Selection(r"^v0\.", False), "o/r").tag == "v0.13.1"
    assert select_release(RELEASES, Selection(r"^v0\.1[45]\.", False), "o/r").tag == "v0.14.0"


def test_prereleases_only_when_allowed_and_drafts_never() -> None:
    assert select_release(RELEASES, Selection(r"^v0\.1[4-6]", False), "o/r").tag == "v0.14.0"
    assert select_release(RELEASES, Selection(r"^v0\.1[4-6]", True), "o/r").tag == "v0.15.0-rc1"


def test_no_matching_tag_names_pattern_and_newest_tags() -> None:
    with pytest.raises(BuildError) as err:
        select_release(RELEASES, Selection("^v2", False), "golemfactory/yagna")
    assert str(err.value) == (
        "no release of golemfactory/yagna has a tag matching '^v2' (prereleases excluded); "
        "newest tags: v0.13.1, v1.0.0, v0.15.0-rc1, v0.14.0, v0.13.0 — adjust the pattern in "
        "apt_repo/components.toml")


def test_asset_globs() -> None:
    release = _release("v1", "2024", assets=("golem-provider_1_amd64.deb",
                                             "golem-requestor_1_amd64.deb", "yagna.tar.gz"))
    chosen = select_assets(release, ("golem-provider_*.deb",), "o/r")
    assert [a.name for a in chosen] == ["golem-provider_1_amd64.deb"]
    assert len(select_assets(release, ("*.deb",), "o/r")) == 2
    with pytest.raises(BuildError, match="has no asset matching \\*.rpm"):
        select_assets(release, ("*.rpm",), "o/r")
    with pytest.raises(BuildError, match="unusable asset name 'yagna.tar.gz'"):
        select_assets(release, ("yagna*",), "o/r")
