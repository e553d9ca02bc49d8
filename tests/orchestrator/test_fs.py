"""The I/O seam's helpers: atomic writes leave old or new bytes; stale temps are theirs only."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator import atomic_write, remove_stale_temps


def test_stale_temps_of_a_path_are_removed_and_no_others(tmp_path: Path) -> None:
    ours = tmp_path / ".sessions.json.abcdef12.tmp"
    lock_temp = tmp_path / ".sessions.json.lock.abcdef12.tmp"  # another file's, in flight
    odd = tmp_path / ".sessions.json.not-ours.tmp"
    for path in (ours, lock_temp, odd):
        path.write_text("x")
    assert remove_stale_temps(tmp_path / "sessions.json") == [ours]
    assert sorted(os.listdir(tmp_path)) == sorted([lock_temp.name, odd.name])


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "store.json"
    target.write_bytes(b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["store.json"]
    assert (target.stat().st_mode & 0o777) == 0o600
