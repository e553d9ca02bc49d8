"""What ``orchestrator journal verify`` finds in a journal directory, file by file.

Each ``*.jrnl`` file gets one verdict (``FileVerdict``):

- ``clean``: a valid header and whole frames up to the last byte;
- ``torn_tail``: valid frames, then bytes that hold no valid frame (what a crash in the middle
  of a write leaves; not corruption): where they start, why they are bad, how many;
- ``corrupt``: a bad frame or header with a valid frame after it (``JournalCorrupt``), at
  its byte offset;
- ``version_mismatch``: a header of another format version (``JournalVersionError``);
- ``live``: a process still writes the file (it holds the file's flock), so bytes after its
  last whole frame are a write in progress, not damage;
- ``unreadable``: the file cannot be opened or read (permissions, I/O error).

Verification reads only: it takes a *shared* flock to tell a live writer from a dead one
(and holds it while reading, so a dead writer's bytes cannot change under it) and changes
nothing. ``repair_journal`` then cuts the torn tails of dead writers' files through
``FileJournal`` (the same cut a run or ``recover`` makes: the bytes are kept aside as
``<file>.<offset>.broken``) and never touches any other file. One bad file never stops the
others from being verified.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from ._fs import file_ops
from ._journal.file import SUFFIX, FileJournal
from ._journal.framing import HEADER_SIZE, decode_header, scan_frames
from .errors import JournalCorrupt, JournalError, JournalUnavailable, JournalVersionError

__all__ = (
    "FileVerdict",
    "Repair",
    "Status",
    "Verification",
    "classify",
    "journal_files",
    "repair_journal",
    "verify_file",
    "verify_journal",
)

Status: TypeAlias = Literal[
    "clean", "torn_tail", "corrupt", "version_mismatch", "live", "unreadable"
]

#: Statuses that make ``orchestrator journal verify`` exit 3: nothing is resumed from them.
CORRUPT_STATUSES: frozenset[Status] = frozenset({"corrupt", "version_mismatch"})


@dataclass(frozen=True, slots=True)
class FileVerdict:
    """What one journal file holds. ``offset``/``reason`` say where and why reading stopped."""

    path: Path
    status: Status
    #: The file's size in bytes as read.
    size: int = 0
    #: Valid records before ``offset`` (all of them when nothing is wrong); None if unknown.
    records: int | None = 0
    offset: int | None = None
    reason: str | None = None
    #: Bytes from ``offset`` to the end (a torn tail, or a live writer's write in progress).
    tail_bytes: int | None = None
    #: Whether a live process holds the file (it is still being written).
    live: bool = False
    #: The format version found, for ``version_mismatch``.
    version: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "status": self.status,
            "records": self.records,
            "size": self.size,
            "offset": self.offset,
            "reason": self.reason,
            "tail_bytes": self.tail_bytes,
            "live": self.live,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Repair:
    """A torn tail cut off ``path`` at ``offset``; its ``bytes`` bytes were kept as ``kept_as``."""

    path: Path
    offset: int
    bytes: int
    kept_as: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "offset": self.offset,
            "bytes": self.bytes,
            "kept_as": str(self.kept_as),
        }


@dataclass(slots=True)
class Verification:
    """Every journal file's verdict (as found) and the tails ``repair_journal`` cut."""

    directory: Path
    files: list[FileVerdict] = field(default_factory=list)
    repaired: list[Repair] = field(default_factory=list)

    @property
    def corrupt(self) -> bool:
        """A file is corrupt or of another format version: nothing may be resumed from it."""
        return any(f.status in CORRUPT_STATUSES for f in self.files)

    @property
    def unreadable(self) -> bool:
        return any(f.status == "unreadable" for f in self.files)

    @property
    def clean(self) -> bool:
        """Nothing is wrong as the files stand now (a repaired torn tail is gone)."""
        cut = {r.path for r in self.repaired}
        return all(
            f.status in ("clean", "live") or (f.status == "torn_tail" and f.path in cut)
            for f in self.files
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "files": [f.to_json() for f in self.files],
            "clean": self.clean,
            "corrupt": self.corrupt,
            "repaired": [r.to_json() for r in self.repaired],
        }


# -- reading ------------------------------------------------------------------------------


def classify(data: bytes, path: Path, *, live: bool = False) -> FileVerdict:
    """The verdict on a journal file's bytes ``data`` (``live``: its writer still holds it)."""
    size = len(data)
    try:
        salt = decode_header(data, path)
    except JournalVersionError as exc:
        found = exc.found if isinstance(exc.found, int) else None
        return FileVerdict(path, "version_mismatch", size, None, live=live, version=found)
    except JournalCorrupt as exc:
        return _corrupt(path, size, exc, records=0, live=live)
    if salt is None:
        return _tail(path, size, 0, "incomplete file header", records=0, live=live)
    try:
        scan = scan_frames(data, salt, path)
    except JournalCorrupt as exc:
        return _corrupt(path, size, exc, records=_records_before(data, salt, path, exc), live=live)
    if scan.damage is None:
        return FileVerdict(path, "live" if live else "clean", size, len(scan.records), live=live)
    damage = scan.damage
    return _tail(path, size, damage.offset, damage.reason, records=len(scan.records), live=live)


def _tail(
    path: Path, size: int, offset: int, reason: str, *, records: int, live: bool
) -> FileVerdict:
    # A live writer's unfinished frame is a write in progress, not a torn tail.
    status: Status = "live" if live else "torn_tail"
    return FileVerdict(path, status, size, records, offset, reason, size - offset, live)


def _corrupt(
    path: Path, size: int, exc: JournalCorrupt, *, records: int | None, live: bool
) -> FileVerdict:
    return FileVerdict(path, "corrupt", size, records, exc.offset, exc.reason, live=live)


def _records_before(data: bytes, salt: bytes, path: Path, exc: JournalCorrupt) -> int | None:
    """How many valid records precede the corruption (the scan stops on a frame boundary)."""
    if exc.offset < HEADER_SIZE:
        return None
    try:
        return len(scan_frames(data[: exc.offset], salt, path).records)
    except JournalCorrupt:
        return None


def verify_file(path: Path) -> FileVerdict:
    """Read and classify one journal file; never changes it, never raises for its content."""
    ops = file_ops()
    try:
        fd = ops.open(path, os.O_RDONLY)
    except OSError as exc:
        return _unreadable(path, exc)
    try:
        live = not _lock_shared(fd)
        data = _read_all(fd)
    except OSError as exc:
        return _unreadable(path, exc)
    finally:
        ops.close(fd)  # also drops the shared lock
    return classify(data, path, live=live)


def _lock_shared(fd: int) -> bool:
    """Take a shared flock on ``fd`` if no writer holds the file's (exclusive) one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _read_all(fd: int) -> bytes:
    # Sized by fstat, not by a guess: nothing bigger than the file is ever allocated.
    with open(fd, "rb", closefd=False) as f:
        return f.read()


def _unreadable(path: Path, exc: OSError) -> FileVerdict:
    return FileVerdict(path, "unreadable", records=None, reason=exc.strerror or str(exc))


def journal_files(directory: Path) -> list[Path]:
    """The journal files of ``directory``, by name (the files ``FileJournal`` reads)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise JournalUnavailable(
            directory, exc.strerror or str(exc), hint="check the --state-dir path"
        ) from exc
    return [directory / n for n in names if n.endswith(SUFFIX) and not n.startswith(".")]


def verify_journal(directory: Path) -> Verification:
    """The verdict on every journal file of ``directory``; changes nothing."""
    return Verification(directory, [verify_file(path) for path in journal_files(directory)])


# -- repairing ----------------------------------------------------------------------------


async def repair_journal(directory: Path) -> Verification:
    """Verify, then cut the torn tail of every dead writer's file (kept as ``.broken``).

    Corrupt, live, unreadable and other-version files are left exactly as they are.
    """
    found = verify_journal(directory)
    journal = FileJournal(directory, repair=True)
    try:
        for index, verdict in enumerate(found.files):
            if verdict.status == "torn_tail":
                repair = _cut(journal, verdict)
                if repair is None:  # it changed since: say what it is now
                    found.files[index] = verify_file(verdict.path)
                else:
                    found.repaired.append(repair)
    finally:
        await journal.aclose()
    return found


def _cut(journal: FileJournal, verdict: FileVerdict) -> Repair | None:
    """Cut ``verdict``'s torn tail the way every reader does (``FileJournal`` reading it with
    ``repair=True``: tail saved as ``<file>.<offset>.broken``, file truncated and fsynced)."""
    seen = len(journal.damage)
    try:
        # FileJournal has no public per-file read: ``open`` stops at the first corrupt file.
        journal._read_file(verdict.path)
    except JournalError:
        return None
    for path, damage, cut in journal.damage[seen:]:
        if path == verdict.path and cut:
            kept = path.with_name(f"{path.name}.{damage.offset}.broken")
            return Repair(path, damage.offset, _size(kept), kept)
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
