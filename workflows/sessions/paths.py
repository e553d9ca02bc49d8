"""Transcript paths built from store data, never escaping the sessions directory.

A session id is checked against ``^[a-z0-9][a-z0-9._-]{0,127}$`` before it becomes a file
name; a stored ``sessionFile`` is used only if it names a file directly inside the sessions
directory and no symlink is on the way. Anything else is not followed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orchestrator.errors import UsageError

from .entry import valid_session_id

__all__ = (
    "check_no_symlinks",
    "check_safe_dirs",
    "resolve_session_file",
    "transcript_candidates",
)


def check_no_symlinks(state_dir: Path, sessions_dir: Path) -> None:
    """Refuse a sessions directory reached through a symlink under the state directory."""
    try:
        parts = sessions_dir.relative_to(state_dir).parts
    except ValueError:
        raise UsageError(f"sessions directory {sessions_dir} is outside {state_dir}") from None
    here = state_dir
    for part in parts:
        here = here / part
        if os.path.islink(here):
            raise UsageError(
                f"{here} is a symlink; the session workflows do not follow symlinks inside "
                "the state directory (replace it with a real directory)"
            )


def check_safe_dirs(state_dir: Path, directory: Path) -> None:
    """Refuse ``directory`` if it is reached through a symlink, or if the state directory or
    one on the way is writable by other users (as ssh's StrictModes does): another user could
    swap a directory for a symlink between a check and a write, and redirect this user's
    writes anywhere. A sticky directory (like /tmp) is fine."""
    check_no_symlinks(state_dir, directory)
    here = state_dir
    for part in ("", *directory.relative_to(state_dir).parts):
        here = here / part if part else here
        try:
            mode = os.stat(here).st_mode
        except FileNotFoundError:
            return  # created later by this tool, 0700
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            raise UsageError(
                f"{here} is writable by other users (mode {stat.S_IMODE(mode):04o}); the "
                f"session workflows refuse to write there: run 'chmod o-w {here}'"
            )


def resolve_session_file(sessions_dir: Path, session_file: object) -> Path | None:
    """The transcript a stored ``sessionFile`` names, if it is safe to touch; else None."""
    if not isinstance(session_file, str) or not session_file or "\x00" in session_file:
        return None
    name = session_file.replace("\\", "/").rsplit("/", 1)[-1]
    # A transcript is a visible *.jsonl file; anything else (sessions.json, its lock, a temp
    # file) is never treated as one, so a hostile sessionFile cannot archive the store.
    if not name.endswith(".jsonl") or name.startswith("."):
        return None
    path = Path(session_file)
    if not path.is_absolute():
        path = sessions_dir / path
    path = Path(os.path.normpath(path))
    if path.parent != Path(os.path.normpath(os.path.abspath(sessions_dir))) and (
        path.parent != Path(os.path.normpath(sessions_dir))
    ):
        return None
    if os.path.islink(path):
        return None
    return path


def transcript_candidates(
    sessions_dir: Path, legacy_dir: Path | None, session_id: object, session_file: object
) -> list[Path]:
    """Where a session's transcript may be, in OpenClaw's order, without duplicates."""
    found: list[Path] = []
    stored = resolve_session_file(sessions_dir, session_file)
    if stored is not None:
        found.append(stored)
    if valid_session_id(session_id):
        found.append(Path(os.path.normpath(sessions_dir / f"{session_id}.jsonl")))
        if legacy_dir is not None:
            found.append(Path(os.path.normpath(legacy_dir / f"{session_id}.jsonl")))
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.abspath(path), path)
    return list(unique.values())
