"""Campaign 3, I/O errors: fail the n-th file operation of a reset or a delete, then recover.

For each flow (reset of ``main``, delete of a Telegram session) and each fault (EIO, ENOSPC
with writes torn half way, EXDEV; once or from then on), n = 1, 2, ... until a run no
longer reaches the n-th operation. Each case, in process, on a freshly seeded state
directory, with ``set_file_ops(FaultyOps(...))`` around one service call and its shutdown:

1. the call ends complete, or with a *defined* error: a reply ``ok: False`` with a code, or
   an ``OrchestratorError``; a reply ``ok: False`` leaves the store as it was;
2. no descriptor is leaked, and no fsync is retried on a descriptor whose fsync failed;
3. the fault removed, the journal verifies (``FileJournal.open(repair=True)``: no
   ``JournalCorrupt``, no gap);
4. a new journal and engine (a restarted process) ``recover``; if the call had not completed,
   the user asks again; then the state has converged: the key reset (one new session id,
   with its transcript header) or deleted, every other entry as it was, the old transcript's
   bytes exactly once (under its own or its archive name), one farewell for the thread
   binding and every farewell line whole, no temp file or store lock left, and a journal
   with nothing unfinished and nothing left to repair. (Archive and unbind are retried,
   then passed, by design: where the journal shows a run passed one, that step's effects
   are not required; the report counts these.)

Store-lock waits are cut to ``LOCK_WAIT`` (the host's ``lock_wait``, and the bindings lock's
fixed 10 s by patching ``hold_store_lock`` in the local adapter): a lock left behind fails a
case quickly instead of stalling the campaign.

A variant fails only fsyncs (the n-th fsync, once or from then on), where the fsync-retry
rule matters most, every n. The all-operations campaign sweeps every ``STRIDE``-th n in CI
(a different start per fault, so the faults together cover every n); ``make soak`` sweeps
every n of every fault, and adds EIO with torn writes and ENOSPC without.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator import (
    EffectPlanned,
    FileJournal,
    FileOps,
    StepFinished,
    open_engine,
    set_file_ops,
)
from orchestrator.cli import journal_dir
from orchestrator.errors import JournalError, OrchestratorError
from orchestrator.testing import FakeClock
from workflows.sessions.adapters import local as local_adapter
from workflows.sessions.adapters.local import LocalHost
from workflows.sessions.demo import seed_state
from workflows.sessions.service import SessionService
from workflows.sessions.store_lock import hold_store_lock

from .conftest import SOAK, budget, report
from .faults import OPERATIONS, FaultyOps

SESSIONS = Path("agents/main/sessions")
#: CI sweeps every STRIDE-th n of the all-operations campaign; soak sweeps every n.
STRIDE = budget(2, 1)
#: A sweep that has not completed by then is a runaway (a run whose I/O never ends).
MAX_N = 1000
#: Short store-lock waits: a lock left behind shows up as a failure, not as a 10 s pause.
LOCK_WAIT = 0.3


def short_lock_wait(store: Path, *, wait: float = 10.0) -> AbstractAsyncContextManager[None]:
    """``hold_store_lock`` waiting at most ``LOCK_WAIT`` (the bindings file's lock has no
    option for its wait; the store's is ``LocalHost(lock_wait=...)``)."""
    return hold_store_lock(store, wait=min(wait, LOCK_WAIT))


@dataclass(frozen=True, slots=True)
class Flow:
    """One request the campaign repeats: what is asked, and what it must leave behind."""

    name: str
    key: str
    canonical: str
    #: The thread binding the request releases (one farewell) and the one it keeps.
    thread: str
    other_thread: str
    #: The archive name's marker: ``<file>.reset.<ts>`` or ``<file>.deleted.<ts>``.
    marker: str


RESET = Flow("reset", "main", "agent:main:main", "t-777", "t-888", ".reset.")
DELETE = Flow(
    "delete",
    "agent:main:telegram:direct:42",
    "agent:main:telegram:direct:42",
    "t-888",
    "t-777",
    ".deleted.",
)


@dataclass(frozen=True, slots=True)
class Fault:
    """What fails: which errno, once or from then on, torn writes, which operations."""

    code: int
    persistent: bool
    torn: bool = False
    kinds: frozenset[str] = OPERATIONS

    @property
    def label(self) -> str:
        name = errno.errorcode[self.code]
        torn = "+torn" if self.torn else ""
        only = "" if self.kinds == OPERATIONS else f"[{','.join(sorted(self.kinds))}]"
        return f"{name}{torn}{only}/{'persistent' if self.persistent else 'once'}"

    def ops(self, n: int | None) -> FaultyOps:
        return FaultyOps(
            n,
            self.code,
            persistent=self.persistent,
            torn_writes=self.torn,
            kinds=self.kinds,
            sync=False,
        )


def faults() -> list[Fault]:
    """The faults swept: CI's set, and more under soak."""
    chosen = [
        Fault(errno.EIO, False),
        Fault(errno.EIO, True),
        Fault(errno.ENOSPC, False, torn=True),
        Fault(errno.ENOSPC, True, torn=True),
        Fault(errno.EXDEV, False),
        Fault(errno.EXDEV, True),
    ]
    if SOAK:
        chosen += [
            Fault(errno.EIO, False, torn=True),
            Fault(errno.EIO, True, torn=True),
            Fault(errno.ENOSPC, False),
            Fault(errno.ENOSPC, True),
        ]
    return chosen


FSYNC_FAULTS = [
    Fault(errno.EIO, False, kinds=frozenset({"fsync"})),
    Fault(errno.EIO, True, kinds=frozenset({"fsync"})),
]


# -- the state directory -------------------------------------------------------------------


@dataclass(slots=True)
class Original:
    """The seeded state as it was before the case, for the convergence checks."""

    store: dict[str, Any]
    store_bytes: bytes
    #: The target's old session id and transcript bytes.
    old_id: str
    old_bytes: bytes
    #: The transcripts (``*.jsonl``) there were, by name.
    transcripts: set[str]


def make_template(root: Path) -> Path:
    """A seeded state directory the cases copy (seeding fsyncs; copying does not)."""
    template = root / "template"
    template.mkdir(parents=True)
    seed_state(template)
    return template


def seed(template: Path, state: Path, flow: Flow) -> Original:
    """A copy of ``template`` at ``state`` (stored paths pointed at the copy)."""
    shutil.copytree(template, state, symlinks=True)
    path = state / SESSIONS / "sessions.json"
    store_bytes = path.read_bytes().replace(str(template).encode(), str(state).encode())
    path.write_bytes(store_bytes)
    store = orjson.loads(store_bytes)
    old = store[flow.canonical]
    return Original(
        store=store,
        store_bytes=store_bytes,
        old_id=old["sessionId"],
        old_bytes=Path(old["sessionFile"]).read_bytes(),
        transcripts={p.name for p in (state / SESSIONS).glob("*.jsonl")},
    )


@contextmanager
def installed(ops: FileOps) -> Iterator[FileOps]:
    """``ops`` as the process's file operations for the block."""
    previous = set_file_ops(ops)
    try:
        yield ops
    finally:
        set_file_ops(previous)


def counting() -> FaultyOps:
    """Operations that fail nothing and skip the syncs (for the phases after the fault)."""
    return FaultyOps(None, errno.EIO, sync=False)


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def leftovers(state: Path) -> list[str]:
    """Temp files and store-style lock files (``*.json.lock``) anywhere under ``state``."""
    return sorted(
        str(p.relative_to(state))
        for p in state.rglob("*")
        if p.name.endswith(".tmp") or p.name.endswith(".json.lock")
    )


def done(state: Path, flow: Flow, original: Original) -> bool:
    """Whether the store shows the request carried out (reset: a new id; delete: no entry)."""
    store = orjson.loads((state / SESSIONS / "sessions.json").read_bytes())
    if flow is DELETE:
        return flow.canonical not in store
    entry = store.get(flow.canonical) or {}
    return entry.get("sessionId") not in (None, original.old_id)


async def ask(state: Path, flow: Flow) -> dict[str, Any]:
    """The flow's request through the service, as a host makes it; the journal is closed
    when it returns (the shutdown is part of what the fault may hit)."""
    journal = await FileJournal.open(journal_dir(state))
    async with open_engine(journal, clock=FakeClock()) as engine:
        service = SessionService(engine, LocalHost(state, lock_wait=LOCK_WAIT))
        if flow is RESET:
            return await service.reset(flow.key, command_source="campaign")
        return await service.delete(flow.key, command_source="campaign")


def ask_under(ops: FileOps, state: Path, flow: Flow, backend: str) -> tuple[str, bool]:
    """Ask once with ``ops`` installed: (how it ended, whether the reply was ok False)."""
    try:
        with installed(ops):
            reply = anyio.run(ask, state, flow, backend=backend)
    except OrchestratorError as exc:
        return f"raised {type(exc).__name__}", False
    except Exception as exc:  # any other type is what the check looks for
        return f"escaped {type(exc).__name__}: {exc}", False
    if reply["ok"]:
        return "succeeded", False
    return f"failed {reply['error']['code']}", True


async def recover(state: Path, flow: Flow, original: Original) -> tuple[list[str], str]:
    """A restarted process: recover, then ask again if the request is still not done.

    A resumed run may end failed (its failure decided before the fault stopped it), but
    then, as for any failed run, with the store as it was. Returns the problems found and
    what happened (``recovered N``, ``asked again``).
    """
    problems: list[str] = []
    journal = await FileJournal.open(journal_dir(state))
    async with open_engine(journal, clock=FakeClock()) as engine:
        service = SessionService(engine, LocalHost(state, lock_wait=LOCK_WAIT))
        result = await engine.recover(requested_by="campaign:recover")
        problems += [f"recovery refused: {why}" for why in result.refused]
        store_bytes = (state / SESSIONS / "sessions.json").read_bytes()
        problems += [
            f"resumed run ended {r.code} but the store changed: {r.message}"
            for r in result.resumed
            if not r.ok and store_bytes != original.store_bytes
        ]
        failed = sum(not r.ok for r in result.resumed)
        what = f"recovered {len(result.resumed)}" + (f" ({failed} failed)" if failed else "")
        if not done(state, flow, original):
            what += ", asked again"
            if flow is RESET:
                reply = await service.reset(flow.key, command_source="campaign:again")
            else:
                reply = await service.delete(flow.key, command_source="campaign:again")
            if not reply["ok"]:
                problems.append(f"asked again after recovery: {reply['error']}")
    return problems, what


async def verify_journal(state: Path, repair: bool) -> list[str]:
    """Open the journal as a new process would; problems: corruption, damage, open runs."""
    try:
        journal = await FileJournal.open(journal_dir(state), repair=repair)
    except JournalError as exc:
        return [f"journal does not verify: {exc}"]
    try:
        problems = [f"journal damage after repair: {d}" for d in journal.damage if not repair]
        if not repair:
            problems += [f"run {h.run_id} unfinished" for h in journal.unfinished()]
        return problems
    finally:
        await journal.aclose()


@dataclass(frozen=True, slots=True)
class Facts:
    """What the journal says about the key's runs."""

    #: Every new session id a reset planned.
    minted: list[str]
    #: Post-commit steps a finished run passed after failing every attempt (archive,
    #: unbind: "retried, then passed" by design), so their effects may be missing.
    passed: frozenset[str]


def journal_facts(state: Path, key: str) -> Facts:
    async def read() -> Facts:
        journal = await FileJournal.open(journal_dir(state), repair=False)
        try:
            minted: list[str] = []
            passed: set[str] = set()
            for history in journal.runs():
                if history.started.key != key:
                    continue
                last: dict[str, str] = {}
                for record in history.records:
                    if isinstance(record, EffectPlanned) and record.name == "commit":
                        minted.append(record.value["new_session_id"])
                    if isinstance(record, StepFinished):
                        last[record.step] = record.outcome
                if history.finished is not None and history.finished.status == "succeeded":
                    passed |= {s for s in ("archive", "unbind") if last.get(s, "ok") != "ok"}
            return Facts(minted, frozenset(passed))
        finally:
            await journal.aclose()

    return anyio.run(read)


# -- what a converged state looks like -------------------------------------------------------


def converged(state: Path, flow: Flow, original: Original, facts: Facts) -> tuple[list[str], str]:
    """Problems with the final state, and where the old transcript ended up."""
    problems: list[str] = []
    sessions = state / SESSIONS
    store = orjson.loads((sessions / "sessions.json").read_bytes())
    others = {k: v for k, v in original.store.items() if k != flow.canonical}
    kept = {k: v for k, v in store.items() if k != flow.canonical}
    if kept != others:
        problems.append(f"other entries changed: {sorted(set(kept) ^ set(others)) or 'values'}")
    if flow is RESET:
        problems += _reset_done(state, store, original, facts)
    elif flow.canonical in store:
        problems.append("the deleted entry is still in the store")
    holders = [
        p.name for p in sessions.iterdir() if p.is_file() and p.read_bytes() == original.old_bytes
    ]
    old_name = f"{original.old_id}.jsonl"
    named = [h for h in holders if h == old_name or h.startswith(old_name + flow.marker)]
    if len(holders) != 1 or named != holders:
        problems.append(f"old transcript bytes held by {holders} (want exactly one)")
    where = "archived" if named and named[0] != old_name else "kept in place"
    if "archive" in facts.passed:
        where += " (archive passed)"
    problems += _bindings_done(state, flow, "unbind" in facts.passed)
    left = leftovers(state)
    if left:
        problems.append(f"left behind: {left}")
    return problems, where


def _reset_done(state: Path, store: dict[str, Any], original: Original, facts: Facts) -> list[str]:
    entry = store.get(RESET.canonical)
    if entry is None or entry.get("sessionId") == original.old_id:
        return ["the key was not reset"]
    new_id = entry["sessionId"]
    problems = []
    if new_id not in facts.minted:
        problems.append(f"session id {new_id} was not planned in the journal")
    if "archive" in facts.passed:
        return problems  # the header is written by the archive step
    try:
        header = orjson.loads(Path(entry["sessionFile"]).read_bytes().splitlines()[0])
        if header.get("id") != new_id:
            problems.append(f"the new transcript's header names {header.get('id')}, not {new_id}")
    except (OSError, IndexError, orjson.JSONDecodeError) as exc:
        problems.append(f"no header for the new session {new_id}: {exc}")
    # One rotation: the only transcript that appeared is the new session's.
    appeared = {p.name for p in (state / SESSIONS).glob("*.jsonl")} - original.transcripts
    if appeared != {f"{new_id}.jsonl"}:
        problems.append(f"transcripts appeared: {sorted(appeared)} (want {new_id}.jsonl only)")
    return problems


def _bindings_done(state: Path, flow: Flow, passed: bool) -> list[str]:
    """The binding released with one farewell (at most one if unbind passed); every
    farewell line whole."""
    problems = []
    bindings = orjson.loads((state / "bindings" / "thread-bindings.json").read_bytes())
    threads = sorted(b["threadId"] for b in bindings["bindings"])
    if threads != [flow.other_thread] and not (passed and flow.other_thread in threads):
        problems.append(f"thread bindings left: {threads} (want [{flow.other_thread!r}])")
    try:
        lines = (state / "bindings" / "farewells.jsonl").read_bytes().splitlines()
    except FileNotFoundError:
        lines = []
    sent = []
    for line in lines:
        try:
            sent.append(orjson.loads(line)["threadId"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            problems.append(f"farewells.jsonl has a broken line: {line[:80]!r}")
    if sent != [flow.thread] and not (passed and not sent):
        problems.append(f"farewells recorded for {sent} (want [{flow.thread!r}] once)")
    return problems


# -- one case ------------------------------------------------------------------------------


@dataclass(slots=True)
class Case:
    """What one case did and found."""

    n: int
    outcome: str
    fired: int
    #: File operations the faulty call made (all of its operations if the fault was not hit).
    count: int
    recovery: str = ""
    archived_as: str = ""
    problems: list[str] = field(default_factory=list)


def run_case(template: Path, flow: Flow, fault: Fault, n: int, backend: str) -> Case:
    """One case: a fresh state, the call under the fault, then the checks (module doc)."""
    state = template.parent / f"{flow.name}-{fault.label.replace('/', '-')}-{n}"
    original = seed(template, state, flow)
    ops = fault.ops(n)
    fds = open_fds()
    outcome, refused = ask_under(ops, state, flow, backend)
    case = Case(n, outcome, len(ops.fired), ops.count)
    if not ops.fired:
        case.outcome += " (fault not reached)"
    if outcome.startswith("escaped"):
        case.problems.append(f"undefined error: {outcome}")
    leaked = open_fds() - fds
    if leaked:
        case.problems.append(f"descriptors leaked: {sorted(leaked)}")
        for fd in leaked:  # ours: opened by the case's run and never closed
            os.close(fd)
    if ops.fsync_retries:
        case.problems.append(f"fsync retried after it failed on {ops.fsync_retries}")
    if refused and (state / SESSIONS / "sessions.json").read_bytes() != original.store_bytes:
        case.problems.append(f"{outcome} but the store changed (the commit is visible)")
    with installed(counting()):
        try:
            case.problems += anyio.run(verify_journal, state, True)
            problems, case.recovery = anyio.run(recover, state, flow, original)
            case.problems += problems
            facts = journal_facts(state, flow.canonical)
            problems, case.archived_as = converged(state, flow, original, facts)
            case.problems += problems
            case.problems += anyio.run(verify_journal, state, False)
        except Exception as exc:  # the fault is gone: nothing may fail now
            case.problems.append(f"after the fault: {type(exc).__name__}: {exc}")
    if ops.fired:
        first = ops.fired[0]
        case.problems = [f"{p} [fault #{n}: {first.op} {first.target}]" for p in case.problems]
    # Paths relative to the state directory, so a problem reads in one line.
    case.problems = [p.replace(f"{state}/", "") for p in case.problems]
    return case


def sweep(
    template: Path, flow: Flow, fault: Fault, start: int, stride: int, backends: Iterator[str]
) -> list[Case]:
    """n = start, start + stride, ... until the fault is not reached."""
    cases: list[Case] = []
    for n in itertools.count(start, stride):
        assert n <= MAX_N, f"{flow.name} {fault.label}: still hitting the fault at n={n}"
        case = run_case(template, flow, fault, n, next(backends))
        cases.append(case)
        if case.fired == 0:
            return cases
    raise AssertionError("unreachable")


def campaign(root: Path, faults_: list[Fault], title: str, stride: int) -> None:
    """Sweep every flow and fault; print what was covered; fail listing every problem."""
    began = time.monotonic()
    template = make_template(root)
    backends = itertools.cycle(["asyncio", "trio"])
    outcomes: Counter[str] = Counter()
    recoveries: Counter[str] = Counter()
    archived: Counter[str] = Counter()
    swept: dict[str, int] = {}
    problems: list[str] = []
    for index, (flow, fault) in enumerate(itertools.product((RESET, DELETE), faults_)):
        # A different start per fault: together the faults cover every n.
        cases = sweep(template, flow, fault, 1 + index % stride, stride, backends)
        swept[f"{flow.name}:{fault.label}"] = cases[-1].count
        for case in cases:
            outcomes[case.outcome.split(":")[0]] += 1
            recoveries[case.recovery] += 1
            archived[case.archived_as] += 1
            problems += [f"{flow.name} {fault.label} n={case.n}: {p}" for p in case.problems]
    report(
        title,
        runs=sum(outcomes.values()),
        every_nth=stride,
        operations_per_flow=swept,
        outcomes=dict(outcomes),
        afterwards=dict(recoveries),
        old_transcript=dict(archived),
        problems=len(problems),
        seconds=round(time.monotonic() - began, 1),
    )
    assert not problems, summarize(problems)


def summarize(problems: list[str]) -> str:
    """The problems grouped by kind (ids, numbers and the fault masked), one example each."""
    kinds: dict[str, list[str]] = {}
    for problem in problems:
        kind = re.sub(r"\[fault #.*\]$", "", problem.split(": ", 1)[1])
        kind = re.sub(r"[0-9a-fT-]{6,}", lambda m: "#" if re.search(r"\d", m[0]) else m[0], kind)
        kind = re.sub(r"\d+", "#", kind)
        kinds.setdefault(kind[:160], []).append(problem)
    lines = [f"{len(problems)} problems of {len(kinds)} kinds:"]
    for kind, seen in sorted(kinds.items(), key=lambda item: -len(item[1])):
        lines.append(f"- {len(seen)} x {kind}\n    e.g. {seen[0]}")
    return "\n".join(lines)


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_adapter, "hold_store_lock", short_lock_wait)


@pytest.mark.usefixtures("short_waits")
def test_io_errors_every_nth_operation(tmp_path: Path) -> None:
    """EIO, ENOSPC (torn writes) and EXDEV on the n-th file operation, once and persistent."""
    campaign(tmp_path, faults(), "io errors (n-th file operation)", STRIDE)


@pytest.mark.usefixtures("short_waits")
def test_io_errors_every_nth_fsync(tmp_path: Path) -> None:
    """EIO on the n-th fsync only, once and persistent: never retried on that descriptor."""
    campaign(tmp_path, FSYNC_FAULTS, "io errors (n-th fsync)", 1)


def test_faulty_ops_is_what_the_campaign_assumes(tmp_path: Path) -> None:
    """The harness itself: the n-th call fails once or from then on, a torn write leaves
    half, a failed close still closes, and an fsync retried on its descriptor is seen."""
    path = tmp_path / "f"
    ops = FaultyOps(2, errno.ENOSPC, torn_writes=True, sync=False)
    fd = ops.open(path, os.O_WRONLY | os.O_CREAT)
    with pytest.raises(OSError) as failed:
        ops.write(fd, b"abcd")
    ops.write(fd, b"ef")
    ops.close(fd)
    assert failed.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"abef" and [(f.index, f.op) for f in ops.fired] == [(2, "write")]

    fsyncs = FaultyOps(1, errno.EIO, persistent=True, kinds={"fsync"}, sync=False)
    first = fsyncs.open(path, os.O_WRONLY)
    for _ in range(2):
        with pytest.raises(OSError):
            fsyncs.fsync(first)
    fsyncs.close(first)
    fd = fsyncs.open(path, os.O_WRONLY)  # a new descriptor (perhaps the same number)
    with pytest.raises(OSError):
        fsyncs.fsync(fd)
    fsyncs.close(fd)
    assert fsyncs.fsync_retries == [(first, str(path))] and fsyncs.count == 3

    closes = FaultyOps(1, errno.EIO, kinds={"close"})
    fd = closes.open(path, os.O_RDONLY)
    with pytest.raises(OSError):
        closes.close(fd)
    with pytest.raises(OSError) as closed:
        os.fstat(fd)
    assert closed.value.errno == errno.EBADF
