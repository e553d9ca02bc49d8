"""``orchestrator journal verify``: a verdict per file, read-only unless ``--repair``, which cuts
only dead writers' torn tails (the bytes kept aside) and never a corrupt file."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import orjson
import pytest

from orchestrator._fs import FileOps, set_file_ops
from orchestrator._journal.file import FileJournal
from orchestrator._journal.framing import (
    FORMAT_VERSION,
    MAGIC,
    encode_frame,
    make_header,
)
from orchestrator._journal.records import Record, RunFinished, RunStarted, StepStarted
from orchestrator._verify import (
    classify,
    repair_journal,
    verify_file,
    verify_journal,
)
from orchestrator.cli import journal_dir, main
from orchestrator.errors import JournalUnavailable

SALT = bytes(range(16))
PATH = Path("/j/20250101T000000-1-abcd.jrnl")

# -- helpers --------------------------------------------------------------------------------


def _records(run_id: str = "r1", count: int = 3) -> list[Record]:
    first: Record = RunStarted(run_id=run_id, seq=0, at=1.0, workflow="w", fingerprint="f", key="k")
    steps: list[Record] = [
        StepStarted(run_id=run_id, seq=seq, at=1.0 + seq, step=f"s{seq}", attempt=1)
        for seq in range(1, count)
    ]
    return [first, *steps]


def _file(records: list[Record]) -> tuple[bytes, list[int]]:
    data, offsets = bytearray(make_header(SALT)[0]), []
    for record in records:
        offsets.append(len(data))
        data += encode_frame(record, SALT)
    return bytes(data), offsets


def _flip(data: bytes, byte: int) -> bytes:
    out = bytearray(data)
    out[byte] ^= 0x04
    return bytes(out)


def _other_version_header() -> bytes:
    body = struct.pack(">8sHH16s", MAGIC, FORMAT_VERSION + 1, 0, SALT)
    return body + struct.pack(">I", zlib.crc32(body))


def _state(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """A state directory whose journal holds ``files`` (name -> bytes)."""
    directory = journal_dir(tmp_path)
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """Hold ``path``'s flock as its live writer does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["journal", "verify", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- classify: one file's bytes ------------------------------------------------------------


def test_a_whole_file_is_clean_with_its_record_count() -> None:
    data, _ = _file(_records(count=3))
    verdict = classify(data, PATH)
    assert (verdict.status, verdict.records, verdict.size) == ("clean", 3, len(data))
    assert verdict.offset is None and verdict.reason is None and not verdict.live


def test_a_cut_last_record_is_a_torn_tail_with_offset_reason_and_size() -> None:
    data, offsets = _file(_records(count=3))
    verdict = classify(data[:-5], PATH)
    assert verdict.status == "torn_tail"
    assert verdict.offset == offsets[2]
    assert verdict.reason == "incomplete frame"
    assert verdict.tail_bytes == len(data) - 5 - offsets[2]
    assert verdict.records == 2


def test_a_bad_middle_record_is_corrupt_at_its_offset_with_the_records_before_it() -> None:
    data, offsets = _file(_records(count=4))
    verdict = classify(_flip(data, offsets[2] + 10), PATH)
    assert verdict.status == "corrupt"
    assert (verdict.offset, verdict.reason, verdict.records) == (offsets[2], "bad checksum", 2)


@pytest.mark.parametrize(
    ("data", "status", "offset", "reason"),
    [
        (b"", "torn_tail", 0, "incomplete file header"),
        (MAGIC[:5], "torn_tail", 0, "incomplete file header"),
        (b"SQLite format 3\x00" + bytes(40), "corrupt", 0, "not an orchestrator journal"),
        (_flip(make_header(SALT)[0], 20), "corrupt", 0, "bad header checksum"),
    ],
)
def test_header_damage(data: bytes, status: str, offset: int, reason: str) -> None:
    verdict = classify(data, PATH)
    assert (verdict.status, verdict.offset) == (status, offset)
    assert verdict.reason is not None and verdict.reason.startswith(reason)


def test_another_format_version_is_named() -> None:
    verdict = classify(_other_version_header(), PATH)
    assert (verdict.status, verdict.version) == ("version_mismatch", FORMAT_VERSION + 1)


def test_a_live_writers_unfinished_frame_is_not_damage() -> None:
    data, offsets = _file(_records(count=3))
    verdict = classify(data[:-5], PATH, live=True)
    assert (verdict.status, verdict.live, verdict.offset) == ("live", True, offsets[2])
    # Corruption is corruption whoever holds the file.
    corrupt = classify(_flip(data, offsets[1] + 9), PATH, live=True)
    assert (corrupt.status, corrupt.live) == ("corrupt", True)


# -- verify: a directory, read-only ---------------------------------------------------------


def test_every_file_is_verified_even_after_a_corrupt_one(tmp_path: Path) -> None:
    good, offsets = _file(_records(count=3))
    directory = _state(
        tmp_path,
        {
            "a.jrnl": _flip(good, offsets[1] + 9),  # sorted first: corrupt
            "b.jrnl": good[:-3],
            "c.jrnl": _other_version_header(),
            "d.jrnl": good,
            "d.jrnl.117.broken": b"kept earlier",
            ".e.jrnl.tmp": b"a writer's file being created",
        },
    )
    before = _snapshot(directory)
    found = verify_journal(directory)
    statuses = [(f.path.name, f.status) for f in found.files]
    assert statuses == [
        ("a.jrnl", "corrupt"),
        ("b.jrnl", "torn_tail"),
        ("c.jrnl", "version_mismatch"),
        ("d.jrnl", "clean"),
    ]
    assert found.corrupt and not found.clean and found.repaired == []
    assert _snapshot(directory) == before


def test_a_live_writers_file_is_reported_live(tmp_path: Path) -> None:
    data, offsets = _file(_records(count=3))
    directory = _state(tmp_path, {"a.jrnl": data[:-5]})
    with _held(directory / "a.jrnl"):
        (verdict,) = verify_journal(directory).files
    assert (verdict.status, verdict.live, verdict.offset) == ("live", True, offsets[2])
    (verdict,) = verify_journal(directory).files  # the writer is gone: now it is damage
    assert (verdict.status, verdict.live) == ("torn_tail", False)


def test_no_journal_directory_is_clean_and_empty(tmp_path: Path) -> None:
    found = verify_journal(journal_dir(tmp_path))
    assert found.files == [] and found.clean and not found.corrupt
    assert not (tmp_path / "orchestrator").exists()


def test_a_journal_path_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "orchestrator").write_text("not a directory")
    with pytest.raises(JournalUnavailable) as caught:
        verify_journal(journal_dir(tmp_path))
    assert "--state-dir" in str(caught.value)


class Unreadable(FileOps):
    """Opening ``name`` fails with EACCES (as a 0000 file does for anyone but root)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def open(self, path: Path, flags: int, mode: int = 0o600) -> int:
        if path.name == self.name:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return super().open(path, flags, mode)


def test_an_unreadable_file_is_reported_and_the_others_verified(tmp_path: Path) -> None:
    data, _ = _file(_records())
    directory = _state(tmp_path, {"a.jrnl": data, "b.jrnl": data})
    previous = set_file_ops(Unreadable("a.jrnl"))
    try:
        found = verify_journal(directory)
    finally:
        set_file_ops(previous)
    assert [(f.status, f.reason) for f in found.files] == [
        ("unreadable", os.strerror(errno.EACCES)),
        ("clean", None),
    ]
    assert found.unreadable and not found.clean and not found.corrupt


def test_verify_file_agrees_with_a_journal_written_for_real(tmp_path: Path) -> None:
    async def write() -> None:
        journal = await FileJournal.open(tmp_path)
        for record in _records(count=5):
            await journal.append(record, durable=True)
        await journal.aclose()

    anyio.run(write)
    (path,) = tmp_path.glob("*.jrnl")
    assert verify_file(path).status == "clean" and verify_file(path).records == 5


# -- repair ---------------------------------------------------------------------------------


def test_repair_cuts_dead_tails_only_and_never_touches_a_corrupt_file(tmp_path: Path) -> None:
    good, offsets = _file(_records(count=3))
    corrupt = _flip(good, offsets[1] + 9)
    directory = _state(
        tmp_path,
        {
            "a.jrnl": corrupt,
            "b.jrnl": good + b"\x00\x00\x01\x00torn",
            "c.jrnl": _other_version_header() + b"\xff" * 9,
            "d.jrnl": good[:-4],
            "e.jrnl": good[:-4],  # held by a live writer
            "f.jrnl": MAGIC[:3],  # a header cut short
        },
    )
    with _held(directory / "e.jrnl"):
        found = anyio.run(repair_journal, directory)
    cuts = [(r.path.name, r.offset, r.bytes, r.kept_as.name) for r in found.repaired]
    assert cuts == [
        ("b.jrnl", len(good), 8, f"b.jrnl.{len(good)}.broken"),
        ("d.jrnl", offsets[2], len(good) - 4 - offsets[2], f"d.jrnl.{offsets[2]}.broken"),
        ("f.jrnl", 0, 3, "f.jrnl.0.broken"),
    ]
    after = _snapshot(directory)
    assert after["a.jrnl"] == corrupt
    assert (
        after["b.jrnl"] == good and after[f"b.jrnl.{len(good)}.broken"] == b"\x00\x00\x01\x00torn"
    )
    assert after["c.jrnl"] == _other_version_header() + b"\xff" * 9
    assert after["d.jrnl"] == good[: offsets[2]]
    assert after["e.jrnl"] == good[:-4]
    assert "f.jrnl" not in after and after["f.jrnl.0.broken"] == MAGIC[:3]
    assert found.corrupt and not found.clean  # a is still corrupt, c another version


def test_repair_of_torn_tails_alone_leaves_a_clean_journal(tmp_path: Path) -> None:
    good, _ = _file(_records(count=3))
    directory = _state(tmp_path, {"a.jrnl": good + b"\x01" * 7})
    found = anyio.run(repair_journal, directory)
    assert [f.status for f in found.files] == ["torn_tail"]
    assert found.clean and not found.corrupt
    again = verify_journal(directory)
    assert [(f.status, f.records) for f in again.files] == [("clean", 3)]


# -- the command ----------------------------------------------------------------------------


def test_command_clean_journal_exits_0_with_one_line_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, _ = _file(_records(count=3))
    _state(tmp_path, {"a.jrnl": good, "b.jrnl": good})
    code, out, err = _cli(capsys, "--state-dir", str(tmp_path))
    assert (code, err) == (0, "")
    assert "  a.jrnl: clean, 3 records\n" in out and "  b.jrnl: clean, 3 records\n" in out
    assert "2 files: 2 clean; journal clean" in out


def test_command_torn_tail_exits_0_and_says_it_is_not_corruption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, offsets = _file(_records(count=3))
    directory = _state(tmp_path, {"a.jrnl": good[:-2]})
    before = _snapshot(directory)
    code, out, _ = _cli(capsys, "--state-dir", str(tmp_path))
    assert code == 0
    tail = len(good) - 2 - offsets[2]
    assert f"a.jrnl: torn tail at byte {offsets[2]} (incomplete frame), {tail} bytes" in out
    assert "not corruption" in out and "--repair" in out
    assert _snapshot(directory) == before


def test_command_corrupt_exits_3_naming_the_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, offsets = _file(_records(count=3))
    directory = _state(tmp_path, {"a.jrnl": _flip(good, offsets[1] + 9), "b.jrnl": good})
    before = _snapshot(directory)
    code, out, _ = _cli(capsys, "--state-dir", str(tmp_path), "--repair")
    assert code == 3
    assert f"a.jrnl: CORRUPT at byte {offsets[1]} (bad checksum)" in out
    assert "b.jrnl: clean, 3 records" in out and "journal CORRUPT" in out
    assert _snapshot(directory) == before


def test_command_other_version_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _state(tmp_path, {"a.jrnl": _other_version_header()})
    code, out, _ = _cli(capsys, "--state-dir", str(tmp_path))
    assert code == 3 and f"format version {FORMAT_VERSION + 1}" in out


def test_command_json_is_one_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, offsets = _file(_records(count=3))
    directory = _state(tmp_path, {"a.jrnl": good[:-2], "b.jrnl": _flip(good, offsets[1] + 9)})
    code, out, _ = _cli(capsys, "--state-dir", str(tmp_path), "--json", "--repair")
    assert code == 3
    document = orjson.loads(out)
    assert set(document) == {"files", "clean", "corrupt", "repaired"}
    assert (document["clean"], document["corrupt"]) == (False, True)
    a, b = document["files"]
    assert a == {
        "path": str(directory / "a.jrnl"),
        "status": "torn_tail",
        "records": 2,
        "size": len(good) - 2,
        "offset": offsets[2],
        "reason": "incomplete frame",
        "tail_bytes": len(good) - 2 - offsets[2],
        "live": False,
        "version": None,
    }
    assert (b["status"], b["offset"], b["reason"]) == ("corrupt", offsets[1], "bad checksum")
    assert document["repaired"] == [
        {
            "path": str(directory / "a.jrnl"),
            "offset": offsets[2],
            "bytes": len(good) - 2 - offsets[2],
            "kept_as": str(directory / f"a.jrnl.{offsets[2]}.broken"),
        }
    ]


def test_command_without_a_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--state-dir", str(tmp_path))
    assert code == 0 and "nothing to verify" in out
    code, out, _ = _cli(capsys, "--state-dir", str(tmp_path), "--json")
    assert orjson.loads(out) == {"files": [], "clean": True, "corrupt": False, "repaired": []}


def test_command_unreadable_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, _ = _file(_records())
    _state(tmp_path, {"a.jrnl": good})
    previous = set_file_ops(Unreadable("a.jrnl"))
    try:
        code, out, _ = _cli(capsys, "--state-dir", str(tmp_path))
    finally:
        set_file_ops(previous)
    assert code == 2 and "a.jrnl: unreadable (Permission denied)" in out


def test_command_escapes_hostile_file_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, _ = _file(_records())
    _state(tmp_path, {"\x1b[2Jevil\n.jrnl": good})
    code, out, _ = _cli(capsys, "--state-dir", str(tmp_path))
    assert code == 0 and "\\x1b[2Jevil\\n.jrnl: clean" in out and "\x1b" not in out


def test_command_after_a_real_reset_and_a_crash_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reset", "main", "--state-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    directory = journal_dir(tmp_path)
    (path,) = directory.glob("*.jrnl")
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(encode_frame(RunFinished(run_id="x", seq=9, at=1.0, status="failed"), SALT)[:9])
    code, out, _ = _cli(capsys, "--state-dir", str(tmp_path), "--repair")
    assert code == 0 and f"torn tail at byte {size}" in out and "repaired: cut" in out
    assert path.stat().st_size == size
    code, out, _ = _cli(capsys, "--state-dir", str(tmp_path))
    assert code == 0 and "journal clean" in out


# -- a race found on the way (fixed) ---------------------------------------------------------


def test_a_frame_finished_between_read_and_lock_is_not_cut(tmp_path: Path) -> None:
    """A reader reads a file while its writer is in the middle of a write (a prefix of the
    frame is visible); the writer then finishes the frame, fsyncs it and exits. The reader,
    now holding the flock, must read again and cut nothing: the record is complete."""
    header, salt = make_header()
    records = _records(count=2)
    frames = [encode_frame(r, salt) for r in records]
    path = tmp_path / "20250101T000000-1-abcd.jrnl"
    path.write_bytes(header + frames[0] + frames[1][:5])
    writer = os.open(path, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(writer, fcntl.LOCK_EX)

    finished: list[bool] = []

    class WriterFinishesAfterTheRead(FileOps):
        def read(self, p: Path) -> bytes:
            data = super().read(p)
            if p == path and not finished:
                os.write(writer, frames[1][5:])
                os.fsync(writer)
                os.close(writer)  # the writer exits: its flock goes
                finished.append(True)
            return data

    async def read_it() -> FileJournal:
        previous = set_file_ops(WriterFinishesAfterTheRead())
        try:
            return await FileJournal.open(tmp_path)
        finally:
            set_file_ops(previous)

    journal = anyio.run(read_it)
    anyio.run(journal.aclose)
    assert finished
    assert path.read_bytes() == header + frames[0] + frames[1]
