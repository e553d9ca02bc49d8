"""Transcript files: archive names, moves that never overwrite, the new session's header.

Every effect probes the world first, so running it again after a crash does nothing twice:
a move checks which of source and destination exist (and never overwrites), and a header is
written only where no file is.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson

from orchestrator import close_quietly, failpoint, file_ops, remove_stale_temps

__all__ = (
    "HEADER_VERSION",
    "MoveOutcome",
    "apply_moves",
    "archive_path",
    "archived",
    "iso_utc",
    "move_no_overwrite",
    "read_header_id",
    "write_header",
)

#: The pi session-format version OpenClaw writes in a transcript header.
HEADER_VERSION = 3

MoveOutcome = Literal["moved", "already_moved", "missing", "kept_both", "kept_new"]


def iso_utc(at_ms: int) -> str:
    """``2026-03-18T04:02:18.203Z`` (what JavaScript's ``toISOString`` gives)."""
    moment = datetime.fromtimestamp(at_ms // 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{at_ms % 1000:03d}Z"


def archive_path(path: Path, reason: str, at_ms: int) -> Path:
    """``<path>.<reason>.<ISO-8601 UTC with ':' -> '-'>``, beside ``path``."""
    return path.with_name(f"{path.name}.{reason}.{iso_utc(at_ms).replace(':', '-')}")


def read_header_id(path: Path) -> str | None:
    """The session id in the header line of the transcript at ``path``, if it has one."""
    try:
        with open(path, "rb") as f:
            line = f.readline(64 * 1024)
        header = orjson.loads(line)
    except (OSError, orjson.JSONDecodeError):
        return None
    if isinstance(header, dict) and header.get("type") == "session":
        value = header.get("id")
        return value if isinstance(value, str) else None
    return None


def move_no_overwrite(src: Path, dst: Path, *, new_session_id: str | None = None) -> MoveOutcome:
    """Move ``src`` to ``dst`` unless that would overwrite or repeat; say what happened.

    - ``moved``: done now; ``already_moved``: only ``dst`` exists (an earlier attempt did it);
    - ``missing``: neither exists; ``kept_both``: both exist and differ, nothing touched;
    - ``kept_new``: ``src`` is the *new* session's transcript (its header has
      ``new_session_id``): a name kept across a reset must not be archived a second time.
    """
    ops = file_ops()
    src_there, dst_there = os.path.lexists(src), os.path.lexists(dst)
    if src_there and new_session_id is not None and read_header_id(src) == new_session_id:
        return "kept_new"
    if src_there and dst_there:
        if os.path.samefile(src, dst):  # a crash came between link and unlink
            ops.unlink(src)
            ops.fsync_dir(src.parent)
            return "moved"
        return "kept_both"
    if not src_there:
        if not dst_there:
            return "missing"
        # An earlier attempt moved it, maybe without syncing the directory (its fsync
        # failed, or the process died after the rename): the move is durable only now.
        ops.fsync_dir(dst.parent)
        return "already_moved"
    ops.rename_noreplace(src, dst)
    failpoint("archive.renamed")
    ops.fsync_dir(dst.parent)
    failpoint("archive.dir_synced")
    return "moved"


def apply_moves(
    archive: Callable[[Path, Path, str | None], str],
    moves: Iterable[tuple[str, str]],
    new_session_id: str | None,
) -> tuple[dict[str, str], list[str]]:
    """Do the planned ``(src, dst)`` moves with ``archive``; (outcome by dst, failures).

    A move that fails does not stop the others: each is independent and probes first.
    """
    outcomes: dict[str, str] = {}
    failed: list[str] = []
    for src, dst in moves:
        try:
            outcomes[dst] = archive(Path(src), Path(dst), new_session_id)
        except OSError as exc:
            outcomes[dst] = f"error: {exc}"
            failed.append(f"{src}: {exc}")
        failpoint("archive.moved")
    return outcomes, failed


def archived(outcomes: dict[str, str]) -> list[str]:
    """The destinations that now hold an archived transcript."""
    return [dst for dst, what in outcomes.items() if what in ("moved", "already_moved")]


def write_header(path: Path, session_id: str, at_ms: int, cwd: str) -> bool:
    """Create the transcript ``path`` with its header line unless a file is there already.

    The file appears complete or not at all: written under a temporary name, fsynced, then
    linked into place (a link never replaces an existing file).
    """
    # The caller holds the run's key lock, so no one else writes this transcript now.
    remove_stale_temps(path)
    if os.path.lexists(path):
        # Maybe an earlier attempt's, linked without its directory fsync (that failed, or
        # the process died first): sync it before anyone records the header as written.
        file_ops().fsync_dir(path.parent)
        return False
    header = {
        "type": "session",
        "version": HEADER_VERSION,
        "id": session_id,
        "timestamp": iso_utc(at_ms),
        "cwd": cwd,
    }
    ops = file_ops()
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = ops.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        ops.write(fd, orjson.dumps(header) + b"\n")
        ops.fsync(fd)
    except BaseException:
        close_quietly(fd)
        with contextlib.suppress(OSError):
            ops.unlink(temp)
        raise
    close_quietly(fd)
    failpoint("header.temp_synced")
    try:
        ops.link(temp, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        with contextlib.suppress(FileNotFoundError):
            ops.unlink(temp)
    failpoint("header.linked")
    ops.fsync_dir(path.parent)
    failpoint("header.dir_synced")
    return created
