"""Campaign 4: hostile journals.

Damaged journal files go through every reader: the framing reader (``decode_header`` +
``scan_frames``), the verification logic on a real file (``verify_file``), and, for a sample
of the cases, ``orchestrator journal verify --json`` on a state directory, ``--repair`` on a
copy, and ``FileJournal.open(repair=False)``. Each case has an exact expectation, computed
from where the bytes were changed:

- the first frame whose bytes changed (or that lost bytes) is where reading must stop;
- if a frame left intact follows it, that is corruption at its offset (``JournalCorrupt``);
  otherwise a torn tail at its offset, with every record before it;
- any change in the 32-byte header is corruption at byte 0; a header cut short is a torn
  tail at byte 0.

Two counts must stay zero: *silent acceptances* (a reader hands back a record that is not
the original record at its original offset, or more records than stand before the damage)
and *unhandled exceptions* (anything but ``JournalCorrupt``/``JournalVersionError`` or a
reported tail). Every other disagreement with the expectation is a *misclassification*
(e.g. a tail called corruption) and fails too. ``--repair`` must cut exactly the torn tail
(kept as ``<file>.<offset>.broken``) and leave a corrupt file's bytes unchanged.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import struct
import time
import traceback
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator._journal.file import FileJournal
from orchestrator._journal.framing import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    decode_header,
    encode_frame,
    make_header,
    scan_frames,
)
from orchestrator._journal.records import (
    EffectApplied,
    EffectPlanned,
    ErrorInfo,
    Record,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
)
from orchestrator._verify import FileVerdict, classify, verify_file
from orchestrator.cli import journal_dir, main
from orchestrator.errors import JournalCorrupt, JournalVersionError

from .conftest import SOAK, budget, report

SALT = bytes.fromhex("5a17c0ffee0ddba11deadbeefcafe042")
FOREIGN_SALT = bytes(16)
NAME = "20251125T000000-4242-0badf00d.jrnl"
PATH = Path("/state/orchestrator/journal") / NAME
#: Seed of the random cases: fixed in CI (reproducible), fresh under ``make soak`` unless set.
SEED = int(os.environ.get("ORCHESTRATOR_SEED") or (random.randrange(1 << 32) if SOAK else 4))

Kind = Literal["clean", "torn", "corrupt", "version", "live", "unreadable"]

# -- journals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Journal:
    """A valid journal file: its bytes, and each frame's offset, end and record."""

    data: bytes
    offsets: list[int]
    ends: list[int]
    records: list[Record]

    @property
    def frames(self) -> list[tuple[int, Record]]:
        return list(zip(self.offsets, self.records, strict=True))


def build(records: Sequence[Record], salt: bytes = SALT) -> Journal:
    data, offsets, ends = bytearray(make_header(salt)[0]), [], []
    for record in records:
        offsets.append(len(data))
        data += encode_frame(record, salt)
        ends.append(len(data))
    return Journal(bytes(data), offsets, ends, list(records))


def three_records() -> list[Record]:
    return [
        RunStarted(run_id="r1", seq=0, at=1.0, workflow="w", fingerprint="f", key="k"),
        StepStarted(run_id="r1", seq=1, at=2.0, step="a", attempt=1),
        StepFinished(
            run_id="r1",
            seq=2,
            at=3.0,
            step="a",
            attempt=1,
            outcome="error",
            duration=0.5,
            error=ErrorInfo(type="ValueError", message="bad row"),
        ),
    ]


def many_records(count: int, seed: int = 200) -> list[Record]:
    """``count`` records of whole runs, as a session reset writes them, in varied sizes."""
    rng = random.Random(seed)
    records: list[Record] = []
    run = 0
    while len(records) < count:
        records.extend(_run(rng, f"run-{run:04d}-{rng.randbytes(6).hex()}"))
        run += 1
    return records[:count]


def _run(rng: random.Random, run_id: str) -> list[Record]:
    at = 1_764_000_000.0 + rng.random() * 1e5
    out: list[Record] = [
        RunStarted(
            run_id=run_id,
            seq=0,
            at=at,
            workflow="session_reset",
            fingerprint="fp-" + rng.randbytes(8).hex(),
            key=f"agent:main:{rng.choice(['main', 'discord:channel:1', 'web'])}",
            input={"reason": rng.choice(["new", "reset"])},
            requested_by="cli:reset",
        )
    ]
    for step in ("hook_fired", "runtime_cleanup", "store_mutation", "archive"):
        seq = len(out)
        out.append(StepStarted(run_id=run_id, seq=seq, at=at + seq, step=step, attempt=1))
        if step == "store_mutation":
            value = {"new_session_id": rng.randbytes(16).hex(), "moves": ["x" * rng.randrange(90)]}
            out.append(
                EffectPlanned(
                    run_id=run_id, seq=seq + 1, at=at, step=step, name="commit", value=value
                )
            )
            out.append(EffectApplied(run_id=run_id, seq=seq + 2, at=at, step=step, name="commit"))
        outcome = rng.choice(["ok", "ok", "ok", "error"])
        out.append(
            StepFinished(
                run_id=run_id,
                seq=len(out),
                at=at + seq + 0.5,
                step=step,
                attempt=1,
                outcome=outcome,
                duration=rng.random(),
                result={"n": rng.randrange(1 << 40), "text": "é" * rng.randrange(40)},
                error=ErrorInfo("OSError", "disk") if outcome == "error" else None,
            )
        )
    out.append(RunFinished(run_id=run_id, seq=len(out), at=at + 9, status="succeeded"))
    return out


def put(path: Path, data: bytes) -> None:
    """Write ``path`` as a new file: rewriting one in place costs ext4 a flush (auto_da_alloc)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# -- what each case must give ----------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    kind: Kind
    #: Where reading stops (torn tail or corruption); None for a clean file.
    offset: int | None
    #: Records read before it.
    records: int


def expect(journal: Journal, size: int, changed: Iterable[int] = ()) -> Expect:
    """What a reader must report for ``journal`` cut or extended to ``size`` bytes, with the
    bytes at ``changed`` altered (appended bytes are not "changed": they are a tail)."""
    changed = sorted(changed)
    if size < HEADER_SIZE:
        return Expect("torn", 0, 0)
    if changed and changed[0] < HEADER_SIZE:
        return Expect("corrupt", 0, 0)
    spans = list(zip(journal.offsets, journal.ends, strict=True))
    present = [start < size for start, _ in spans]
    bad = [start < size and (end > size or _touches(changed, start, end)) for start, end in spans]
    if True not in bad:
        kept = sum(present)
        tail = journal.ends[kept - 1] if kept else HEADER_SIZE
        return Expect("clean", None, kept) if size == tail else Expect("torn", tail, kept)
    first = bad.index(True)
    intact_after = any(present[j] and not bad[j] for j in range(first + 1, len(spans)))
    return Expect("corrupt" if intact_after else "torn", journal.offsets[first], first)


def changed_bytes(original: bytes, data: bytes) -> list[int]:
    """Offsets where ``data`` differs from ``original`` (over the length they share)."""
    return [i for i, (a, b) in enumerate(zip(original, data, strict=False)) if a != b]


def _touches(changed: Sequence[int], start: int, end: int) -> bool:
    return any(start <= c < end for c in changed)


# -- what each reader says -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    offset: int | None
    #: The records a reader accepted, with their offsets (None if it gives only a count).
    accepted: list[tuple[int, Record]] | None
    count: int | None
    reason: str | None = None


def read_framing(data: bytes) -> Outcome:
    try:
        salt = decode_header(data, PATH)
        if salt is None:
            return Outcome("torn", 0, [], 0, "incomplete file header")
        scan = scan_frames(data, salt, PATH)
    except JournalCorrupt as exc:
        assert exc.path == PATH and f"byte {exc.offset}" in str(exc), str(exc)
        return Outcome("corrupt", exc.offset, None, None, exc.reason)
    except JournalVersionError:
        return Outcome("version", 0, None, None)
    if scan.damage is None:
        return Outcome("clean", None, scan.records, len(scan.records))
    assert scan.end == scan.damage.offset
    damage = scan.damage
    return Outcome("torn", damage.offset, scan.records, len(scan.records), damage.reason)


_KINDS: dict[str, Kind] = {
    "clean": "clean",
    "torn_tail": "torn",
    "corrupt": "corrupt",
    "version_mismatch": "version",
    "live": "live",
    "unreadable": "unreadable",
}


def from_verdict(verdict: FileVerdict) -> Outcome:
    return Outcome(_KINDS[verdict.status], verdict.offset, None, verdict.records, verdict.reason)


def _from_json(entry: dict[str, Any]) -> Outcome:
    return Outcome(_KINDS[entry["status"]], entry["offset"], None, entry["records"])


def judge(journal: Journal, expected: Expect, got: Outcome) -> tuple[str, str] | None:
    """None if ``got`` is right; else (``silent``/``wrong``, what happened)."""
    prefix = journal.frames[: expected.records]
    if got.accepted is not None and got.accepted != journal.frames[: len(got.accepted)]:
        return "silent", f"accepted a record that is not the original at its offset: {got}"
    if got.count is not None and got.kind in ("clean", "torn") and got.count > len(prefix):
        return "silent", f"accepted {got.count} records, only {len(prefix)} stand before damage"
    if (got.kind, got.offset) != (expected.kind, expected.offset):
        return "wrong", f"expected {expected}, got {got.kind} at {got.offset}"
    if got.count is not None and got.count != expected.records:
        return "wrong", f"expected {expected.records} records, got {got.count}"
    return None


# -- a campaign: every case through every reader -------------------------------------------------


@dataclass
class Campaign:
    """Runs cases through the readers and keeps the score. ``cli_every``: every n-th case
    also goes through the command, ``FileJournal`` and (each ``repair_every``-th) --repair."""

    name: str
    root: Path
    capsys: pytest.CaptureFixture[str]
    cli_every: int = 20
    repair_every: int = 3
    cases: int = 0
    expected: Counter[str] = field(default_factory=Counter)
    checked: Counter[str] = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(
        default_factory=lambda: {"silent": [], "wrong": [], "unhandled": []}
    )

    def __post_init__(self) -> None:
        self.state = self.root / "state"
        self.directory = journal_dir(self.state)
        self.directory.mkdir(parents=True)
        self.file = self.directory / NAME

    def case(
        self,
        label: str,
        journal: Journal,
        data: bytes,
        changed: Sequence[int] | None = None,
        claim: Expect | None = None,
    ) -> None:
        """One damaged file: ``journal``'s bytes changed into ``data`` (``changed``: the
        offsets of the bytes altered, found by comparison if not given). ``claim``: what the
        test says it expects, checked against ``expect`` (the campaign checking itself)."""
        if changed is None:
            changed = changed_bytes(journal.data, data)
        expected = expect(journal, len(data), changed)
        assert claim is None or claim == expected, (label, claim, expected)
        self.cases += 1
        self.expected[expected.kind] += 1
        self._check("framing", label, journal, expected, lambda: read_framing(data))
        self._check("verify", label, journal, expected, lambda: self._verify_file(data))
        if self.cases % self.cli_every == 0:
            self._check("cli", label, journal, expected, lambda: self._cli(data, expected))
            self._check(
                "FileJournal", label, journal, expected, lambda: self._file_journal(data, journal)
            )
            if self.cases % (self.cli_every * self.repair_every) == 0:
                self._check(
                    "repair", label, journal, expected, lambda: self._repair(data, expected)
                )

    def _check(
        self,
        reader: str,
        label: str,
        journal: Journal,
        expected: Expect,
        read: Callable[[], Outcome],
    ) -> None:
        self.checked[reader] += 1
        try:
            verdict = judge(journal, expected, read())
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            # A failed check of this campaign's is a wrong answer; anything else escaped.
            ours = isinstance(exc, AssertionError) and frame.filename == __file__
            kind = "wrong" if ours else "unhandled"
            self.failures[kind].append(f"{reader} {label}: {exc!r} at {where}")
            return
        if verdict is not None:
            self.failures[verdict[0]].append(f"{reader} {label}: {verdict[1]}")

    # -- readers on a real state directory --

    def _verify_file(self, data: bytes) -> Outcome:
        put(self.file, data)
        outcome = from_verdict(verify_file(self.file))
        assert self.file.read_bytes() == data, "verify changed the file"
        return outcome

    def _cli(self, data: bytes, expected: Expect) -> Outcome:
        put(self.file, data)
        self.capsys.readouterr()
        code = main(["journal", "verify", "--state-dir", str(self.state), "--json"])
        out, err = self.capsys.readouterr()
        document = orjson.loads(out)
        assert code == (3 if expected.kind == "corrupt" else 0), (code, err)
        assert document["corrupt"] is (expected.kind == "corrupt")
        assert document["clean"] is (expected.kind == "clean") and document["repaired"] == []
        assert self.file.read_bytes() == data and os.listdir(self.directory) == [NAME]
        (entry,) = document["files"]
        return _from_json(entry)

    def _file_journal(self, data: bytes, original: Journal) -> Outcome:
        put(self.file, data)
        try:
            journal = anyio.run(_open_read_only, self.directory)
        except JournalCorrupt as exc:
            assert exc.path == self.file
            return Outcome("corrupt", exc.offset, None, None)
        finally:
            assert self.file.read_bytes() == data, "FileJournal(repair=False) changed the file"
        # No offsets come back: the journals here hold whole runs one after another, so
        # (run_id, seq) order is file order and the n-th record belongs at the n-th offset.
        accepted = sorted((r for h in journal.runs() for r in h.records), key=_order)
        damage = [d for p, d, _cut in journal.damage if p == self.file]
        kind: Kind = "torn" if damage else "clean"
        offset = damage[0].offset if damage else None
        frames = list(zip(original.offsets, accepted, strict=False))
        return Outcome(kind, offset, frames, len(accepted))

    def _repair(self, data: bytes, expected: Expect) -> Outcome:
        """``--repair`` on a copy: while a live writer holds the file it changes nothing (its
        tail is a write in progress); once the writer is gone it cuts exactly a torn tail,
        and it never touches corruption."""
        state = self.root / f"repair-{self.cases}"
        path = journal_dir(state) / NAME
        shutil.copytree(self.state, state)
        put(path, data)
        try:
            if len(data) >= HEADER_SIZE:  # a live writer's file always has its header
                with _held(path):
                    live = self._verify_json(state, "--repair")
                _check_live(path, data, expected, *live)
            code, document = self._verify_json(state, "--repair")
            _check_repair(path, data, expected, code, document)
            (entry,) = document["files"]
            return _from_json(entry)
        finally:
            shutil.rmtree(state)

    def _verify_json(self, state: Path, *options: str) -> tuple[int, dict[str, Any]]:
        self.capsys.readouterr()
        code = main(["journal", "verify", "--state-dir", str(state), "--json", *options])
        return code, orjson.loads(self.capsys.readouterr().out)

    def finish(self, **covered: object) -> None:
        report(
            f"hostile journals: {self.name}",
            cases=self.cases,
            expected=dict(sorted(self.expected.items())),
            checks=dict(self.checked),
            **covered,
            silent_acceptances=len(self.failures["silent"]),
            unhandled_exceptions=len(self.failures["unhandled"]),
            misclassified=len(self.failures["wrong"]),
        )
        problems = [f"{k}: {m}" for k, found in self.failures.items() for m in found]
        assert not problems, f"{len(problems)} failures (seed {SEED}):\n" + "\n".join(problems[:15])


async def _open_read_only(directory: Path) -> FileJournal:
    journal = await FileJournal.open(directory, repair=False)
    await journal.aclose()
    return journal


def _order(record: Record) -> tuple[str, int]:
    return record.run_id, record.seq


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """Hold ``path``'s flock as its live writer does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_live(
    path: Path, data: bytes, expected: Expect, code: int, document: dict[str, Any]
) -> None:
    (entry,) = document["files"]
    assert entry["live"] is True and document["repaired"] == []
    assert path.read_bytes() == data and os.listdir(path.parent) == [NAME]
    if expected.kind == "corrupt":  # corruption is corruption whoever holds the file
        assert (code, entry["status"], entry["offset"]) == (3, "corrupt", expected.offset)
        return
    assert (code, entry["status"], entry["offset"]) == (0, "live", expected.offset)
    assert entry["records"] == expected.records and document["clean"] is True


def _check_repair(
    path: Path, data: bytes, expected: Expect, code: int, document: dict[str, Any]
) -> None:
    names = sorted(os.listdir(path.parent))
    if expected.kind == "corrupt":
        assert code == 3 and document["repaired"] == []
        assert path.read_bytes() == data, "--repair changed a corrupt file"
        assert names == [NAME], names
        return
    assert code == 0
    if expected.kind == "clean":
        assert path.read_bytes() == data and names == [NAME] and document["repaired"] == []
        return
    offset = expected.offset
    assert offset is not None
    broken = path.with_name(f"{NAME}.{offset}.broken")
    assert broken.read_bytes() == data[offset:], "the cut bytes were not kept"
    assert document["repaired"] == [
        {"path": str(path), "offset": offset, "bytes": len(data) - offset, "kept_as": str(broken)}
    ]
    assert document["clean"] is True
    if offset == 0:  # no whole header: the file itself is set aside
        assert names == [broken.name]
        return
    assert path.read_bytes() == data[:offset]
    again = verify_file(path)
    assert (again.status, again.records) == ("clean", expected.records)


@pytest.fixture
def three() -> Journal:
    return build(three_records())


@pytest.fixture(scope="module")
def two_hundred() -> Journal:
    return build(many_records(200))


# -- 1. truncation ------------------------------------------------------------------------------


def test_truncation_at_every_offset_of_the_last_two_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], three: Journal, two_hundred: Journal
) -> None:
    campaign = Campaign("truncation", tmp_path, capsys, cli_every=budget(7, 20))
    swept = 0
    for label, journal in (("3 records", three), ("200 records", two_hundred)):
        # Soak: every offset of the whole file; CI: the header and the last two records.
        starts = 0 if SOAK else journal.offsets[-2]
        cuts = [*range(HEADER_SIZE + 1), *range(starts, len(journal.data) + 1)]
        for size in sorted(set(cuts)):
            campaign.case(f"{label} cut to {size}", journal, journal.data[:size], changed=[])
            swept += 1
    campaign.finish(
        offsets_swept=swept, scope="every offset" if SOAK else "header + last two records"
    )


# -- 2. garbage and zeros appended -----------------------------------------------------------


def _tail_sizes() -> list[int]:
    if SOAK:
        return list(range(1, 4097))
    edges = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257}
    edges |= {511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 4094, 4095, 4096}
    rng = random.Random(SEED)
    return sorted(edges | {rng.randrange(1, 4097) for _ in range(40)})


def _tail(kind: str, size: int, rng: random.Random) -> bytes:
    if kind == "zeros":
        return bytes(size)
    if kind == "ones":
        return b"\xff" * size
    if kind == "foreign frames":  # valid frames of another file: wrong salt
        frames = b"".join(encode_frame(r, FOREIGN_SALT) for r in three_records() * 40)
        return frames[:size]
    return rng.randbytes(size)


def test_garbage_or_zeros_appended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], three: Journal, two_hundred: Journal
) -> None:
    campaign = Campaign("appended bytes", tmp_path, capsys, cli_every=25)
    rng = random.Random(SEED)
    sizes = _tail_sizes()
    kinds = ("random", "zeros", "ones", "foreign frames")
    for journal_label, journal in (("3 records", three), ("200 records", two_hundred)):
        for kind in kinds:
            for size in sizes:
                tail = _tail(kind, size, rng)
                label = f"{journal_label} + {size} bytes {kind}"
                claim = Expect("torn", len(journal.data), len(journal.records))
                campaign.case(label, journal, journal.data + tail, changed=[], claim=claim)
        # What a crash on some file systems leaves: a frame cut short, then zeros.
        last = journal.offsets[-1]
        for keep, zeros in ((3, 4096), (9, 100), (journal.ends[-1] - last - 1, 1)):
            data = journal.data[: last + keep] + bytes(zeros)
            campaign.case(f"{journal_label}: torn last frame + {zeros} zeros", journal, data)
    campaign.finish(
        sizes=f"{len(sizes)} of 1..4096" if not SOAK else "all of 1..4096",
        kinds="+".join(kinds),
        seed=SEED,
    )


# -- 3. huge lengths -----------------------------------------------------------------------------

HUGE = (0, MAX_PAYLOAD, MAX_PAYLOAD + 1, 1 << 24, 1 << 31, 0xFFFFFFFF)


def _with_length(journal: Journal, index: int, length: int) -> bytes:
    data = bytearray(journal.data)
    struct.pack_into(">I", data, journal.offsets[index], length)
    return bytes(data)


def test_huge_length_headers_allocate_nothing_beyond_the_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], two_hundred: Journal
) -> None:
    campaign = Campaign("huge lengths", tmp_path, capsys, cli_every=1, repair_every=1)
    journal, peak = two_hundred, 0
    n = len(journal.records)
    for length in HUGE:
        appended = journal.data + struct.pack(">II", length, 0xDEADBEEF) + b"\x01" * 64
        cases = [
            ("appended", appended, Expect("torn", len(journal.data), n)),
            (
                "last frame",
                _with_length(journal, n - 1, length),
                Expect("torn", journal.offsets[-1], n - 1),
            ),
            (
                "middle frame",
                _with_length(journal, n // 2, length),
                Expect("corrupt", journal.offsets[n // 2], n // 2),
            ),
            ("first frame", _with_length(journal, 0, length), Expect("corrupt", HEADER_SIZE, 0)),
        ]
        bounded = 0 < length <= MAX_PAYLOAD
        for where, data, expected in cases:
            campaign.case(f"length {length:#x} in {where}", journal, data, claim=expected)
            peak = max(peak, _peak_allocation(data, campaign.file))
            # The bound is a reader rule: over it is refused even before the file's end is.
            for got in (read_framing(data), from_verdict(verify_file(campaign.file))):
                reason = got.reason or ""
                assert ("out of bounds" in reason) is not bounded, (length, where, reason)
    # The reader's own allocations: a bound of a few times the file, whatever the length says.
    assert peak < 4 * len(journal.data) + 256 * 1024, peak
    campaign.finish(lengths=len(HUGE), peak_kib=peak // 1024, file_kib=len(journal.data) // 1024)


def _peak_allocation(data: bytes, path: Path) -> int:
    """The peak traced allocation of the framing reader and of ``verify_file`` on ``data``."""
    put(path, data)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        read_framing(data)
        verify_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    return peak


# -- 4. every single-bit flip of a three-record journal ---------------------------------


def test_every_single_bit_flip_of_a_three_record_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], three: Journal
) -> None:
    campaign = Campaign("every bit flip, 3 records", tmp_path, capsys, cli_every=40)
    bits = len(three.data) * 8
    for bit in range(bits):
        data, claim = flip(three.data, bit), flip_claim(three, bit)
        campaign.case(f"bit {bit} flipped", three, data, changed=[bit // 8], claim=claim)
    # The verdicts the issue names: a flip in the tail is a torn tail, before a valid record
    # it is corruption at that record's offset.
    assert campaign.expected["torn"] == (three.ends[-1] - three.offsets[-1]) * 8
    campaign.finish(bits=bits, file_bytes=len(three.data))


# -- 5. random flips on a 200-record journal ----------------------------------------------


def test_random_bit_flips_on_a_200_record_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], two_hundred: Journal
) -> None:
    campaign = Campaign("random bit flips, 200 records", tmp_path, capsys, cli_every=100)
    rng = random.Random(SEED)
    journal, bits = two_hundred, len(two_hundred.data) * 8
    flips = budget(2_000, 10_000)
    for _ in range(flips):
        bit = rng.randrange(bits)
        data, claim = flip(journal.data, bit), flip_claim(journal, bit)
        campaign.case(f"bit {bit} flipped", journal, data, changed=[bit // 8], claim=claim)
    # Bursts: 2-16 flips at once, close together or spread over the file.
    bursts = budget(200, 2_000)
    for _ in range(bursts):
        chosen = _burst(rng, bits)
        data = journal.data
        for bit in chosen:
            data = flip(data, bit)
        campaign.case(f"bits {chosen} flipped", journal, data, changed=[b // 8 for b in chosen])
    campaign.finish(single_flips=flips, bursts=bursts, file_bytes=len(journal.data), seed=SEED)


def flip_claim(journal: Journal, bit: int) -> Expect:
    """The issue's rule for one flipped bit: in the header, corruption at byte 0; in the last
    frame, a torn tail at its offset; in any other frame, corruption at that frame's offset."""
    byte = bit // 8
    if byte < HEADER_SIZE:
        return Expect("corrupt", 0, 0)
    index = max(i for i, offset in enumerate(journal.offsets) if offset <= byte)
    last = index == len(journal.offsets) - 1
    return Expect("torn" if last else "corrupt", journal.offsets[index], index)


def _burst(rng: random.Random, bits: int) -> list[int]:
    count = rng.randrange(2, 17)
    if rng.random() < 0.5:
        start = rng.randrange(bits - 256)
        return sorted(set(rng.sample(range(start, start + 256), count)))
    return sorted(set(rng.sample(range(bits), count)))


# -- 6. hypothesis: arbitrary and structured bytes into the reader --------------------------------

_POOL = many_records(24, seed=7)
_GENUINE = [encode_frame(r, SALT) for r in _POOL]


@st.composite
def structured(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, Record]], int | None, int]:
    """A valid header, then genuine frames and damaged parts in any order.

    Returns the bytes, the genuine frames placed (offset, record), the offset of the first
    damaged part (None if none), and how many genuine frames follow it.
    """
    data = bytearray(make_header(SALT)[0])
    placed: list[tuple[int, Record]] = []
    first_bad: int | None = None
    after = 0
    for _ in range(draw(st.integers(0, 10))):
        part = draw(
            st.sampled_from(
                ["genuine", "genuine", "random", "zeros", "huge", "cut", "flipped", "foreign"]
            )
        )
        i = draw(st.integers(0, len(_POOL) - 1))
        frame = _GENUINE[i]
        if part == "genuine":
            if first_bad is not None:
                after += 1
            placed.append((len(data), _POOL[i]))
            data += frame
            continue
        if part == "random":
            chunk = draw(st.binary(min_size=1, max_size=300))
        elif part == "zeros":
            chunk = bytes(draw(st.integers(1, 300)))
        elif part == "huge":
            chunk = (
                struct.pack(">II", draw(st.integers(MAX_PAYLOAD + 1, 0xFFFFFFFF)), 0) + frame[8:]
            )
        elif part == "cut":
            chunk = frame[: draw(st.integers(1, len(frame) - 1))]
        elif part == "flipped":
            chunk = flip(frame, draw(st.integers(0, len(frame) * 8 - 1)))
        else:
            chunk = encode_frame(_POOL[i], FOREIGN_SALT)
        if first_bad is None:
            first_bad = len(data)
        data += chunk
    return bytes(data), placed, first_bad, after


HYPOTHESIS = settings(
    max_examples=budget(300, 10_000),
    deadline=None,
    derandomize=not SOAK,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_hypothesis_counts: Counter[str] = Counter()


class SilentAcceptance(AssertionError):
    """A reader handed back a record that damaged or random bytes cannot hold."""


@contextmanager
def _scored(campaign: str) -> Iterator[None]:
    """Count one hypothesis example, and its failure by kind (shrinking repeats failures)."""
    _hypothesis_counts[campaign] += 1
    try:
        yield
    except SilentAcceptance:
        _hypothesis_counts["silent acceptances"] += 1
        raise
    except AssertionError:
        _hypothesis_counts["misclassified"] += 1
        raise
    except Exception:
        _hypothesis_counts["unhandled exceptions"] += 1
        raise


@HYPOTHESIS
@given(case=structured())
def test_structured_bytes_into_the_reader(
    case: tuple[bytes, list[tuple[int, Record]], int | None, int],
) -> None:
    data, placed, first_bad, after = case
    if first_bad is None:
        expected = Expect("clean", None, len(placed))
    else:
        before = sum(1 for offset, _ in placed if offset < first_bad)
        expected = Expect("corrupt" if after else "torn", first_bad, before)
    journal = Journal(data, [o for o, _ in placed], [], [r for _, r in placed])
    with _scored("structured"):
        for reader, read in (
            ("framing", lambda: read_framing(data)),
            ("verify", lambda: from_verdict(classify(data, PATH))),
        ):
            verdict = judge(journal, expected, read())
            if verdict is not None:
                kind = SilentAcceptance if verdict[0] == "silent" else AssertionError
                raise kind(f"{reader}: {verdict[1]}")
        _hypothesis_counts[f"structured {expected.kind}"] += 1


@HYPOTHESIS
@given(
    data=st.one_of(
        st.binary(max_size=4096),
        st.binary(max_size=4096).map(lambda b: make_header(SALT)[0] + b),
        st.binary(max_size=64).map(lambda b: MAGIC + b),
    )
)
def test_arbitrary_bytes_into_the_reader(data: bytes) -> None:
    # Only the two journal errors may come out; no record may come out of random bytes.
    with _scored("arbitrary"):
        try:
            salt = decode_header(data, PATH)
        except (JournalCorrupt, JournalVersionError) as exc:
            assert getattr(exc, "offset", 0) == 0
            salt = SALT  # scan the rest anyway: more bytes into scan_frames
        if salt is None:
            assert len(data) < HEADER_SIZE
        else:
            # No valid frame can be in random bytes, so no corruption either (it needs one).
            scan = scan_frames(data, salt, PATH)
            if scan.records:
                raise SilentAcceptance(f"records out of random bytes: {scan.records}")
            assert scan.end == HEADER_SIZE
        verdict = classify(data, PATH)
        assert verdict.status in ("clean", "torn_tail", "corrupt", "version_mismatch")
        if verdict.records:
            raise SilentAcceptance(f"verify counted {verdict.records} records in random bytes")


def test_hypothesis_campaign_report() -> None:
    """Runs after the two hypothesis campaigns (file order) and says what they covered."""
    if not _hypothesis_counts:
        pytest.skip("the hypothesis campaigns did not run in this session")
    counts = _hypothesis_counts
    report(
        "hostile journals: hypothesis bytes into decode_header/scan_frames/classify",
        examples_per_test=HYPOTHESIS.max_examples,
        **{k.replace(" ", "_"): v for k, v in sorted(counts.items()) if k.startswith(("a", "st"))},
        silent_acceptances=counts["silent acceptances"],
        unhandled_exceptions=counts["unhandled exceptions"],
        misclassified=counts["misclassified"],
    )


def test_versions_other_than_ours_are_refused_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], three: Journal
) -> None:
    state = tmp_path / "state"
    path = journal_dir(state) / NAME
    path.parent.mkdir(parents=True)
    versions = (0, FORMAT_VERSION + 1, 0xFFFF)
    for version in versions:
        body = struct.pack(">8sHH16s", MAGIC, version, 0, SALT)
        data = body + struct.pack(">I", zlib.crc32(body)) + three.data[HEADER_SIZE:]
        assert read_framing(data).kind == "version"
        verdict = verify_file(_write(path, data))
        assert (verdict.status, verdict.version) == ("version_mismatch", version)
        code = main(["journal", "verify", "--state-dir", str(state), "--repair"])
        out = capsys.readouterr().out
        assert code == 3 and f"format version {version}" in out
        assert path.read_bytes() == data and os.listdir(path.parent) == [NAME]
    report("hostile journals: other format versions", versions=versions, exit_code=3)


def _write(path: Path, data: bytes) -> Path:
    put(path, data)
    return path
