"""FileJournal on a real directory: modes, reading other writers' files, repair, group commit,
and failing closed on I/O errors."""

from __future__ import annotations

import errno
import os
import random
import stat
from pathlib import Path

import anyio
import pytest

from orchestrator._fs import FILE_MODE, FileOps, set_file_ops
from orchestrator._journal.file import FileJournal
from orchestrator._journal.framing import HEADER_SIZE, encode_frame
from orchestrator._journal.records import (
    Record,
    RunFinished,
    RunStarted,
    StepStarted,
)
from orchestrator.errors import JournalCorrupt, JournalUnavailable

pytestmark = pytest.mark.anyio


# -- helpers --------------------------------------------------------------------------------


def _started(run_id: str, key: str = "k", at: float = 1.0) -> RunStarted:
    return RunStarted(run_id=run_id, seq=0, at=at, workflow="w", fingerprint="f", key=key)


def _step(run_id: str, seq: int) -> StepStarted:
    return StepStarted(run_id=run_id, seq=seq, at=1.0 + seq, step=f"s{seq}", attempt=1)


def _run(run_id: str, count: int, key: str = "k") -> list[Record]:
    """``count`` records of one run: run_started, then step_started records."""
    return [_started(run_id, key), *(_step(run_id, seq) for seq in range(1, count))]


def _frame_size(record: Record) -> int:
    return len(encode_frame(record, bytes(16)))


def _names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def _journal_files(directory: Path) -> list[Path]:
    return [directory / n for n in _names(directory) if n.endswith(".jrnl")]


def _broken_files(directory: Path) -> list[Path]:
    return [directory / n for n in _names(directory) if n.endswith(".broken")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _write(directory: Path, records: list[Record], *, durable: bool = True) -> Path:
    """Append ``records`` with a journal that is closed afterwards; its file's path."""
    before = set(_journal_files(directory))
    journal = await FileJournal.open(directory)
    try:
        for record in records:
            await journal.append(record, durable=durable)
    finally:
        await journal.aclose()
    (path,) = set(_journal_files(directory)) - before
    return path


def _records_of(journal: FileJournal, run_id: str) -> list[Record]:
    history = journal.history(run_id)
    assert history is not None, run_id
    return list(history.records)


def _append_raw(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class CountingOps(FileOps):
    """Real file operations that count fsyncs and track the descriptors they open."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.writes = 0
        self.opens = 0
        #: Descriptors opened through these ops and not closed yet.
        self.live: set[int] = set()

    def open(self, path: Path, flags: int, mode: int = FILE_MODE) -> int:
        fd = super().open(path, flags, mode)
        self.opens += 1
        self.live.add(fd)
        return fd

    def close(self, fd: int) -> None:
        self.live.discard(fd)
        super().close(fd)

    def write(self, fd: int, data: bytes) -> None:
        self.writes += 1
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)

    def leaked(self) -> list[int]:
        return sorted(self.live)


class DiskFull(CountingOps):
    """Writes succeed ``ok_writes`` times (the file header is the first), then ENOSPC."""

    def __init__(self, ok_writes: int) -> None:
        super().__init__()
        self.ok_writes = ok_writes

    def write(self, fd: int, data: bytes) -> None:
        if self.writes >= self.ok_writes:
            self.writes += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(fd, data)


class FsyncFails(CountingOps):
    """The ``fail_at``-th fsync (counting from 1) and every later one raise EIO."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def fsync(self, fd: int) -> None:
        if self.fsyncs + 1 >= self.fail_at:
            self.fsyncs += 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fsync(fd)


# -- modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022])
async def test_files_are_0600_and_directories_0700_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    directory = tmp_path / "state" / "journal"
    previous = os.umask(umask)
    try:
        path = await _write(directory, _run("r1", 2))
        _append_raw(path, b"\x00\x00\x00\x05torn")  # so a reader writes a .broken file
        reader = await FileJournal.open(directory)
        async with reader.lock_key("k"):
            pass
        await reader.aclose()
    finally:
        os.umask(previous)
    assert _mode(directory) == 0o700
    assert _mode(directory.parent) == 0o700
    assert _mode(directory / "locks") == 0o700
    created = [*_journal_files(directory), *_broken_files(directory)]
    created += list((directory / "locks").iterdir())
    assert len(created) == 3
    for file in created:
        assert _mode(file) == 0o600, file


# -- reading what others wrote --------------------------------------------------------------


async def test_a_fresh_instance_reads_records_back_in_order(tmp_path: Path) -> None:
    one, two = _run("r1", 4, key="k1"), _run("r2", 3, key="k2")
    interleaved = [one[0], two[0], one[1], one[2], two[1], two[2], one[3]]
    await _write(tmp_path, interleaved, durable=False)
    journal = await FileJournal.open(tmp_path)
    assert _records_of(journal, "r1") == one
    assert _records_of(journal, "r2") == two
    assert [h.run_id for h in journal.unfinished("k1")] == ["r1"]
    assert [h.run_id for h in journal.unfinished("k2")] == ["r2"]
    assert journal.damage == []
    await journal.aclose()


async def test_a_run_split_across_two_files_reads_as_one_history(tmp_path: Path) -> None:
    first = _run("r1", 3)
    await _write(tmp_path, [*first, _started("other", key="k2")])

    second = await FileJournal.open(tmp_path)
    history = second.history("r1")
    assert history is not None and history.next_seq == 3
    rest: list[Record] = [
        _step("r1", 3),
        RunFinished(run_id="r1", seq=4, at=9.0, status="succeeded", result={"ok": True}),
    ]
    for record in rest:
        await second.append(record, durable=True)
    await second.aclose()
    assert len(_journal_files(tmp_path)) == 2

    third = await FileJournal.open(tmp_path)
    records = _records_of(third, "r1")
    assert [r.seq for r in records] == [0, 1, 2, 3, 4]
    assert records == [*first, *rest]
    assert third.unfinished("k") == []
    assert [h.run_id for h in third.unfinished("k2")] == ["other"]
    assert [h.run_id for h in third.unfinished()] == ["other"]
    await third.aclose()


# -- torn tails -----------------------------------------------------------------------------


@pytest.mark.parametrize("tail", ["garbage", "cut"])
async def test_a_dead_writers_torn_tail_is_cut_and_kept(tmp_path: Path, tail: str) -> None:
    records = _run("r1", 4)
    path = await _write(tmp_path, records)
    full = path.read_bytes()
    if tail == "garbage":
        garbage = random.Random(3).randbytes(100)
        _append_raw(path, garbage)
        good, offset, kept = records, len(full), garbage
    else:
        os.truncate(path, len(full) - 3)  # the last frame loses its last 3 bytes
        offset = len(full) - _frame_size(records[-1])
        good, kept = records[:-1], full[offset:-3]

    journal = await FileJournal.open(tmp_path)
    assert _records_of(journal, "r1") == good
    assert len(journal.damage) == 1
    damaged, damage, cut = journal.damage[0]
    assert (damaged, damage.offset, cut) == (path, offset, True)
    assert path.stat().st_size == offset
    assert path.read_bytes() == full[:offset]
    broken = path.with_name(f"{path.name}.{offset}.broken")
    assert _broken_files(tmp_path) == [broken]
    assert broken.read_bytes() == kept
    await journal.aclose()

    # Repaired: the next reader finds a clean file with the same records.
    again = await FileJournal.open(tmp_path)
    assert again.damage == []
    assert _records_of(again, "r1") == good
    await again.aclose()


async def test_repair_false_reports_the_tail_but_changes_nothing(tmp_path: Path) -> None:
    records = _run("r1", 3)
    path = await _write(tmp_path, records)
    _append_raw(path, b"\x00\x00\x01\x00partial")
    before = path.read_bytes()

    journal = await FileJournal.open(tmp_path, repair=False)
    assert _records_of(journal, "r1") == records
    assert [(p, d.offset, cut) for p, d, cut in journal.damage] == [
        (path, len(before) - len(b"\x00\x00\x01\x00partial"), False)
    ]
    await journal.aclose()
    assert path.read_bytes() == before
    assert _broken_files(tmp_path) == []


async def test_a_live_writers_partial_frame_is_left_alone(tmp_path: Path) -> None:
    writer = await FileJournal.open(tmp_path)
    records = _run("r1", 2)
    for record in records:
        await writer.append(record, durable=True)
    (path,) = _journal_files(tmp_path)
    try:
        _append_raw(path, encode_frame(_step("r1", 2), bytes(16))[:11])
        size = path.stat().st_size

        reader = await FileJournal.open(tmp_path)
        assert reader.damage == []
        assert path.stat().st_size == size
        assert _broken_files(tmp_path) == []
        assert _records_of(reader, "r1") == records
        await reader.aclose()
    finally:
        await writer.aclose()

    # The same bytes once the writer is gone: now they are a torn tail, and cut.
    after = await FileJournal.open(tmp_path)
    assert [(p, d.offset, cut) for p, d, cut in after.damage] == [(path, size - 11, True)]
    assert path.stat().st_size == size - 11
    await after.aclose()


async def test_bit_flip_in_a_middle_record_fails_closed(tmp_path: Path) -> None:
    records = _run("r1", 3)
    path = await _write(tmp_path, records)
    middle = HEADER_SIZE + _frame_size(records[0])
    data = bytearray(path.read_bytes())
    data[middle + 12] ^= 0x10  # inside the middle frame's payload
    path.write_bytes(bytes(data))

    with pytest.raises(JournalCorrupt) as caught:
        await FileJournal.open(tmp_path)
    assert caught.value.path == path
    assert caught.value.offset == middle
    assert str(path) in str(caught.value) and f"byte {middle}" in str(caught.value)
    assert path.read_bytes() == bytes(data)
    assert _broken_files(tmp_path) == []


# -- group commit ---------------------------------------------------------------------------


async def test_concurrent_durable_appends_share_fsyncs(tmp_path: Path) -> None:
    journal = await FileJournal.open(tmp_path)
    returned: list[str] = []

    async def append(run_id: str) -> None:
        await journal.append(_started(run_id), durable=True)
        returned.append(run_id)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(append, f"r{i:02d}")
    assert len(returned) == 50
    assert 1 <= journal.syncs < 50

    fresh = await FileJournal.open(tmp_path)
    assert sorted(h.run_id for h in fresh.runs()) == sorted(returned)
    await fresh.aclose()
    await journal.aclose()


async def test_a_lone_durable_append_is_fsynced(tmp_path: Path) -> None:
    journal = await FileJournal.open(tmp_path)
    await journal.append(_started("r1"), durable=False)
    assert journal.syncs == 0
    await journal.append(_step("r1", 1), durable=True)
    assert journal.syncs == 1
    await journal.aclose()


# -- failures -------------------------------------------------------------------------------


async def test_open_under_a_regular_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a directory")
    directory = tmp_path / "plain" / "journal"
    with pytest.raises(JournalUnavailable) as caught:
        await FileJournal.open(directory)
    assert str(directory) in str(caught.value)


async def test_append_to_an_unwritable_directory_is_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "parent" / "journal"
    journal = await FileJournal.open(directory)  # nothing there yet: nothing to read
    (tmp_path / "parent").write_text("a file where the directory should be")
    with pytest.raises(JournalUnavailable) as caught:
        await journal.append(_started("r1"), durable=True)
    assert caught.value.path == directory
    assert str(directory) in str(caught.value)
    await journal.aclose()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a 0500 directory")
async def test_append_to_a_read_only_directory_is_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    directory.mkdir(mode=0o500)
    try:
        journal = await FileJournal.open(directory)
        with pytest.raises(JournalUnavailable) as caught:
            await journal.append(_started("r1"))
        assert str(directory) in str(caught.value)
        await journal.aclose()
    finally:
        directory.chmod(0o700)


async def test_after_a_write_failure_the_journal_accepts_nothing(tmp_path: Path) -> None:
    journal = await FileJournal.open(tmp_path)
    ops = DiskFull(ok_writes=1)  # the file header is written, the first frame is not
    previous = set_file_ops(ops)
    try:
        await journal.append(_started("r0"))  # pending: nothing is written yet
        assert ops.writes == 1
        with pytest.raises(JournalUnavailable) as first:
            await journal.append(_started("r1"), durable=True)
        (path,) = _journal_files(tmp_path)
        assert first.value.path == path
        assert str(path) in str(first.value) and "write failed" in str(first.value)
        assert ops.writes == 2

        with pytest.raises(JournalUnavailable) as second:
            await journal.append(_started("r2"), durable=True)
        assert second.value.path == path
        with pytest.raises(JournalUnavailable):
            await journal.sync()
        assert ops.writes == 2  # nothing more was even tried
        await journal.aclose()
    finally:
        set_file_ops(previous)

    fresh = await FileJournal.open(tmp_path)
    assert list(fresh.runs()) == []
    assert path.stat().st_size == HEADER_SIZE
    await fresh.aclose()


async def test_after_an_fsync_failure_fsync_is_never_retried(tmp_path: Path) -> None:
    journal = await FileJournal.open(tmp_path)
    ops = FsyncFails(fail_at=2)  # the 1st fsync makes the new file's header durable
    previous = set_file_ops(ops)
    try:
        with pytest.raises(JournalUnavailable) as caught:
            await journal.append(_started("r1"), durable=True)
        assert "fsync failed" in str(caught.value)
        (path,) = _journal_files(tmp_path)
        assert str(path) in str(caught.value)
        assert ops.fsyncs == 2

        with pytest.raises(JournalUnavailable):
            await journal.append(_step("r1", 1), durable=True)
        with pytest.raises(JournalUnavailable):
            await journal.append(_step("r1", 1), durable=False)
        with pytest.raises(JournalUnavailable):
            await journal.sync()
        await journal.aclose()
        assert ops.fsyncs == 2
        assert journal.syncs == 0
        assert ops.leaked() == []
    finally:
        set_file_ops(previous)


async def test_an_fsync_failure_fails_every_waiting_durable_append(tmp_path: Path) -> None:
    journal = await FileJournal.open(tmp_path)
    await journal.append(_started("r0"))  # the file exists: its fsync is done
    ops = FsyncFails(fail_at=1)
    previous = set_file_ops(ops)
    outcomes: list[str] = []

    async def append(run_id: str) -> None:
        try:
            await journal.append(_started(run_id), durable=True)
        except JournalUnavailable:
            outcomes.append("unavailable")
        else:
            outcomes.append("ok")

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(1, 11):
                    tg.start_soon(append, f"r{i}")
        assert outcomes == ["unavailable"] * 10
        assert ops.fsyncs == 1
        await journal.aclose()
    finally:
        set_file_ops(previous)


async def test_a_failed_file_creation_leaks_nothing(tmp_path: Path) -> None:
    """LIBRARY BUG (file.py ``FileJournal._create_file``): when a step after ``ops.open``
    fails (header write, fsync, replace, fsync_dir), the descriptor -- which holds the
    file's flock -- is never closed and ``.<name>.jrnl.tmp`` stays in the directory. The
    journal is not marked failed, so every later append retries and leaks one more of each.
    """
    journal = await FileJournal.open(tmp_path)
    ops = DiskFull(ok_writes=0)  # even the header write fails
    previous = set_file_ops(ops)
    try:
        for run_id in ("r1", "r2", "r3"):
            with pytest.raises(JournalUnavailable):
                await journal.append(_started(run_id))
        leaked = ops.leaked()
        leftovers = _names(tmp_path)
    finally:
        set_file_ops(previous)
        for fd in ops.leaked():
            os.close(fd)
        await journal.aclose()
    assert ops.opens == 3
    assert leaked == [], f"_create_file leaked descriptors {leaked} (each holds an flock)"
    assert leftovers == [], f"_create_file left temp files behind: {leftovers}"


async def test_a_dead_writers_file_is_fsynced_before_this_journal_builds_on_it(
    tmp_path: Path,
) -> None:
    """A killed writer's records may be written but not fsynced; a resumed run's durable
    records follow them in another file. Reading the dead writer's file fsyncs it, so power
    loss cannot keep the later records and lose the earlier ones (a gap)."""
    writer = await FileJournal.open(tmp_path)
    await writer.append(_started("r1"))
    writer.flush()  # written, not fsynced
    (dead,) = _journal_files(tmp_path)
    assert writer._fd is not None
    os.close(writer._fd)  # the writer dies: its flock goes, nothing more is synced
    writer._fd = None

    synced: list[str] = []

    class Recording(FileOps):
        def fsync(self, fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            super().fsync(fd)

    previous = set_file_ops(Recording())
    try:
        reader = await FileJournal.open(tmp_path)
    finally:
        set_file_ops(previous)
    assert str(dead) in synced
    assert reader.history("r1") is not None
    await reader.aclose()
