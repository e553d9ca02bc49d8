"""The file journal: one append-only file per writing process, in one directory.

Each process that appends creates its own ``*.jrnl`` file (so processes never interleave
bytes in one file, and a torn tail belongs to exactly one dead writer) and holds an flock on
it while it lives. A run's records may span files (a run resumed by another process); they
are merged by ``seq``.

Durability (group commit): an append encodes its record into a pending batch and returns;
a *durable* append (a record that guards an effect, or a run's result) writes the whole
batch with one write call and waits for one fsync that covers it. Concurrent durable appends
share that write and fsync, and a record that guards nothing is never forced on its own: it
is written with the next durable record or the next ``flush`` (the runner flushes before a
step's code runs, so a kill mid-step leaves that attempt on record), and fsynced with the
next durable record: power loss may lose it, never a durable record or anything before one.
A failed write or fsync stops the whole journal instance: an fsync error is never retried on
the same descriptor, since the kernel may have dropped the dirty pages.

Reading repairs only what a crash leaves: the torn tail of a file whose writer is dead is cut
and kept aside as ``<file>.<offset>.broken``. Damage followed by valid records raises
``JournalCorrupt``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from .._failpoints import failpoint
from .._fs import atomic_write, close_quietly, ensure_dir, file_ops, first_symlink
from ..errors import JournalUnavailable
from .framing import (
    HEADER_SIZE,
    Damage,
    Scan,
    decode_header,
    encode_frame,
    make_header,
    scan_frames,
)
from .history import RunHistory, RunIndex
from .keylocks import FileKeyLocks
from .records import Record, RunStarted

__all__ = ("FileJournal",)

SUFFIX = ".jrnl"
#: The temp file ``atomic_write`` leaves when a crash stops a torn tail's save as
#: ``<file>.<offset>.broken``.
_BROKEN_TEMP = re.compile(
    rf"\.(?P<journal>[^/]+{re.escape(SUFFIX)})\.\d+\.broken\.[0-9a-f]{{8}}\.tmp"
)
#: Pending records are written once they add up to this much, durable or not.
FLUSH_BYTES = 64 * 1024


class FileJournal:
    """See the module docstring. Open it with ``await FileJournal.open(directory)``."""

    #: fsync in a worker thread (the event loop keeps running meanwhile) or inline (the
    #: default: no thread hop, measured ~20 % faster per sequential run here; the loop stops
    #: for the ~0.2 ms of the fsync). Set it for hosts whose loop must never stall.
    sync_in_thread: bool = False

    def __init__(self, directory: Path, *, lock_timeout: float = 120.0, repair: bool = True):
        self.directory = Path(directory)
        _refuse_symlinks(self.directory)
        self.repair = repair
        #: fsyncs of journal files done by this instance (the benchmark reports them).
        self.syncs = 0
        #: Damaged tails seen while reading: (file, damage, cut?).
        self.damage: list[tuple[Path, Damage, bool]] = []
        self._index = RunIndex()
        self._locks = FileKeyLocks(self.directory / "locks", timeout=lock_timeout)
        self._read_upto: dict[Path, int] = {}
        #: Per key, the end of its last record appended here (synced on leaving the key).
        self._key_ends: dict[str, int] = {}
        self._salts: dict[Path, bytes] = {}
        self._path: Path | None = None
        self._fd: int | None = None
        self._salt = b""
        #: Encoded records not yet written (they go out with the next durable record).
        self._pending: list[bytes] = []
        self._appended = 0
        self._written = 0
        self._synced = 0
        self._syncing: anyio.Event | None = None
        self._failed: JournalUnavailable | None = None

    @classmethod
    async def open(
        cls, directory: Path | str, *, lock_timeout: float = 120.0, repair: bool = True
    ) -> FileJournal:
        journal = cls(Path(directory), lock_timeout=lock_timeout, repair=repair)
        await journal.refresh()
        return journal

    # -- reading -------------------------------------------------------------------------

    async def refresh(self) -> None:
        touched: set[RunHistory] = set()
        for path in self._journal_files():
            touched.update(self._read_file(path))
        for history in touched:
            history.settle()

    def _journal_files(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise JournalUnavailable(self.directory, exc.strerror or str(exc)) from exc
        if self.repair:
            for name in names:
                if not (name.startswith(".") and name.endswith(".tmp")):
                    continue
                if name.endswith(SUFFIX + ".tmp"):
                    self._sweep_temp(self.directory / name)
                elif (saved := _BROKEN_TEMP.fullmatch(name)) is not None:
                    self._sweep_broken_temp(self.directory / name, saved["journal"])
        return [self.directory / n for n in names if n.endswith(SUFFIX) and not n.startswith(".")]

    def _sweep_temp(self, path: Path) -> None:
        """Remove a journal file that a dead writer never finished creating.

        Its name carries the creator's pid. Another live process may be between creating it
        and locking it, so only temps of dead processes (or of this one, whose creation is
        synchronous and so never in progress here) are swept.
        """
        pid = _creator_pid(path.name)
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            return
        try:
            fd = _lock_if_dead(path)
        except JournalUnavailable:
            return  # gone meanwhile, or unreadable: leave it
        if fd is None:
            return  # its writer is creating it right now
        try:
            file_ops().unlink(path)
        except OSError:
            pass
        finally:
            close_quietly(fd)

    def _sweep_broken_temp(self, path: Path, journal_name: str) -> None:
        """Remove the temp file of a torn tail being saved as ``.broken`` when a crash
        interrupted the save (the tail is still in the journal file: the next read saves it
        again). Whoever saves a tail holds its journal file's lock, so the temp is swept
        only under that lock (or when that file is gone: nobody can be saving its tail)."""
        journal = self.directory / journal_name
        try:
            fd = _lock_if_dead(journal)
        except JournalUnavailable:
            if os.path.lexists(journal):
                return  # unreadable: leave it
            fd = None
        else:
            if fd is None:
                return  # a live writer, or a reader saving this tail right now
        try:
            file_ops().unlink(path)
        except OSError:
            pass
        finally:
            if fd is not None:
                close_quietly(fd)

    def _read_file(self, path: Path) -> list[RunHistory]:
        if path == self._path:
            return []
        upto = self._read_upto.get(path, 0)
        try:
            if upto and path.stat().st_size == upto:
                return []
            data = file_ops().read(path)
        except OSError as exc:
            raise JournalUnavailable(path, exc.strerror or str(exc)) from exc
        salt = self._salts.get(path) or decode_header(data, path)
        if salt is None:
            self._torn_header(path, data)
            return []
        self._salts[path] = salt
        scan = scan_frames(data, salt, path, start=max(upto, HEADER_SIZE))
        if scan.damage is not None:
            scan = self._damaged_tail(path, salt, scan)
        elif scan.records and self.repair:
            self._sync_dead_writer(path)
        self._read_upto[path] = scan.end
        return [self._index.add(record, path) for _offset, record in scan.records]

    def _sync_dead_writer(self, path: Path) -> None:
        """fsync a dead writer's file before this journal builds on what it read there.

        A killed writer's last records may be written but not fsynced; a resumed run's
        durable records follow them (by seq) in this journal's own file. Power loss then
        would keep the later records and lose the earlier ones: a gap, and an unreadable
        journal. One fsync of the dead writer's file closes that hole.
        """
        fd = _lock_if_dead(path)
        if fd is None:
            return  # a live writer fsyncs its own durable records
        try:
            file_ops().fsync(fd)
        except OSError as exc:
            raise JournalUnavailable(path, f"fsync failed: {exc.strerror or exc}") from exc
        finally:
            close_quietly(fd)

    def _damaged_tail(self, path: Path, salt: bytes, scan: Scan) -> Scan:
        """The scan to use for a file whose tail looked damaged (cut, if its writer is dead).

        A live writer may be in the middle of a write: what looks torn is just not there
        yet, so nothing is cut. A writer that was alive when the file was read may have
        finished its frame and exited since: the file is read again under the lock, and only
        what is still damaged then is cut.
        """
        fd = _lock_if_dead(path)
        if fd is None:
            return scan
        try:
            try:
                data = file_ops().read(path)
            except OSError as exc:
                raise JournalUnavailable(path, exc.strerror or str(exc)) from exc
            scan = scan_frames(data, salt, path, start=self._read_upto.get(path, HEADER_SIZE))
            damage = scan.damage
            if damage is None:
                return scan
            cut = False
            if self.repair:
                broken = path.with_name(f"{path.name}.{damage.offset}.broken")
                atomic_write(broken, data[damage.offset :], point="journal.tail_saved")
                file_ops().truncate(fd, damage.offset)
                file_ops().fsync(fd)
                failpoint("journal.tail_cut")
                cut = True
            self.damage.append((path, damage, cut))
            return scan
        finally:
            close_quietly(fd)

    def _torn_header(self, path: Path, data: bytes) -> None:
        fd = _lock_if_dead(path)
        if fd is None:
            return
        try:
            self.damage.append((path, Damage(0, "incomplete file header"), self.repair))
            if self.repair:
                file_ops().replace(path, path.with_name(path.name + ".0.broken"))
                file_ops().fsync_dir(path.parent)
        finally:
            close_quietly(fd)

    # -- the index -----------------------------------------------------------------------

    def history(self, run_id: str) -> RunHistory | None:
        return self._index.get(run_id)

    async def load(self, run_id: str) -> RunHistory | None:
        # Every holder of the run's key reads all files on taking it (lock_key): the index
        # is current for the run while its key is held.
        return self._index.get(run_id)

    def runs(self) -> Iterable[RunHistory]:
        return iter(self._index)

    def unfinished(self, key: str | None = None) -> list[RunHistory]:
        return self._index.unfinished(key)

    @asynccontextmanager
    async def lock_key(self, key: str) -> AsyncIterator[None]:
        async with self._locks.hold(key) as others_held_it:
            if others_held_it:
                await self.refresh()  # read what they wrote before going on
            try:
                yield
            finally:
                # The key's records must be on disk before the next holder reads: one left
                # pending (a run cancelled between steps) would be written after that
                # holder's records at the same positions, and the journal would be corrupt.
                end = self._key_ends.pop(key, 0)
                if end > self._synced and self._failed is None:
                    with anyio.CancelScope(shield=True):
                        await self._commit(end)

    def key_held(self, key: str) -> bool:
        """Whether a live process (this one included) holds ``key``'s lock now; never waits."""
        return self._locks.is_held(key)

    # -- writing -------------------------------------------------------------------------

    async def append(self, record: Record, *, durable: bool = False) -> None:
        if self._failed is not None:
            raise self._failed
        if self._fd is None:
            self._create_file()
        frame = encode_frame(record, self._salt)  # raises before anything changes
        self._pending.append(frame)
        self._appended += len(frame)
        history = self._index.add(record, self._path)
        first = history.records[0]
        if isinstance(first, RunStarted):
            self._key_ends[first.key] = self._appended
        if durable:
            # Shielded: a cancelled caller must still learn whether its record is durable
            # before it goes on (and the batch it leads must not be abandoned half way).
            with anyio.CancelScope(shield=True):
                await self._commit(self._appended)
        elif self._appended - self._written >= FLUSH_BYTES:
            self._flush()

    async def sync(self) -> None:
        if self._failed is not None:
            raise self._failed
        with anyio.CancelScope(shield=True):
            await self._commit(self._appended)

    def flush(self) -> None:
        """Write the pending records (one write call, no fsync); see ``Journal.flush``."""
        if self._failed is not None:
            raise self._failed
        self._flush()

    def _flush(self) -> None:
        """Write every pending record with one write call."""
        if not self._pending:
            return
        assert self._fd is not None
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            file_ops().write(self._fd, data)
        except OSError as exc:
            raise self._fail("write", exc) from exc
        self._written += len(data)

    async def _commit(self, target: int) -> None:
        # Group commit: one write and one fsync cover every record appended before the
        # leader starts; whoever arrives meanwhile waits for it, then checks whether it
        # covered them (and leads the next batch if not).
        while self._synced < target:
            if self._syncing is not None:
                await self._syncing.wait()
                if self._failed is not None:
                    raise self._failed
                continue
            self._syncing = event = anyio.Event()
            try:
                if not self.sync_in_thread:
                    # Let every task that is ready append its record to this batch first.
                    await anyio.lowlevel.cancel_shielded_checkpoint()
                self._flush()
                upto, fd = self._written, self._fd
                assert fd is not None
                if self.sync_in_thread:
                    await anyio.to_thread.run_sync(file_ops().fsync, fd)
                else:
                    file_ops().fsync(fd)
            except OSError as exc:
                raise self._fail("fsync", exc) from exc
            finally:
                self._syncing = None
                event.set()
            self.syncs += 1
            self._synced = upto

    def _fail(self, what: str, exc: OSError) -> JournalUnavailable:
        self._failed = JournalUnavailable(
            self._path or self.directory,
            f"{what} failed: {exc.strerror or exc}",
            hint="this journal accepts no more records; fix the cause, then run "
            "'orchestrator recover' to resume the interrupted runs",
        )
        return self._failed

    def _create_file(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        path, temp = self.directory / name, self.directory / f".{name}.tmp"
        ops = file_ops()
        try:
            ensure_dir(self.directory)
            fd = ops.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        try:
            # Readers take this lock to tell a live writer from a dead one.
            fcntl.flock(fd, fcntl.LOCK_EX)
            header, self._salt = make_header()
            ops.write(fd, header)
            ops.fsync(fd)
            # Readers only look at *.jrnl, so they never see a file without its header.
            ops.replace(temp, path)
            ops.fsync_dir(self.directory)
        except OSError as exc:
            # Leave nothing behind: no descriptor holding a lock, no half-made file.
            close_quietly(fd)
            for leftover in (temp, path):
                with contextlib.suppress(OSError):
                    ops.unlink(leftover)
            raise self._unavailable(exc) from exc
        failpoint("journal.file_created")
        self._fd, self._path = fd, path
        self._appended = self._written = self._synced = HEADER_SIZE

    def _unavailable(self, exc: OSError) -> JournalUnavailable:
        return JournalUnavailable(exc.filename or self.directory, exc.strerror or str(exc))

    async def aclose(self) -> None:
        """Make what was appended durable, then close everything (whatever fails)."""
        try:
            self._locks.close()
            if self._fd is not None and self._failed is None:
                await self.sync()
        finally:
            if self._fd is not None:
                close_quietly(self._fd)
                self._fd = None


def _refuse_symlinks(directory: Path) -> None:
    """Refuse a journal directory reached through a symlink at the directories a state
    directory's journal owns (``<state>/orchestrator/journal`` and its ``locks``): its
    writes, repairs and sweeps would land wherever the link points. What is above is the
    user's (a state directory may be a symlink)."""
    journal = Path(os.path.abspath(directory))
    link = first_symlink(journal.parent.parent, journal / "locks")
    if link is not None:
        raise JournalUnavailable(
            link,
            "it is a symlink, and the journal does not follow symlinks into its directory",
            hint="replace it with a real directory (move the files it points to there)",
        )


def _creator_pid(name: str) -> int | None:
    # ".<stamp>-<pid>-<hex>.jrnl.tmp"
    parts = name.split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_if_dead(path: Path) -> int | None:
    """An fd holding ``path``'s flock if its writer is gone; None if a writer holds it."""
    try:
        fd = file_ops().open(path, os.O_RDWR)
    except OSError as exc:
        raise JournalUnavailable(path, exc.strerror or str(exc)) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        close_quietly(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise JournalUnavailable(path, exc.strerror or str(exc)) from exc
    return fd
