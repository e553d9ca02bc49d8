"""Campaign 5: model-based. A hypothesis state machine drives reset, delete, concurrent
requests, crashes and recovery on a few keys of a memory host, and checks the host against an
in-memory model of the expected store, archives, bindings and hooks after every step.

Crashes are simulated where they happen (``model_rig``): at a drawn crash point (after a
journal append or a host effect) of whatever is running, a plain request, a concurrent batch
or a recovery (so crashes during recovery and crashes twice come for free), with one of three
survival rules for the journal (all appended, a kill's, a power loss's). The process then
"restarts": a fresh engine over the surviving records and the host as it was at the crash.

The model learns from the journal only *which* requests ran and in which order per key (runs
on one key serialize; concurrent requests may go in either order); it predicts *what* each
one must do. A key with an unfinished run is mid-flight and checked only for the invariants
that hold at every instant; every other key is checked in full.
"""

from __future__ import annotations

import collections
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import hypothesis.strategies as st
import orjson
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from orchestrator import EffectPlanned, Engine, RunFinished, RunStarted
from orchestrator.testing import FakeClock
from tests.workflows.memory_rig import SESSIONS, seed, transcript
from workflows.sessions.adapters.memory import MemoryHost
from workflows.sessions.service import SessionService

from .conftest import budget, report
from .model_rig import (
    KINDS,
    Crash,
    CrashJournal,
    CrashKind,
    CrashSwitch,
    HostState,
    SharedIds,
    instrument,
)

MAIN = "agent:main:main"
#: Request keys as a caller writes them, and the canonical key each one means.
KEYS = {"main": MAIN, "agent:main:a": "agent:main:a", "agent:main:b": "agent:main:b"}
#: Threads bound to each session at the start ("b" has no entry yet: no unbind until it has).
THREADS = {MAIN: ["th-main"], "agent:main:a": ["th-a"], "agent:main:b": ["th-b"]}
RESET, DELETE = "session_reset", "session_delete"
REASONS = ["reset", "new"]
#: Something to run in the example's event loop (a request, a batch, a recovery).
Work = Callable[[], Coroutine[Any, Any, None]]

COVERAGE: collections.Counter[str] = collections.Counter()

crashes = st.none() | st.tuples(st.integers(1, 64), st.sampled_from(KINDS))
requests = st.tuples(st.sampled_from(["reset", "delete"]), st.sampled_from(sorted(KEYS)))


@dataclass
class KeyModel:
    """What one session key must look like once no run on it is in flight."""

    exists: bool
    #: Every session id the key's entry has held, oldest first (the last is current if it
    #: exists; each earlier one, and a deleted last one, is archived exactly once).
    sids: list[str] = field(default_factory=list)
    reset_archives: int = 0
    deleted_archives: int = 0
    bound: list[str] = field(default_factory=list)
    farewelled: list[str] = field(default_factory=list)

    def unbind(self) -> None:
        self.farewelled += self.bound
        self.bound = []


#: ``<file>.<reason>.<ISO-8601 UTC with ':' -> '-'>``
ARCHIVED = re.compile(r"\.(reset|deleted)\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z$")


def header_id(data: bytes) -> Any:
    """The session id in a transcript's header line (which session the bytes belong to)."""
    return orjson.loads(data.split(b"\n", 1)[0]).get("id")


class SessionMachine(RuleBasedStateMachine):
    """One example: a seeded memory host, a model of it, and requests that may crash."""

    def __init__(self) -> None:
        super().__init__()
        COVERAGE["examples"] += 1
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        self.switch = CrashSwitch()
        self.ids = SharedIds()
        self.clock = FakeClock()
        self.model = {key: KeyModel(exists=False, bound=list(THREADS[key])) for key in THREADS}
        #: Requests asked for whose run the journal has not shown yet, by (workflow, key).
        self.outstanding: collections.Counter[tuple[str, str]] = collections.Counter()
        self.matched: set[str] = set()
        self.applied: set[str] = set()
        self.seen: set[bytes] = set()
        self.crashed_in_example = False
        self.portal.call(self._setup)

    def _setup(self) -> None:
        host = self.host = MemoryHost()
        host.hooks.command_handlers = True
        host.hooks.subagent_handlers = True
        sid, _ = seed(host, MAIN, label="main")
        self.model[MAIN].exists, self.model[MAIN].sids = True, [sid]
        # A custom transcript name, kept across a reset (spec 3.4): the new header takes the
        # old name once the old file is archived, so a replayed archive must not move it.
        sid = str(uuid.uuid4())
        kept = SESSIONS / "chat-a.jsonl"
        host.transcripts.files[kept] = transcript(sid, "hello from a")
        store = host.store.entries()
        store["agent:main:a"] = {"sessionId": sid, "sessionFile": str(kept), "updatedAt": 1}
        host.store.put("main", store)
        self.model["agent:main:a"].exists, self.model["agent:main:a"].sids = True, [sid]
        host.bindings.threads = {key: list(threads) for key, threads in THREADS.items()}
        self.initial_sids = {s for m in self.model.values() for s in m.sids}
        instrument(host, self.switch)
        self.journal = CrashJournal(self.switch)
        self._start_engine()

    def _start_engine(self) -> None:
        self.engine = Engine(self.journal, clock=self.clock, ids=self.ids)
        self.service = SessionService(self.engine, self.host)

    def teardown(self) -> None:
        try:
            self.recover(None)
            assert not self.journal.unfinished(), "recovery left runs unfinished"
            assert not self.outstanding, self.outstanding
            self.check()
        finally:
            self._portal_cm.__exit__(None, None, None)

    # -- driving ---------------------------------------------------------------------------

    def _drive(self, crash: tuple[int, CrashKind] | None, work: Work) -> None:
        """Run ``work`` with the switch armed (or not); after a crash, restart the 'process'."""
        COVERAGE["steps"] += 1
        saved: list[HostState] = []
        self.switch.on_crash = lambda: saved.append(HostState.capture(self.host))
        self.switch.arm(crash[0] if crash else None)

        async def guarded() -> bool:
            crashed = False
            try:
                await work()
            except* Crash:
                crashed = True
            return crashed

        crashed = self.portal.call(guarded)
        during_recovery = self.switch.resumes > 0
        self.switch.arm(None)
        if not crashed:
            self._observe()
            assert not self.outstanding, f"requests with no run: {self.outstanding}"
            return
        assert crash is not None and saved
        kind = crash[1]
        COVERAGE[f"crashes ({kind})"] += 1
        COVERAGE["crashes during recovery"] += during_recovery
        self.crashed_in_example = True
        records = self.journal.surviving(kind)
        self.journal = self.portal.call(CrashJournal.reopened, self.switch, records)
        saved[0].restore(self.host)
        self._start_engine()
        self._observe()
        COVERAGE["requests lost with their process"] += sum(self.outstanding.values())
        self.outstanding.clear()  # never journaled: the caller got no answer and may ask again

    def _ask(self, op: str, raw: str, reason: str = "reset") -> Work:
        key = KEYS[raw]

        async def one() -> None:
            if op == "delete" and key == MAIN:
                reply = await self.service.delete(raw)
                assert reply["ok"] is False, reply
                assert reply["error"]["code"] == "INVALID_REQUEST", reply
                assert "Cannot delete the main session" in reply["error"]["message"]
                COVERAGE["main deletes refused"] += 1
                return
            self.outstanding[(RESET if op == "reset" else DELETE, key)] += 1
            COVERAGE["requests"] += 1
            if op == "reset":
                reply = await self.service.reset(raw, reason=reason)
            else:
                reply = await self.service.delete(raw)
            assert reply["ok"] is True, reply

        return one

    @rule(
        raw=st.sampled_from(sorted(KEYS)), reason=st.sampled_from(["reset", "new"]), crash=crashes
    )
    def reset(self, raw: str, reason: str, crash: tuple[int, CrashKind] | None) -> None:
        self._drive(crash, self._ask("reset", raw, reason))

    @rule(raw=st.sampled_from(sorted(KEYS)), crash=crashes)
    def delete(self, raw: str, crash: tuple[int, CrashKind] | None) -> None:
        self._drive(crash, self._ask("delete", raw))

    @rule(batch=st.lists(requests, min_size=2, max_size=4), crash=crashes)
    def concurrent(self, batch: list[tuple[str, str]], crash: tuple[int, CrashKind] | None) -> None:
        asks = [self._ask(op, raw) for op, raw in batch]

        async def together() -> None:
            async with anyio.create_task_group() as tg:
                for ask in asks:
                    tg.start_soon(ask)

        COVERAGE["concurrent batches"] += 1
        self._drive(crash, together)

    @rule(crash=crashes)
    def recover(self, crash: tuple[int, CrashKind] | None) -> None:
        async def recover() -> None:
            pending = len(self.journal.unfinished())
            result = await self.engine.recover()
            assert not result.refused and not result.skipped, result
            assert len(result.resumed) == pending, result
            assert all(r.ok for r in result.resumed), result.resumed
            COVERAGE["runs resumed by recover"] += pending

        self._drive(crash, recover)

    # -- the model -------------------------------------------------------------------------

    def _observe(self) -> None:
        """Match new runs to requests; apply finished ones to the model in journal order."""
        for record in self.journal.records:
            if isinstance(record, RunStarted) and record.run_id not in self.matched:
                wanted = (record.workflow, record.key)
                assert self.outstanding[wanted] > 0, f"a run nobody asked for: {wanted}"
                self.outstanding[wanted] -= 1
                self.outstanding += collections.Counter()  # drop zero counts
                self.matched.add(record.run_id)
        for record in self.journal.records:
            if isinstance(record, RunFinished) and record.run_id not in self.applied:
                self._apply(record.run_id)
                self.applied.add(record.run_id)

    def _apply(self, run_id: str) -> None:
        history = self.journal.history(run_id)
        assert history is not None and history.finished is not None
        assert history.finished.status == "succeeded", history.finished
        COVERAGE["runs finished"] += 1
        key, model = history.started.key, self.model[history.started.key]
        plans = history.plans()
        results = history.results()
        if history.started.workflow == RESET:
            commits = [r for r in history.records if isinstance(r, EffectPlanned)]
            assert [r.name for r in commits].count("commit") == 1, "one commit plan per reset"
            plan = plans["commit"]
            current = model.sids[-1] if model.exists else None
            assert plan["expected_old_id"] == current, (key, plan, current)
            if model.exists:
                model.reset_archives += 1
                model.unbind()
            model.exists = True
            model.sids.append(plan["new_session_id"])
        else:
            assert results["store_mutation"]["had_entry"] == model.exists, (key, results)
            if model.exists:
                model.deleted_archives += 1
                model.unbind()
            model.exists = False

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def holds(self) -> None:
        self.check()

    def check(self) -> None:
        host = self.host
        store = host.store.entries()
        files = {path.name: data for path, data in host.transcripts.files.items()}
        assert all(path.parent == SESSIONS for path in host.transcripts.files)
        assert MAIN in store, "the main session is gone"

        # No transcript bytes lost, none duplicated: everything ever seen is there, once.
        present = collections.Counter(files.values())
        self.seen.update(files.values())
        lost = [data[:80] for data in self.seen if present[data] != 1]
        assert not lost, f"transcripts lost or duplicated: {lost}"

        # Nothing unexpected: every session id and archive was journaled before it was made.
        runs = list(self.journal.runs())
        planned_ids = set(self.initial_sids)
        moves: set[str] = set()
        for run in runs:
            plans = run.plans()
            if "commit" in plans:
                planned_ids.add(plans["commit"]["new_session_id"])
                moves.update(Path(dst).name for _src, dst in plans["commit"]["archive"])
            if "archive" in plans:
                moves.update(Path(dst).name for _src, dst in plans["archive"]["moves"])
        for name, data in files.items():
            assert header_id(data) in planned_ids, f"{name}: a session id no plan minted"
            if ARCHIVED.search(name):
                assert name in moves, f"{name}: an archive no plan named"
        for key, entry in store.items():
            assert entry["sessionId"] in planned_ids, (key, entry)

        # Farewells and hooks at most once.
        threads = [thread for _id, thread in host.bindings.farewells]
        assert len(threads) == len(set(threads)), f"a thread said farewell twice: {threads}"
        for event, name in (("command:", "command_hook"), ("subagent_ended", "subagent_ended")):
            fired = [e for e, _ in host.hooks.events if e.startswith(event)]
            intents = [r for r in runs if name in r.plans()]
            assert len(fired) <= len(intents), (event, len(fired), len(intents))
            if not self.crashed_in_example:
                assert len(fired) == len(intents), (event, len(fired), len(intents))

        in_flight = {run.started.key for run in self.journal.unfinished()}
        for key, model in self.model.items():
            if key not in in_flight:
                self._check_key(key, model, store, files)
        COVERAGE["states checked"] += 1

    def _check_key(
        self, key: str, model: KeyModel, store: dict[str, Any], files: dict[str, bytes]
    ) -> None:
        host = self.host
        assert (key in store) == model.exists, (key, model, store.get(key))
        if model.exists:
            entry = store[key]
            assert entry["sessionId"] == model.sids[-1], (key, entry, model.sids)
        # Each session id the key held: exactly one file, current (the entry's sessionFile)
        # or archived once.
        held: dict[str, list[str]] = {}
        for name, data in files.items():
            held.setdefault(header_id(data), []).append(name)
        resets = deleted = 0
        for n, sid in enumerate(model.sids):
            mine = held.get(sid, [])
            assert len(mine) == 1, (key, sid, mine)
            (name,) = mine
            if model.exists and n == len(model.sids) - 1:
                assert SESSIONS / name == Path(store[key]["sessionFile"]), (name, store[key])
            else:
                archived = ARCHIVED.search(name)
                assert archived, f"{name}: session {sid} of {key} is neither current nor archived"
                resets += archived[1] == "reset"
                deleted += archived[1] == "deleted"
        assert (resets, deleted) == (model.reset_archives, model.deleted_archives), (
            key,
            model,
            sorted(files),
        )
        assert host.bindings.threads.get(key, []) == model.bound, (key, host.bindings.threads)
        said = [t for _id, t in host.bindings.farewells if t in THREADS[key]]
        assert said == model.farewelled, (key, said, model)


def test_model_based_reset_delete_crash_recover() -> None:
    COVERAGE.clear()
    began = time.monotonic()
    run_state_machine_as_test(
        SessionMachine,
        settings=settings(
            max_examples=budget(300, 10_000),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            print_blob=True,
        ),
    )
    report(
        "model-based",
        seconds=round(time.monotonic() - began, 1),
        **{k.replace(" ", "_"): v for k, v in sorted(COVERAGE.items())},
    )
