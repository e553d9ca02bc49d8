"""Several hosts on one PostgreSQL journal, as separate processes (issue 7).

- two hosts asked to reset one session with the same run id rotate it once;
- three workers: one is SIGKILLed mid-reset, the other two finish its runs, each effect once;
- a worker frozen mid-run (SIGSTOP at a failpoint: a partition) loses its lease; another
  finishes the run; once thawed, the frozen worker is fenced off: it writes nothing more.

The workers share one state directory (the session store and transcripts), as hosts on one
shared file system would. Needs a PostgreSQL server (skipped, with the reason, without one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import psycopg
import pytest

from orchestrator import EffectPlanned, Record, RunFinished, RunResumed, atomic_write
from orchestrator._journal.postgres import PostgresJournal, Request
from tests.campaigns.crash_state import ROOT, SESSIONS, files_of, store_of
from tests.pg import fresh_schema
from workflows.sessions.demo import _session, seed_state

pytestmark = pytest.mark.slow

LEASE = "1"


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with fresh_schema("shared") as found:
        yield found


def seed(state: Path, count: int) -> list[str]:
    """The demo's store plus ``count`` more sessions; their keys."""
    seed_state(state)
    sessions = state / SESSIONS
    store = orjson.loads((sessions / "sessions.json").read_bytes())
    keys = [f"agent:main:worker:{i}" for i in range(count)]
    for i, key in enumerate(keys):
        store[key] = _session(sessions, f"w{i}", 10 + i)
    atomic_write(sessions / "sessions.json", orjson.dumps(store, option=orjson.OPT_INDENT_2))
    return keys


def env_for(url: str, schema: str, backend: str = "asyncio", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env.update(
        ORCHESTRATOR_JOURNAL=url,
        ORCHESTRATOR_PG_SCHEMA=schema,
        ORCHESTRATOR_BACKEND=backend,
        **extra,
    )
    return env


def worker(state: Path, env: dict[str, str], concurrency: int = 4) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "worker",
            "--json",
            "--state-dir",
            str(state),
            "--lease",
            LEASE,
            "--poll",
            "0.05",
            "--concurrency",
            str(concurrency),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], str]:
    """SIGTERM a worker (it drains and exits 0); its JSON events and stderr."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return events(out), err


def events(out: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def queue(url: str, schema: str, keys: list[str]) -> list[str]:
    """Submit one reset per key (run id ``r-<i>``), as ``orchestrator submit`` does."""

    async def go() -> None:
        journal = await PostgresJournal.open(url, schema=schema)
        try:
            for i, key in enumerate(keys):
                run_input = {"key": key, "canonical": key, "agent": "main", "reason": "reset"}
                await journal.submit(Request(f"r-{i}", "session_reset", key, run_input, "test"))
        finally:
            await journal.aclose()

    anyio.run(go)
    return [f"r-{i}" for i in range(len(keys))]


def wait_until(check: Any, what: str, timeout: float = 60.0) -> None:
    """Poll a database condition (the processes under test give no other signal)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def scalar(url: str, sql: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


def all_done(url: str, schema: str, count: int) -> bool:
    finished = scalar(url, f"SELECT count(*) FROM {schema}.runs WHERE finished")
    queued = scalar(url, f"SELECT count(*) FROM {schema}.requests")
    return bool(finished == count and queued == 0)


def runs_of(url: str, schema: str) -> dict[str, list[Record]]:
    async def go() -> dict[str, list[Record]]:
        journal = await PostgresJournal.open(url, schema=schema)
        try:
            await journal.load_all()
            return {h.run_id: list(h.records) for h in journal.runs()}
        finally:
            await journal.aclose()

    return anyio.run(go)


def stopped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "T"


def check_rotated_once(state: Path, originals: dict[str, Any], keys: list[str]) -> None:
    """Each key: a new session id, its old transcript's bytes kept exactly once (archived)."""
    store = store_of(state)
    files = files_of(state)
    for key in keys:
        old = originals[key]
        assert store[key]["sessionId"] != old["sessionId"], key
        archived = [n for n in files if n.startswith(f"{old['sessionId']}.jsonl.reset.")]
        assert len(archived) == 1, (key, archived)
    new_ids = [store[key]["sessionId"] for key in keys]
    assert len(set(new_ids)) == len(keys)


def test_one_run_id_asked_of_two_hosts_rotates_once(
    shared: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = shared
    state = tmp_path / "state"
    seed_state(state)
    original = store_of(state)["agent:main:main"]
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "orchestrator", "reset", "main"),
                *("--run-id", "rotate-1", "--json", "--state-dir", str(state)),
            ],
            cwd=ROOT,
            env=env_for(url, schema),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    replies = [orjson.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(r["ok"] for r in replies), replies
    assert replies[0] == replies[1]  # the same run, the same new session
    check_rotated_once(state, {"agent:main:main": original}, ["agent:main:main"])
    runs = runs_of(url, schema)
    assert list(runs) == ["rotate-1"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_killed_workers_runs_are_finished_by_the_others_each_effect_once(
    shared: tuple[str, str], tmp_path: Path, backend: str
) -> None:
    url, schema = shared
    state = tmp_path / "state"
    keys = seed(state, 12)
    originals = store_of(state)
    run_ids = queue(url, schema, keys)
    # Worker 1 takes four resets at once and SIGKILLs itself when the second reaches the
    # archive step: runs are left between their store commit and their archive.
    doomed = worker(state, env_for(url, schema, backend, ORCHESTRATOR_CRASH_AT="archive.started#2"))
    out, err = doomed.communicate(timeout=60)
    assert doomed.returncode == -signal.SIGKILL, err
    dead_owner = events(out)[0]["worker"]
    interrupted = [r for r, recs in runs_of(url, schema).items() if not _finished(recs)]
    assert interrupted, "the kill left no run unfinished: nothing was taken over"

    others = [worker(state, env_for(url, schema, backend)) for _ in range(2)]
    wait_until(lambda: all_done(url, schema, len(keys)), "all runs finished")
    seen = [stop(proc)[0] for proc in others]

    runs = runs_of(url, schema)
    assert sorted(runs) == sorted(run_ids)
    for run_id, records in runs.items():
        assert [r.seq for r in records] == list(range(len(records)))
        end = records[-1]
        assert isinstance(end, RunFinished) and end.status == "succeeded", (run_id, end)
        commits = [r for r in records if isinstance(r, EffectPlanned) and r.name == "commit"]
        assert len(commits) == 1, run_id
    for run_id in interrupted:
        resumes = [r for r in runs[run_id] if isinstance(r, RunResumed)]
        assert resumes and all(dead_owner not in r.requested_by for r in resumes), run_id
    resumed_events = [e for evs in seen for e in evs if e["event"] == "resumed"]
    assert {e["run_id"] for e in resumed_events} >= set(interrupted)
    check_rotated_once(state, originals, keys)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_frozen_worker_is_fenced_off_after_another_took_its_run_over(
    shared: tuple[str, str], tmp_path: Path, backend: str
) -> None:
    url, schema = shared
    state = tmp_path / "state"
    keys = seed(state, 1)
    originals = store_of(state)
    (run_id,) = queue(url, schema, keys)
    # Frozen after its store commit (journaled durably), before the archive step.
    frozen = worker(
        state,
        env_for(url, schema, backend, ORCHESTRATOR_PAUSE_AT="archive.started"),
        concurrency=1,
    )
    try:
        wait_until(lambda: stopped(frozen.pid), "the worker to freeze")
        taker = worker(state, env_for(url, schema, backend))
        wait_until(lambda: all_done(url, schema, 1), "the run finished by the other worker")
        taken = stop(taker)[0]
        before = runs_of(url, schema)[run_id]
    finally:
        frozen.send_signal(signal.SIGCONT)
    # Thawed: it goes on with the run it believes it owns, and is refused at its next write.
    wait_until(lambda: scalar(url, "SELECT 1") == 1, "the database")
    out, err = stop_after_lost(frozen)
    lost = [e for e in out if e["event"] == "lost"]
    assert lost and run_id in lost[0]["reason"], (out, err)
    after = runs_of(url, schema)[run_id]
    assert after == before  # not one record written after the takeover
    assert any(e["event"] == "resumed" and e["run_id"] == run_id for e in taken)
    check_rotated_once(state, originals, keys)


def stop_after_lost(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], str]:
    """Read a thawed worker's events until it reports the lost lease, then stop it."""
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(orjson.loads(line))
        if seen[-1]["event"] == "lost":
            break
    rest, err = stop(proc)
    return seen + rest, err


def _finished(records: list[Record]) -> bool:
    return bool(records) and isinstance(records[-1], RunFinished)
