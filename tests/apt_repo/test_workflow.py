"""The Pages workflow stays consistent with the code it drives."""

from __future__ import annotations

import re

from apt_repo.channels import CHANNELS

from .conftest import PROJECT_ROOT

WORKFLOW = (PROJECT_ROOT / ".github/workflows/repository.yml").read_text()


def test_every_channel_is_published_in_one_deployment() -> None:
    loop = re.search(r"for channel in ([a-z ]+); do", WORKFLOW)
    assert loop and tuple(loop.group(1).split()) == CHANNELS
    assert 'golem-live repo build --channel "$channel" --key "$FINGERPRINT"' in WORKFLOW
    assert '--output "site/$channel"' in WORKFLOW


def test_pages_actions_permissions_and_secret() -> None:
    assert "uses: actions/upload-pages-artifact@v3" in WORKFLOW
    assert "uses: actions/deploy-pages@v4" in WORKFLOW
    deploy = WORKFLOW[WORKFLOW.index("  deploy:"):]
    assert "pages: write" in deploy and "id-token: write" in deploy
    assert "APT_GPG_KEY: ${{ secrets.APT_GPG_KEY }}" in WORKFLOW
    assert "pages: write" not in WORKFLOW[:WORKFLOW.index("  deploy:")]


def test_the_release_workflow_publishes_what_golem_live_release_makes() -> None:
    text = (PROJECT_ROOT / ".github/workflows/release.yml").read_text()
    workflow = yaml_like_steps(text)
    assert 'tags: ["v*", "testing-v*"]' in text
    assert any("golem-live release" in step for step in workflow)
    assert "APT_GPG_KEY" in text and "release/golem-provider/SHA256SUMS*" in text


def yaml_like_steps(text: str) -> list[str]:
    """The workflow's `run:` blocks (enough structure for these checks, no YAML library)."""
    return [block for block in text.split("      - ") if "run:" in block]
