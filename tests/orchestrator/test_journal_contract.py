"""One contract, three journals: what the ``Journal`` port promises, on memory, file and
PostgreSQL alike.

Each test runs on every adapter through ``journal_factory``, which opens instances on one
storage (one directory, one schema). A test that needs a second instance on the same storage
does not apply to the memory journal (an instance is its own storage) and skips there, saying
so; the PostgreSQL cases skip with the reason when no server is usable (``tests/pg.py``).
Records are appended with their key held, as the engine does: a shared journal refuses
records of a key it does not hold.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from orchestrator import (
    SUCCEED,
    EffectPlanned,
    FileJournal,
    Journal,
    MemoryJournal,
    Record,
    RunFinished,
    RunHistory,
    RunStarted,
    State,
    StepContext,
    StepFinished,
    WorkflowSpec,
    fail,
    open_engine,
)
from orchestrator._journal.framing import MAX_PAYLOAD
from orchestrator.errors import KeyBusy
from tests.pg import fresh_schema

pytestmark = pytest.mark.anyio

KINDS = ("memory", "file", "postgres")
NOT_SHARED = (
    "not applicable to the memory journal: an instance is its own storage, so no second "
    "instance can share it"
)


class JournalFactory:
    """Opens journals of one kind on one storage; the test's journals are closed after it."""

    def __init__(self, kind: str, directory: Path, pg: tuple[str, str] | None) -> None:
        self.kind = kind
        self._directory = directory
        self._pg = pg
        self._opened: list[Journal] = []

    def require_shared(self) -> None:
        """Skip (memory) unless a second instance can open the same storage."""
        if self.kind == "memory":
            pytest.skip(NOT_SHARED)

    async def open(self, *, lock_timeout: float = 120.0) -> Journal:
        journal: Journal
        if self.kind == "memory":
            if self._opened:
                self.require_shared()
            journal = MemoryJournal()
        elif self.kind == "file":
            journal = await FileJournal.open(self._directory, lock_timeout=lock_timeout)
        else:
            from orchestrator._journal.postgres import PostgresJournal

            assert self._pg is not None
            url, schema = self._pg
            journal = await PostgresJournal.open(url, schema=schema, lock_timeout=lock_timeout)
        self._opened.append(journal)
        return journal

    async def close_all(self) -> None:
        for journal in self._opened:
            await journal.aclose()


@pytest.fixture(params=KINDS)
async def journal_factory(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[JournalFactory]:
    with ExitStack() as stack:
        pg = stack.enter_context(fresh_schema("contract")) if request.param == "postgres" else None
        factory = JournalFactory(request.param, tmp_path / "journal", pg)
        try:
            yield factory
        finally:
            await factory.close_all()


# -- records ----------------------------------------------------------------------------------


def started(run_id: str, key: str = "k", at: float = 1.0, input: Any = None) -> RunStarted:
    return RunStarted(
        run_id=run_id, seq=0, at=at, workflow="w", fingerprint="f", key=key, input=input
    )


def step(run_id: str, seq: int, result: Any = None) -> StepFinished:
    return StepFinished(
        run_id=run_id,
        seq=seq,
        at=1.0 + seq,
        step=f"s{seq}",
        attempt=1,
        outcome="ok",
        duration=0.0,
        result=result,
    )


def finished(run_id: str, seq: int) -> RunFinished:
    return RunFinished(run_id=run_id, seq=seq, at=1.0 + seq, status="succeeded", step="s")


def seqs(history: RunHistory | None) -> list[int]:
    return [] if history is None else [record.seq for record in history.records]


def ids(histories: list[RunHistory]) -> list[str]:
    return [history.run_id for history in histories]


# -- the index: history, runs, unfinished -----------------------------------------------------


async def test_history_returns_each_runs_records_in_seq_order(
    journal_factory: JournalFactory,
) -> None:
    journal = await journal_factory.open()
    async with journal.lock_key("k1"), journal.lock_key("k2"):
        # Two runs' records interleaved, as concurrent runs append them.
        for record in (
            started("a", "k1"),
            started("b", "k2"),
            step("a", 1),
            step("b", 1),
            step("a", 2),
            finished("a", 3),
            step("b", 2),
        ):
            await journal.append(record, durable=isinstance(record, RunFinished))
        await journal.sync()
    history = journal.history("a")
    assert history is not None
    assert seqs(history) == [0, 1, 2, 3]
    assert isinstance(history.records[0], RunStarted)
    assert history.finished is not None
    assert seqs(journal.history("b")) == [0, 1, 2]
    assert journal.history("nobody") is None
    assert sorted(ids(list(journal.runs()))) == ["a", "b"]


async def test_unfinished_lists_open_runs_by_key_oldest_first(
    journal_factory: JournalFactory,
) -> None:
    journal = await journal_factory.open()
    async with journal.lock_key("k"), journal.lock_key("k2"):
        # Appended newest first: the order must come from the runs' start, not from arrival.
        await journal.append(started("new", "k", at=20.0))
        await journal.append(started("old", "k", at=10.0))
        await journal.append(started("done", "k", at=5.0))
        await journal.append(finished("done", 1))
        await journal.append(started("other", "k2", at=30.0), durable=True)
        assert ids(journal.unfinished()) == ["old", "new", "other"]
        assert ids(journal.unfinished("k")) == ["old", "new"]
        assert ids(journal.unfinished("k2")) == ["other"]
        assert journal.unfinished("nobody") == []
        await journal.append(finished("old", 1), durable=True)
        assert ids(journal.unfinished("k")) == ["new"]


# -- durability across instances --------------------------------------------------------------


@pytest.mark.parametrize("opened", ["before", "after"])
async def test_durable_append_is_seen_by_another_instance(
    journal_factory: JournalFactory, opened: str
) -> None:
    journal_factory.require_shared()
    first = await journal_factory.open()
    second = await journal_factory.open() if opened == "before" else None
    async with first.lock_key("k"):
        await first.append(started("r"))
        await first.append(step("r", 1))
        await first.append(step("r", 2), durable=True)
        # Still held by ``first``, never closed: the durable append alone must do.
        if second is None:
            second = await journal_factory.open()
        await second.refresh()
        assert seqs(second.history("r")) == [0, 1, 2]


async def test_sync_makes_every_appended_record_visible(
    journal_factory: JournalFactory,
) -> None:
    journal_factory.require_shared()
    first = await journal_factory.open()
    second = await journal_factory.open()
    async with first.lock_key("k"):
        await first.append(started("r"))
        await first.append(step("r", 1))
        await first.sync()
        await second.refresh()
        assert seqs(second.history("r")) == [0, 1]


async def test_records_outlive_the_instance_that_appended_them(
    journal_factory: JournalFactory,
) -> None:
    journal_factory.require_shared()
    first = await journal_factory.open()
    async with first.lock_key("k"):
        await first.append(started("done", at=1.0))
        await first.append(finished("done", 1), durable=True)
        await first.append(started("open", at=2.0))
        await first.append(step("open", 1))  # not durable: closing writes it
    await first.aclose()
    second = await journal_factory.open()
    async with second.lock_key("k"):
        assert ids(second.unfinished("k")) == ["open"]
        assert seqs(await second.load("open")) == [0, 1]
        done = await second.load("done")
        assert seqs(done) == [0, 1]
        assert done is not None and done.finished is not None


async def test_another_instance_never_sees_a_gap(journal_factory: JournalFactory) -> None:
    """Records not appended durably may lag, but never a record without those before it."""
    journal_factory.require_shared()
    first = await journal_factory.open()
    second = await journal_factory.open()
    blob = "x" * 10_000  # a few of these fill the file journal's write buffer on their own
    seen = 0
    async with first.lock_key("k"):
        for seq in range(20):
            durable = seq % 6 == 5
            record = started("r") if seq == 0 else step("r", seq, result=blob)
            await first.append(record, durable=durable)
            if seq % 4 == 3:
                first.flush()
            await second.refresh()
            visible = seqs(second.history("r"))
            assert visible == list(range(len(visible))), f"after appending {seq}"
            assert len(visible) >= seen, "a record seen before vanished"
            if durable:
                assert len(visible) == seq + 1, f"durable record {seq} not visible"
            seen = len(visible)


async def test_refresh_keeps_records_appended_here_and_not_yet_written(
    journal_factory: JournalFactory,
) -> None:
    journal = await journal_factory.open()
    async with journal.lock_key("k"):
        await journal.append(started("r"), durable=True)
        await journal.append(step("r", 1))
        await journal.refresh()
        assert seqs(journal.history("r")) == [0, 1]
        assert seqs(await journal.load("r")) == [0, 1]
        await journal.append(step("r", 2), durable=True)
        assert seqs(journal.history("r")) == [0, 1, 2]


# -- lock_key ---------------------------------------------------------------------------------


async def test_lock_key_is_exclusive_within_an_instance(journal_factory: JournalFactory) -> None:
    journal = await journal_factory.open()
    log: list[str] = []
    first_inside, release_first = anyio.Event(), anyio.Event()

    async def first() -> None:
        async with journal.lock_key("k"):
            log.append("first in")
            first_inside.set()
            await release_first.wait()
            log.append("first out")

    async def second() -> None:
        await first_inside.wait()
        log.append("second waits")
        async with journal.lock_key("k"):
            log.append("second in")

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)
        await first_inside.wait()
        await anyio.wait_all_tasks_blocked()
        assert log == ["first in", "second waits"]
        async with journal.lock_key("another key"):  # other keys are not held up
            log.append("another key")
        release_first.set()
    assert log == ["first in", "second waits", "another key", "first out", "second in"]


async def test_lock_key_held_by_another_instance_times_out(
    journal_factory: JournalFactory,
) -> None:
    journal_factory.require_shared()
    first = await journal_factory.open()
    second = await journal_factory.open(lock_timeout=0.05)
    async with first.lock_key("k"):
        with pytest.raises(KeyBusy) as busy:
            async with second.lock_key("k"):
                pytest.fail("entered a key another instance holds")
        assert busy.value.key == "k"
        async with second.lock_key("another key"):
            pass
    async with second.lock_key("k"):  # free once the first instance left it
        pass


async def test_lock_key_waits_for_another_instance_to_leave(
    journal_factory: JournalFactory,
) -> None:
    journal_factory.require_shared()
    first, second = await journal_factory.open(), await journal_factory.open()
    log: list[str] = []
    first_inside, release_first = anyio.Event(), anyio.Event()

    async def hold_first() -> None:
        async with first.lock_key("k"):
            log.append("first in")
            first_inside.set()
            await release_first.wait()
            log.append("first out")

    async def take_second() -> None:
        async with second.lock_key("k"):
            log.append("second in")

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_first)
        await first_inside.wait()
        tg.start_soon(take_second)
        await anyio.wait_all_tasks_blocked()
        assert log == ["first in"]
        release_first.set()
    assert log == ["first in", "first out", "second in"]


async def test_lock_key_entry_reads_what_other_instances_wrote(
    journal_factory: JournalFactory,
) -> None:
    journal_factory.require_shared()
    # Both opened before anything is written: what each sees comes from taking the key.
    first, second = await journal_factory.open(), await journal_factory.open()
    async with first.lock_key("k"):
        await first.append(started("r"))
        await first.append(step("r", 1), durable=True)
    async with second.lock_key("k"):
        assert ids(second.unfinished("k")) == ["r"]
        assert seqs(second.history("r")) == [0, 1]
        await second.append(step("r", 2), durable=True)
    async with first.lock_key("k"):
        assert seqs(first.history("r")) == [0, 1, 2]
        await first.append(finished("r", 3), durable=True)
    async with second.lock_key("k"):
        assert second.unfinished("k") == []
        history = second.history("r")
        assert seqs(history) == [0, 1, 2, 3]
        assert history is not None and history.finished is not None


async def test_lock_key_hands_over_records_appended_without_waiting(
    journal_factory: JournalFactory,
) -> None:
    """The next holder of a key sees every record its runs got, durable or not; else it
    resumes from an older position and reuses seqs the first instance writes later."""
    journal_factory.require_shared()
    first, second = await journal_factory.open(), await journal_factory.open()
    async with first.lock_key("k"):
        await first.append(started("r"), durable=True)
        await first.append(step("r", 1))
    async with second.lock_key("k"):
        assert seqs(second.history("r")) == [0, 1]


# -- load -------------------------------------------------------------------------------------


async def test_load_returns_the_runs_history(journal_factory: JournalFactory) -> None:
    journal = await journal_factory.open()
    async with journal.lock_key("k"):
        await journal.append(started("r"))
        await journal.append(step("r", 1))
        await journal.append(finished("r", 2), durable=True)
        history = await journal.load("r")
        assert seqs(history) == [0, 1, 2]
        assert history is not None and history.finished is not None
        assert await journal.load("nobody") is None


async def test_load_reads_runs_another_instance_wrote(journal_factory: JournalFactory) -> None:
    journal_factory.require_shared()
    first, second = await journal_factory.open(), await journal_factory.open()
    async with first.lock_key("k"):
        await first.append(started("done", at=1.0))
        await first.append(finished("done", 1), durable=True)
        await first.append(started("open", at=2.0), durable=True)
    async with second.lock_key("k"):
        assert seqs(await second.load("done")) == [0, 1]
        assert seqs(await second.load("open")) == [0]


# -- an idempotent start through the engine ---------------------------------------------------


def counting_workflow(calls: list[str]) -> WorkflowSpec:
    async def greet(ctx: StepContext) -> dict[str, int]:
        calls.append("greet")
        return {"n": int(ctx.input["n"])}

    async def commit(ctx: StepContext) -> int:
        calls.append("commit")
        return int(ctx.results["greet"]["n"]) + 1

    failed = fail("UNAVAILABLE", "{key} failed")
    return WorkflowSpec(
        "counting",
        [
            State(
                "greet", greet, timeout=5, on={"ok": "commit", "timeout": failed, "error": failed}
            ),
            State(
                "commit",
                commit,
                timeout=5,
                effect=True,
                on={"ok": SUCCEED, "timeout": failed, "error": failed},
            ),
        ],
    )


async def test_a_run_id_given_twice_runs_once(journal_factory: JournalFactory) -> None:
    calls: list[str] = []
    async with open_engine(await journal_factory.open()) as engine:
        engine.register(counting_workflow(calls))
        first = await engine.run("counting", "k", {"n": 1}, run_id="x")
        again = await engine.run("counting", "k", {"n": 1}, run_id="x")
    assert first.ok and first.run_id == "x"
    assert first.results == {"greet": {"n": 1}, "commit": 2}
    assert again == first
    assert calls == ["greet", "commit"]


async def test_a_run_id_given_to_another_instance_runs_once(
    journal_factory: JournalFactory,
) -> None:
    journal_factory.require_shared()
    calls: list[str] = []
    async with open_engine(await journal_factory.open()) as engine:
        engine.register(counting_workflow(calls))
        first = await engine.run("counting", "k", {"n": 1}, run_id="x")
    async with open_engine(await journal_factory.open()) as engine:
        engine.register(counting_workflow(calls))
        again = await engine.run("counting", "k", {"n": 1}, run_id="x")
    assert first.ok
    assert again == first
    assert calls == ["greet", "commit"]


# -- closing, and records that cannot be held -------------------------------------------------


async def test_aclose_twice_is_harmless(journal_factory: JournalFactory) -> None:
    journal = await journal_factory.open()
    async with journal.lock_key("k"):
        await journal.append(started("r"), durable=True)
    await journal.aclose()
    await journal.aclose()


UNENCODABLE: dict[str, Record] = {
    "object result": step("r", 1, result=object()),
    "oversized result": step("r", 1, result="x" * (MAX_PAYLOAD + 1)),
    "complex planned value": EffectPlanned(run_id="r", seq=1, at=2.0, step="s", name="n", value=1j),
}


@pytest.mark.parametrize("bad", UNENCODABLE.values(), ids=UNENCODABLE.keys())
async def test_an_unencodable_record_is_refused_at_append(
    journal_factory: JournalFactory, bad: Record
) -> None:
    journal = await journal_factory.open()
    async with journal.lock_key("k"):
        await journal.append(started("r"), durable=True)
        # What the runner catches to turn a step's unjournalable result into an error.
        with pytest.raises((TypeError, ValueError, msgspec.EncodeError)):
            await journal.append(bad, durable=True)
        assert seqs(journal.history("r")) == [0]
        await journal.append(step("r", 1, result="fine"), durable=True)
        assert seqs(journal.history("r")) == [0, 1]


async def test_an_unencodable_run_started_is_refused(journal_factory: JournalFactory) -> None:
    journal = await journal_factory.open()
    async with journal.lock_key("k"):
        with pytest.raises((TypeError, ValueError, msgspec.EncodeError)):
            await journal.append(started("r", input={"when": object()}), durable=True)
        assert journal.history("r") is None
        assert journal.unfinished("k") == []
        await journal.append(started("r", input={"when": "now"}), durable=True)
        assert ids(journal.unfinished("k")) == ["r"]
