"""Interrupted runs resume at the right place and converge to the uninterrupted result."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import (
    SUCCEED,
    EffectPlanned,
    Engine,
    MemoryJournal,
    Record,
    RunFinished,
    RunResumed,
    State,
    StepFinished,
    StepStarted,
    WorkflowSpec,
)
from orchestrator._journal.file import FileJournal
from orchestrator.testing import CountingIds, FakeClock
from tests.flows import LEDGER, Effects, charge, notify

ROOT = Path(__file__).resolve().parents[2]


def _finished(records: list[Record]) -> list[tuple[str, str, Any]]:
    return [(r.step, r.outcome, r.result) for r in records if isinstance(r, StepFinished)]


def _end(records: list[Record]) -> list[Any]:
    """The steps that ended ok with their results, and how the run ended.

    Attempt-by-attempt paths may differ after a crash (a crashed attempt uses up an attempt
    number, and the test steps fail by attempt number), the end may not.
    """
    last = records[-1]
    assert isinstance(last, RunFinished)
    oks = [(s, r) for (s, o, r) in _finished(records) if o == "ok"]
    return [*oks, (last.status, last.code)]


async def _uninterrupted(tmp_path: Path, input: Any) -> tuple[list[Record], list[str]]:
    engine = Engine(MemoryJournal(), clock=FakeClock(), ids=CountingIds())
    effects = Effects(tmp_path / "baseline.log")
    engine.register(LEDGER, effects)
    await engine.run("ledger", "k", input)
    assert isinstance(engine.journal, MemoryJournal)
    return list(engine.journal.records), effects.calls


@pytest.mark.anyio
@pytest.mark.parametrize("input", [{}, {"charge_failures": 2}, {"notify_error": True}])
async def test_every_prefix_of_the_journal_resumes_to_the_same_end(
    tmp_path: Path, input: dict[str, Any]
) -> None:
    """A crash between any two appends leaves a prefix; recovery must finish it the same way."""
    records, _ = await _uninterrupted(tmp_path, input)
    for cut in range(1, len(records)):
        journal = MemoryJournal()
        for record in records[:cut]:
            await journal.append(record)
        effects = Effects(tmp_path / f"fx-{cut}.log")
        engine = Engine(journal, clock=FakeClock())
        engine.register(LEDGER, effects)
        report = await engine.recover()
        assert not report.refused
        run = journal.history("run-0001")
        assert run is not None and run.finished is not None
        planned_before = any(isinstance(r, EffectPlanned) for r in records[:cut])
        if planned_before:  # planned values are reused verbatim...
            assert _end(run.records) == _end(records), f"cut after record {cut}"
            assert run.plans() == {"token": records[2].value}  # type: ignore[union-attr]
        else:  # ...and decided anew only if the crash came before they were journaled
            assert _strip_tokens(_end(run.records)) == _strip_tokens(_end(records))
        # A step whose ok was journaled never runs again.
        done_before = {
            r.step for r in records[:cut] if isinstance(r, StepFinished) and r.outcome == "ok"
        }
        rerun = {call.split()[0] for call in effects.calls}
        assert not done_before & rerun, f"cut after record {cut}"


@pytest.mark.anyio
async def test_started_but_unfinished_step_runs_again_as_the_next_attempt(tmp_path: Path) -> None:
    records, _ = await _uninterrupted(tmp_path, {})
    cut = next(
        i for i, r in enumerate(records) if isinstance(r, StepStarted) and r.step == "charge"
    )
    journal = MemoryJournal()
    for record in records[: cut + 1]:
        await journal.append(record)
    engine = Engine(journal, clock=FakeClock())
    engine.register(LEDGER, Effects(tmp_path / "fx"))
    await engine.recover()
    run = journal.history("run-0001")
    assert run is not None
    charge_starts = [
        r.attempt for r in run.records if isinstance(r, StepStarted) and r.step == "charge"
    ]
    assert charge_starts == [1, 2]
    assert any(isinstance(r, RunResumed) for r in run.records)


@pytest.mark.anyio
async def test_changed_definition_is_refused_naming_both_versions(tmp_path: Path) -> None:
    records, _ = await _uninterrupted(tmp_path, {})
    journal = MemoryJournal()
    for record in records[:4]:
        await journal.append(record)
    changed = WorkflowSpec(
        "ledger",
        [
            State("reserve", charge, 1, on={"ok": "notify", "timeout": SUCCEED, "error": SUCCEED}),
            State("notify", notify, 1, on={"ok": SUCCEED, "timeout": SUCCEED, "error": SUCCEED}),
        ],
    )
    engine = Engine(journal, clock=FakeClock())
    engine.register(changed, Effects(tmp_path / "fx"))
    report = await engine.recover()
    assert not report.resumed
    assert len(report.refused) == 1
    assert LEDGER.fingerprint in report.refused[0] and changed.fingerprint in report.refused[0]
    assert journal.history("run-0001").finished is None  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_unregistered_workflow_is_refused(tmp_path: Path) -> None:
    records, _ = await _uninterrupted(tmp_path, {})
    journal = MemoryJournal()
    await journal.append(records[0])
    report = await Engine(journal).recover()
    assert "'ledger' is not registered" in report.refused[0]


@pytest.mark.anyio
async def test_a_new_run_on_a_key_first_finishes_its_interrupted_run(tmp_path: Path) -> None:
    records, _ = await _uninterrupted(tmp_path, {})
    journal = MemoryJournal()
    for record in records[:5]:
        await journal.append(record)
    engine = Engine(journal, clock=FakeClock(), ids=CountingIds("new-"))
    engine.register(LEDGER, Effects(tmp_path / "fx"))
    result = await engine.run("ledger", "k")
    old = journal.history("run-0001")
    assert old is not None and isinstance(old.records[-1], RunFinished)
    order = [r.run_id for r in journal.records if isinstance(r, RunFinished)]
    assert order == ["run-0001", result.run_id]


# -- real crashes: SIGKILL at every failpoint, in a child process --------------------------


def _child(
    mode: str, root: Path, *extra: str, crash_at: str | None = None, trace: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_CRASH")}
    if crash_at:
        env["ORCHESTRATOR_CRASH_AT"] = crash_at
    if trace:
        env["ORCHESTRATOR_CRASH_TRACE"] = str(trace)
    return subprocess.run(
        [sys.executable, "-m", "tests.crash_child", mode, str(root), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _normalized_effects(root: Path) -> list[str]:
    lines = Effects(root / "effects.log").lines()
    tokens = {line.split()[2] for line in lines if line.startswith("reserve")}
    assert len(tokens) <= 1, f"more than one planned token used: {lines}"
    token = tokens.pop() if tokens else None
    return [line.replace(token, "<token>") if token else line for line in lines]


async def _journal_records(root: Path) -> list[Record]:
    journal = await FileJournal.open(root / "journal")
    histories = list(journal.runs())
    assert len(histories) <= 1
    return histories[0].records if histories else []


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("input", ['{"charge_failures": 1}'])
async def test_kill_at_every_failpoint_then_recover_converges(tmp_path: Path, input: str) -> None:
    base = tmp_path / "base"
    trace = tmp_path / "trace.txt"
    done = _child("run", base, "k", input, trace=trace)
    assert done.returncode == 0, done.stderr
    points = trace.read_text().splitlines()
    baseline_effects = _normalized_effects(base)
    baseline = _end(await _journal_records(base))
    assert len(set(points)) >= 12, points

    arrivals: collections.Counter[str] = collections.Counter()
    for point in points:
        arrivals[point] += 1
        root = tmp_path / f"{point}#{arrivals[point]}"
        crashed = _child("run", root, "k", input, crash_at=f"{point}#{arrivals[point]}")
        assert crashed.returncode == -9, (point, crashed.stderr)
        before = await _journal_records(root)
        recovered = _child("recover", root)
        assert recovered.returncode == 0, (point, recovered.stderr)
        records = await _journal_records(root)
        if not before:  # killed before the run was journaled: nothing may have happened
            assert _normalized_effects(root) == [], point
            continue
        assert isinstance(records[-1], RunFinished), point
        assert _strip_tokens(_end(records)) == _strip_tokens(baseline), point
        token = next(r for (s, o, r) in _finished(records) if s == "reserve")["token"]
        assert f"reserve k {token}" in Effects(root / "effects.log").lines(), point
        assert _normalized_effects(root) == baseline_effects, point
        # Each completed step ran exactly once: one ok per state.
        oks = collections.Counter(s for (s, o, _) in _finished(records) if o == "ok")
        assert set(oks.values()) == {1}, (point, oks)
        # A step journaled finished before the crash never started again after it.
        finished_before = {
            r.step for r in before if isinstance(r, StepFinished) and r.outcome == "ok"
        }
        restarted = {r.step for r in records[len(before) :] if isinstance(r, StepStarted)}
        assert not finished_before & restarted, point
    print(
        f"\ncrash sweep: killed at {len(points)} arrivals of {len(set(points))} failpoints, "
        f"each recovered to the uninterrupted end: {', '.join(dict.fromkeys(points))}"
    )


def _strip_tokens(end: list[Any]) -> list[Any]:
    return [(s, None) if s == "reserve" else (s, r) for (s, r) in end]
