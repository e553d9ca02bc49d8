"""Two leftovers of the power-loss campaign (campaign 2): fixed, and kept fixed.

- A crash while a journal's torn tail is being saved aside (``atomic_write`` of
  ``<file>.<offset>.broken``) leaves its temp file ``.<file>.<offset>.broken.<8 hex>.tmp``.
  The next reader (``repair=True``) sweeps it, under the journal file's lock: whoever saves
  a tail holds that lock, so a save in progress is never pulled from under its writer.
- A journal directory reached through a symlink (``<state>/orchestrator``, the journal
  directory itself or its ``locks``) is refused with ``JournalUnavailable``: the journal's
  writes, tail cuts and sweeps would land wherever the link points.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from orchestrator import FileJournal, RunStarted
from orchestrator.cli import journal_dir
from orchestrator.errors import JournalUnavailable

from .test_io_errors import RESET, SESSIONS, ask, make_template, seed

TAIL_TEMP = ".{}.{}.broken.0123abcd.tmp"


async def a_dead_writers_file(directory: Path) -> Path:
    """A journal file with one record whose writer is gone (closed: its lock is free)."""
    journal = await FileJournal.open(directory)
    record = RunStarted(run_id="r", seq=0, at=0.0, workflow="w", fingerprint="f", key="k")
    await journal.append(record, durable=True)
    await journal.aclose()
    [name] = [n for n in os.listdir(directory) if n.endswith(".jrnl")]
    return directory / name


@pytest.mark.anyio
async def test_a_broken_tails_temp_left_by_a_crash_is_swept(tmp_path: Path) -> None:
    path = await a_dead_writers_file(tmp_path)
    size = path.stat().st_size
    temp = tmp_path / TAIL_TEMP.format(path.name, size)
    orphan = tmp_path / TAIL_TEMP.format("20240101T000000-1-0123abcd.jrnl", 24)
    for leftover in (temp, orphan):
        leftover.write_bytes(b"the torn tail, half saved")
    other = tmp_path / ".notes.0123abcd.tmp"  # no journal temp: not the journal's to sweep
    other.write_bytes(b"")
    journal = await FileJournal.open(tmp_path)
    await journal.aclose()
    assert not temp.exists() and not orphan.exists()
    assert other.exists()
    assert path.stat().st_size == size
    assert journal.history("r") is not None


@pytest.mark.anyio
@pytest.mark.parametrize("repair", [True, False])
async def test_a_broken_tails_temp_is_kept_while_its_file_is_locked(
    tmp_path: Path, repair: bool
) -> None:
    """Locked: a live writer, or a reader saving that very tail now. Without ``repair`` a
    reader changes nothing."""
    path = await a_dead_writers_file(tmp_path)
    temp = tmp_path / TAIL_TEMP.format(path.name, 30)
    temp.write_bytes(b"being saved")
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        journal = await FileJournal.open(tmp_path, repair=repair)
        await journal.aclose()
        assert temp.exists()
    finally:
        os.close(fd)
    journal = await FileJournal.open(tmp_path, repair=repair)
    await journal.aclose()
    assert temp.exists() is not repair


@pytest.mark.parametrize("linked", ["orchestrator", "orchestrator/journal", "locks"])
def test_a_symlinked_journal_directory_is_refused(tmp_path: Path, linked: str) -> None:
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    directory = journal_dir(state)
    where = directory / linked if linked == "locks" else state / linked
    where.parent.mkdir(parents=True, exist_ok=True)
    elsewhere.mkdir()
    where.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(JournalUnavailable, match="is a symlink") as refused:
        anyio.run(FileJournal.open, directory)
    assert refused.value.path == where
    assert "replace it with a real directory" in str(refused.value)
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_state_directory_is_the_users_choice(tmp_path: Path) -> None:
    """Above the journal's own directories a symlink is followed (``~/.openclaw`` may live
    on another disk), as for the sessions directory."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "state").symlink_to(real, target_is_directory=True)
    journal = anyio.run(FileJournal.open, journal_dir(tmp_path / "state"))
    anyio.run(journal.aclose)


def test_reset_through_a_symlinked_orchestrator_directory(tmp_path: Path) -> None:
    """The service refuses before anything changes, and the command line says why (exit
    2, one line naming the symlink)."""
    state = tmp_path / "state"
    seed(make_template(tmp_path), state, RESET)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "orchestrator").symlink_to(elsewhere, target_is_directory=True)
    store = (state / SESSIONS / "sessions.json").read_bytes()
    with pytest.raises(JournalUnavailable, match="symlink"):
        anyio.run(ask, state, RESET)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "reset", "main", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"{state / 'orchestrator'}" in done.stderr and "is a symlink" in done.stderr
    assert list(elsewhere.iterdir()) == []
    assert (state / SESSIONS / "sessions.json").read_bytes() == store
