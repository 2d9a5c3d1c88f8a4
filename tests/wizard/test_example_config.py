"""The example shipped on the conf partition documents every key, with valid values."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from golemwz.config import KEYS, parse_layer

EXAMPLE = (Path(__file__).resolve().parents[2]
           / "rootfs/overlay/common/usr/share/golemwz/golemwz-example.toml")


def uncommented(text: str) -> str:
    """The example with its commented settings switched on (the first of alternatives)."""
    lines, seen = [], set()
    for line in text.splitlines():
        setting = re.match(r"^# ((\[env\])|([a-zA-Z_]+ = .*)|(    \".*)|(\]))$", line)
        if not setting:
            continue
        key = line[2:].split(" = ")[0]
        if key in seen and key.islower():
            continue  # e.g. gpu_pci_slot is shown twice
        seen.add(key)
        lines.append(line[2:])
    return "\n".join(lines)


def test_example_is_all_comments() -> None:
    assert tomllib.loads(EXAMPLE.read_text()) == {}




def test_example_documents_every_key_with_a_valid_value() -> None:
    data = tomllib.loads(uncommented(EXAMPLE.read_text()))
    assert set(data) <= set(KEYS)
    assert set(KEYS) == set(data)
    settings, errors = parse_layer(data, "golemwz-example.toml")
    assert errors == []
    assert settings.non_interactive_install is True
    assert dict(settings.env or ()) == {"YA_NET_TYPE": "hybrid", "SUBNET": "public",
                                        "YA_PAYMENT_NETWORK_GROUP": "mainnet"}
