"""Campaign 1: crash anywhere, twice (reset and delete through the command line).

For each workflow, every failpoint an uninterrupted run reaches is a first kill point p1
(arrival-counted, ``point#n``). After each kill, ``orchestrator recover`` must converge to the
uninterrupted result; its trace lists the points reached *during recovery*, and each of those
is a second kill point p2. A pair (p1, p2) is: kill at p1, recover killed at p2, recover again,
converged. ``make soak`` runs every pair; CI runs a seeded sample (the seed is printed;
``ORCHESTRATOR_CAMPAIGN_SEED`` replays another).

The state right after the kill at p1 is copied once and put back (at the same path: the
journal names absolute paths) before each of its pairs, so a pair costs two processes.

Invariants after convergence: the store of an uninterrupted run (minted id, file and time
masked); one rotation (one commit plan, its id in the store and the new header, one new
transcript); the old transcript's bytes exactly once, under its archive name; one farewell
for the bound thread, from the run; no temporary or store lock files; one run in the journal,
finished and succeeded; nothing unexpected (every archive file present was journaled in a
plan before it was made); and nothing acknowledged lost (every record journaled before a
crash is still there, no step whose ``ok`` was journaled runs again, no value planned twice).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator import Record, RunFinished, RunStarted
from workflows.sessions.demo import seed_state

from .conftest import budget, report
from .crash_state import (
    ARCHIVE_SUFFIX,
    DELETE,
    RESET,
    Flow,
    acknowledged_kept,
    any_run_finished,
    cli,
    counted,
    files_of,
    fresh,
    journal_runs,
    leftovers,
    masked_names,
    normalized,
    planned,
    read_trace,
    restore,
    store_of,
)

SEED = int(os.environ.get("ORCHESTRATOR_CAMPAIGN_SEED", "1125"))
#: Pairs per workflow in CI (two workflows: 240 in all); every pair under ``make soak``.
CI_PAIRS = 120
#: Pairs run in parallel (each one waits on its child processes).
WORKERS = max(2, min(4, os.cpu_count() or 2))


@dataclass(frozen=True)
class Baseline:
    """What the uninterrupted run left, masked, and the points it reached."""

    store: dict[str, Any]
    names: list[str]
    bindings: bytes
    points: list[str]


@dataclass
class FirstKill:
    """A first kill point, the state it left (kept aside) and the points recovery reached."""

    at: str
    state: Path
    snapshot: Path
    after: dict[str, list[Record]] = field(default_factory=dict)
    recovery_points: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("template") / "state"
    state.mkdir()
    seed_state(state)
    return state


def uninterrupted(template: Path, where: Path, flow: Flow) -> Baseline:
    state = fresh(template, where)
    trace = where.parent / "baseline.trace"
    done = cli(state, *flow.argv, trace=trace)
    assert done.returncode == 0, done.stderr
    store = store_of(state, masked=True)
    new_id = store[flow.key]["sessionId"] if flow is RESET else None
    points = counted(read_trace(trace))
    plan = "plan.commit#1" if flow is RESET else "plan.deleted#1"
    assert {plan, "archive.renamed#1", "farewell.sent#1"} <= set(points), points
    return Baseline(
        store=normalized(store, flow.key) if flow is RESET else store,
        names=masked_names(files_of(state), new_id),
        bindings=(state / "bindings" / "thread-bindings.json").read_bytes(),
        points=points,
    )


def ask_again_if_never_journaled(state: Path, template: Path, flow: Flow) -> None:
    """A kill before the run reached the journal changed nothing: the caller asks again."""
    if any_run_finished(journal_runs(state)):
        return
    unchanged = files_of(state) == files_of(template)
    assert unchanged, "a run that never reached the journal changed files"
    again = cli(state, *flow.argv)
    assert again.returncode == 0, f"asked again: {again.stderr}"


def check_converged(state: Path, template: Path, flow: Flow, baseline: Baseline) -> None:
    """Every invariant of an uninterrupted run, on ``state`` after recovery."""
    runs = journal_runs(state)
    assert len(runs) == 1, f"expected one run in the journal, found {sorted(runs)}"
    ((run_id, records),) = runs.items()
    started, finished = records[0], records[-1]
    assert isinstance(started, RunStarted)
    assert (started.workflow, started.key) == (flow.workflow, flow.key), started
    assert isinstance(finished, RunFinished), f"run {run_id} never finished"
    assert finished.status == "succeeded", finished

    original = store_of(template, masked=True)[flow.key]
    old_name = Path(original["sessionFile"]).name
    before = files_of(template)
    old_bytes = before[old_name]
    store = store_of(state, masked=True)
    files = files_of(state)

    if flow is RESET:
        assert normalized(store, flow.key) == baseline.store, "store differs from uninterrupted"
        new_id = store[flow.key]["sessionId"]
        commits = planned(runs, "commit")
        assert [c["new_session_id"] for c in commits] == [new_id], ("rotations", commits, new_id)
        lines = files[Path(store[flow.key]["sessionFile"]).name].splitlines()
        header = orjson.loads(lines[0])
        assert len(lines) == 1 and (header["type"], header["id"]) == ("session", new_id), lines
        moves = commits[0]["archive"]
    else:
        assert store == baseline.store, "store differs from uninterrupted"
        new_id = None
        deleted = planned(runs, "deleted")
        assert [d["session_id"] for d in deleted] == [original["sessionId"]], deleted
        plans = planned(runs, "archive")
        assert len(plans) == 1, plans
        moves = plans[0]["moves"]

    # One rotation, one archive, no stray file: the same names as the uninterrupted run.
    assert masked_names(files, new_id) == baseline.names, sorted(files)
    holders = [name for name, data in files.items() if data == old_bytes]
    assert len(holders) == 1, f"old transcript bytes held by {holders}"
    assert holders[0].startswith(f"{old_name}.{flow.reason}."), holders
    # Nothing unexpected: every archive present was a journaled move.
    journaled = {Path(dst).name for _src, dst in moves}
    archives = {name for name in files if ARCHIVE_SUFFIX.search(name)}
    assert archives <= journaled, f"archives {archives} not all journaled ({journaled})"
    for name, data in before.items():
        if name not in (old_name, "sessions.json"):
            assert files.get(name) == data, f"{name} changed"

    bindings = state / "bindings"
    assert (bindings / "thread-bindings.json").read_bytes() == baseline.bindings
    lines = (bindings / "farewells.jsonl").read_bytes().splitlines()
    farewells = [orjson.loads(line) for line in lines]
    sent = [(f["threadId"], f["farewellId"]) for f in farewells]
    assert sent == [(flow.thread, run_id)], f"farewells {sent}"
    assert not leftovers(state), leftovers(state)


def attempt(failures: list[str], label: str, check: Callable[[], None]) -> bool:
    """Run ``check``; record why it failed under ``label`` instead of stopping the campaign."""
    try:
        check()
    except Exception as exc:  # AssertionError, or a reading the state could not survive
        failures.append(f"{label}: {type(exc).__name__}: {exc}"[:2000])
        return False
    return True


def campaign(template: Path, tmp_path: Path, flow: Flow) -> None:
    began = time.monotonic()
    baseline = uninterrupted(template, tmp_path / "baseline" / "state", flow)
    failures: list[str] = []

    def first(index: int, at: str) -> FirstKill:
        base = tmp_path / f"p1-{index:03d}"
        kill = FirstKill(at, base / "state", base / "snapshot")

        def run() -> None:
            fresh(template, kill.state)
            crashed = cli(kill.state, *flow.argv, crash_at=at)
            assert crashed.returncode == -9, (crashed.returncode, crashed.stderr)
            shutil.copytree(kill.state, kill.snapshot, symlinks=True)
            kill.after = journal_runs(kill.state)
            trace = base / "recover.trace"
            recovered = cli(kill.state, "recover", "--json", trace=trace)
            kill.recovery_points = counted(read_trace(trace))
            assert recovered.returncode == 0, recovered.stderr
            ask_again_if_never_journaled(kill.state, template, flow)
            check_converged(kill.state, template, flow, baseline)
            lost = acknowledged_kept(kill.after, journal_runs(kill.state))
            assert not lost, lost

        attempt(failures, f"{flow.name} kill {at} then recover", run)
        return kill

    with ThreadPoolExecutor(WORKERS) as pool:
        kills = list(pool.map(first, range(len(baseline.points)), baseline.points))
    single_failures = len(failures)

    pairs = [(kill, p2) for kill in kills for p2 in kill.recovery_points]
    limit = budget(CI_PAIRS, len(pairs))
    rng = random.Random(f"{SEED}:{flow.name}")
    chosen = pairs if limit >= len(pairs) else rng.sample(pairs, limit)
    by_first: dict[str, list[str]] = {}
    for kill, p2 in chosen:
        by_first.setdefault(kill.at, []).append(p2)

    def second(kill: FirstKill) -> None:
        for p2 in by_first.get(kill.at, []):

            def run(p2: str = p2) -> None:
                restore(kill.snapshot, kill.state)
                crashed = cli(kill.state, "recover", crash_at=p2)
                assert crashed.returncode == -9, f"not killed at {p2}: {crashed.returncode}"
                after = journal_runs(kill.state)
                recovered = cli(kill.state, "recover")
                assert recovered.returncode == 0, recovered.stderr
                ask_again_if_never_journaled(kill.state, template, flow)
                check_converged(kill.state, template, flow, baseline)
                final = journal_runs(kill.state)
                for earlier in (kill.after, after):
                    lost = acknowledged_kept(earlier, final)
                    assert not lost, lost

            attempt(failures, f"{flow.name} kill {kill.at}, recovery killed at {p2}", run)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(second, [k for k in kills if k.at in by_first]))

    report(
        f"crash twice: {flow.name}",
        seed=SEED,
        first_kill_points=len(kills),
        distinct_points=len({p.split("#")[0] for p in baseline.points}),
        single_crashes_converged=len(kills) - single_failures,
        recovery_kill_points=len(pairs),
        pairs_run=len(chosen),
        pairs_converged=len(chosen) - (len(failures) - single_failures),
        seconds=round(time.monotonic() - began, 1),
    )
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])


@pytest.mark.slow
@pytest.mark.parametrize("flow", [RESET, DELETE], ids=lambda f: f.name)
def test_crash_anywhere_twice(template: Path, tmp_path: Path, flow: Flow) -> None:
    campaign(template, tmp_path, flow)
