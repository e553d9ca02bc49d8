"""The runner follows the outcome table; timeouts, errors, retries and cancellation."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from orchestrator import (
    SUCCEED,
    Engine,
    MemoryJournal,
    RunFinished,
    State,
    StepContext,
    StepFinished,
    StepStarted,
    WorkflowSpec,
    fail,
    open_engine,
)
from orchestrator.errors import UnknownWorkflow, UsageError
from orchestrator.testing import CountingIds, FakeClock
from tests.flows import LEDGER, Effects, make_ledger

pytestmark = pytest.mark.anyio


def _engine(tmp_path: Path, spec: WorkflowSpec = LEDGER) -> tuple[Engine, Effects, FakeClock]:
    clock = FakeClock()
    engine = Engine(MemoryJournal(), clock=clock, ids=CountingIds(), rng=random.Random(7))
    effects = Effects(tmp_path / "effects.log")
    engine.register(spec, effects)
    return engine, effects, clock


def _path(engine: Engine, run_id: str) -> list[tuple[str, int, str]]:
    history = engine.journal.history(run_id)
    assert history is not None
    return [(r.step, r.attempt, r.outcome) for r in history.records if isinstance(r, StepFinished)]


async def test_ok_chain_runs_every_step_once_and_succeeds(tmp_path: Path) -> None:
    engine, effects, _ = _engine(tmp_path)
    result = await engine.run("ledger", "acct-1", requested_by="test")
    assert result.status == "succeeded" and result.ok
    assert _path(engine, result.run_id) == [
        ("reserve", 1, "ok"),
        ("charge", 1, "ok"),
        ("notify", 1, "ok"),
        ("audit", 1, "ok"),
    ]
    assert effects.calls == ["reserve 1", "charge 1", "notify 1", "audit 1"]
    assert result.results["charge"] == 42
    assert result.results["audit"] == ["charge", "notify", "reserve"]


async def test_timeout_leads_to_fail_with_formatted_message(tmp_path: Path) -> None:
    engine, _, _ = _engine(tmp_path, make_ledger(timeout=0.01))
    result = await engine.run("ledger", "acct-2", {"reserve_hang": True})
    assert (result.status, result.code, result.state) == ("failed", "UNAVAILABLE", "reserve")
    assert result.message == "acct-2 is busy; try again"
    assert _path(engine, result.run_id) == [("reserve", 1, "timeout")]


async def test_error_continues_where_the_table_says(tmp_path: Path) -> None:
    engine, _, _ = _engine(tmp_path)
    result = await engine.run("ledger", "acct-3", {"notify_error": True})
    assert result.ok
    assert _path(engine, result.run_id)[2:] == [("notify", 1, "error"), ("audit", 1, "ok")]
    history = engine.journal.history(result.run_id)
    assert history is not None
    notify = [r for r in history.records if isinstance(r, StepFinished) and r.step == "notify"]
    assert notify[0].error is not None
    assert (notify[0].error.type, notify[0].error.message) == ("RuntimeError", "mail server down")


async def test_retry_then_success_waits_with_backoff(tmp_path: Path) -> None:
    engine, effects, clock = _engine(tmp_path)
    result = await engine.run("ledger", "acct-4", {"charge_failures": 2})
    assert result.ok
    assert _path(engine, result.run_id)[1:4] == [
        ("charge", 1, "error"),
        ("charge", 2, "error"),
        ("charge", 3, "ok"),
    ]
    # backoff 0.5 s then 1.0 s, each plus up to 10 % jitter
    assert len(clock.sleeps) == 2
    assert 0.5 <= clock.sleeps[0] <= 0.55 and 1.0 <= clock.sleeps[1] <= 1.1
    assert effects.calls.count("charge 3") == 1


async def test_retry_exhausted_fails_with_the_then_target(tmp_path: Path) -> None:
    engine, effects, _ = _engine(tmp_path)
    result = await engine.run("ledger", "acct-5", {"charge_failures": 9})
    assert (result.status, result.code, result.state) == ("failed", "PAYMENT_FAILED", "charge")
    assert [a for (s, a, _) in _path(engine, result.run_id) if s == "charge"] == [1, 2, 3]
    assert not any(line.startswith("charge") for line in effects.lines())


async def test_forced_outcome_does_not_run_the_step(tmp_path: Path) -> None:
    engine, effects, _ = _engine(tmp_path)
    result = await engine.run("ledger", "acct-6", force={"charge": "timeout"})
    assert (result.status, result.code) == ("failed", "UNAVAILABLE")
    assert "charge 1" not in effects.calls
    history = engine.journal.history(result.run_id)
    assert history is not None and history.started.forced == {"charge": "timeout"}


async def test_forcing_an_unknown_state_or_outcome_is_a_usage_error(tmp_path: Path) -> None:
    engine, _, _ = _engine(tmp_path)
    with pytest.raises(UsageError, match="has no state 'nope'"):
        await engine.run("ledger", "k", force={"nope": "ok"})
    with pytest.raises(UsageError, match="outcomes are ok, timeout, error"):
        await engine.run("ledger", "k", force={"charge": "maybe"})  # type: ignore[dict-item]


async def test_unknown_workflow_names_the_registered_ones(tmp_path: Path) -> None:
    engine, _, _ = _engine(tmp_path)
    with pytest.raises(UnknownWorkflow, match="registered workflows: ledger"):
        await engine.run("nope", "k")


async def test_unjournalable_result_becomes_an_error_outcome(tmp_path: Path) -> None:
    async def returns_object(ctx: StepContext) -> object:
        return object()

    spec = WorkflowSpec(
        "odd",
        [State("one", returns_object, 1, on={"ok": SUCCEED, "timeout": SUCCEED, "error": SUCCEED})],
    )
    engine, _, _ = _engine(tmp_path, spec)
    result = await engine.run("odd", "k")
    finished = [
        r
        for r in engine.journal.history(result.run_id).records  # type: ignore[union-attr]
        if isinstance(r, StepFinished)
    ]
    assert finished[0].outcome == "error"
    assert finished[0].error is not None and "not journalable" in finished[0].error.message


async def test_cancel_is_journaled_as_cancelled(tmp_path: Path) -> None:
    entered = anyio.Event()

    async def blocks(ctx: StepContext) -> None:
        entered.set()
        await anyio.sleep_forever()

    spec = WorkflowSpec(
        "blocker",
        [State("wait", blocks, 60, on={"ok": SUCCEED, "timeout": SUCCEED, "error": SUCCEED})],
    )
    journal = MemoryJournal()
    async with open_engine(journal, ids=CountingIds()) as engine:
        engine.register(spec)
        handle = engine.start("blocker", "k")
        await entered.wait()
        handle.cancel()
        result = await handle.wait()
    assert result.status == "cancelled"
    last = journal.records[-1]
    assert isinstance(last, RunFinished) and last.status == "cancelled" and last.step == "wait"


async def test_same_key_runs_are_serialized_other_keys_overlap(tmp_path: Path) -> None:
    inside: list[str] = []
    peak = {"same": 0, "all": 0}
    release = anyio.Event()
    both_in = anyio.Event()

    async def hold(ctx: StepContext) -> None:
        inside.append(ctx.key)
        peak["all"] = max(peak["all"], len(inside))
        peak["same"] = max(peak["same"], inside.count(ctx.key))
        if len(inside) == 2:
            both_in.set()
        await release.wait()
        inside.remove(ctx.key)

    spec = WorkflowSpec(
        "hold", [State("h", hold, 60, on={"ok": SUCCEED, "timeout": SUCCEED, "error": SUCCEED})]
    )
    async with open_engine(MemoryJournal(), ids=CountingIds()) as engine:
        engine.register(spec)
        handles = [engine.start("hold", k) for k in ("a", "a", "b")]
        await both_in.wait()  # one "a" and the "b" are inside; the second "a" waits
        assert sorted(inside) == ["a", "b"]
        release.set()
        results = [await h.wait() for h in handles]
    assert all(r.ok for r in results)
    assert peak == {"same": 1, "all": 2}


async def test_start_needs_a_task_group(tmp_path: Path) -> None:
    engine, _, _ = _engine(tmp_path)
    with pytest.raises(UsageError, match="open_engine"):
        engine.start("ledger", "k")


async def test_records_carry_clock_time_and_sequence(tmp_path: Path) -> None:
    engine, _, clock = _engine(tmp_path)
    result = await engine.run("ledger", "acct-7")
    history = engine.journal.history(result.run_id)
    assert history is not None
    assert [r.seq for r in history.records] == list(range(len(history.records)))
    assert all(r.at == clock.now() for r in history.records)
    assert result.run_id == "run-0001"
    assert isinstance(history.records[1], StepStarted)


async def test_failure_message_can_quote_the_step_error(tmp_path: Path) -> None:
    async def boom(ctx: StepContext) -> None:
        raise ValueError("disk on fire")

    spec = WorkflowSpec(
        "quoting",
        [
            State(
                "one",
                boom,
                1,
                on={"ok": SUCCEED, "timeout": SUCCEED, "error": fail("BROKEN", "{key}: {error}")},
            )
        ],
    )
    engine, _, _ = _engine(tmp_path, spec)
    result = await engine.run("quoting", "k9")
    assert (result.code, result.message) == ("BROKEN", "k9: disk on fire")
