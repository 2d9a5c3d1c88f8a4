"""How `golem-live reproduce` points at a difference between two builds."""

from __future__ import annotations

import os
from pathlib import Path

from golem_live.reproduce import differing_files, first_byte_difference


def test_the_first_differing_byte_is_found_across_blocks(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data)
    assert first_byte_difference(tmp_path / "a", tmp_path / "b") is None
    changed = bytearray(data)
    changed[(2 << 20) + 17] ^= 0xFF
    (tmp_path / "b").write_bytes(bytes(changed))
    assert first_byte_difference(tmp_path / "a", tmp_path / "b") == (2 << 20) + 17
    (tmp_path / "b").write_bytes(data[:-5])
    assert first_byte_difference(tmp_path / "a", tmp_path / "b") == len(data) - 5


def test_differing_files_names_changed_missing_and_relinked_files(tmp_path: Path) -> None:
    for side in ("a", "b"):
        (tmp_path / side / "etc").mkdir(parents=True)
        (tmp_path / side / "etc/same").write_text("x")
        (tmp_path / side / "etc/shadow").write_text(f"golem:!:{20000 if side == 'a' else 20001}")
    (tmp_path / "a/only-a").write_text("")
    (tmp_path / "a/link").symlink_to("etc/same")
    (tmp_path / "b/link").symlink_to("etc/shadow")
    assert differing_files(tmp_path / "a", tmp_path / "b") == ["etc/shadow", "link", "only-a"]
