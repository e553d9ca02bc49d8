"""The command line on a shared PostgreSQL journal: bad input, and submit served by a worker.

Needs a PostgreSQL server (``tests/pg.py``); skipped, with the reason, without one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import orjson
import psycopg
import pytest

from orchestrator import RunStarted
from orchestrator._journal.postgres import PostgresJournal
from tests.campaigns.crash_state import ROOT
from tests.pg import fresh_schema, pg_url
from workflows.sessions.demo import seed_state


def cli(
    *argv: str, schema: str = "unused", extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``orchestrator ARGV`` in a child, with only the ORCHESTRATOR_ variables given here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env.update(extra or {}, ORCHESTRATOR_PG_SCHEMA=schema)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def shared() -> Iterator[tuple[str, str]]:
    with fresh_schema("cli") as found:
        yield found


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchestrator: error: "), result.stderr
    return lines[0]


def test_a_refused_connection_is_one_line_exit_2_without_the_password() -> None:
    pg_url()  # the rest of the suite's server, to be sure port 1 is the only problem
    line = one_line_error(
        cli("recover", "--journal", "postgresql://postgres:s3cret@127.0.0.1:1/test")
    )
    assert "127.0.0.1:1" in line and "Connection refused" in line
    assert "s3cret" not in line


def test_not_a_postgres_url_and_a_bad_schema_name_are_usage_errors() -> None:
    assert "expected postgresql://" in one_line_error(
        cli("runs", "list", "--journal", "mysql://root@localhost/db")
    )
    url = pg_url()
    assert "schema name 'Bad-Name'" in one_line_error(
        cli("recover", "--journal", url, schema="Bad-Name")
    )


def test_a_schema_of_a_newer_version_is_refused_and_left_alone(shared: tuple[str, str]) -> None:
    url, schema = shared
    assert cli("recover", "--journal", url, schema=schema).returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.schema_version SET version = 99")
    line = one_line_error(cli("recover", "--journal", url, schema=schema))
    assert "version 99" in line and "newer" in line and "upgrade orchestrator" in line
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT version FROM {schema}.schema_version").fetchone()
    assert row == (99,)


def test_worker_and_submit_need_a_shared_journal() -> None:
    assert "needs a shared journal" in one_line_error(cli("worker"))
    assert "needs a shared journal" in one_line_error(cli("submit", "session_reset", "main"))


def test_submit_is_served_by_a_worker_and_is_idempotent_by_run_id(
    shared: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = shared
    state = tmp_path / "state"
    seed_state(state)
    key = "agent:main:main"
    run_input = orjson.dumps({"key": key, "canonical": key, "agent": "main"}).decode()
    submit = ("submit", "session_reset", key, "--input", run_input, "--run-id", "req-1")
    for _ in range(2):  # queued twice: one request
        queued = cli(*submit, "--no-wait", "--json", "--journal", url, schema=schema)
        assert queued.returncode == 0, queued.stderr
    assert [orjson.loads(queued.stdout)] == [{"run_id": "req-1", "queued": False}]
    served = cli(
        "worker",
        "--exit-when-idle",
        "--json",
        "--state-dir",
        str(state),
        "--journal",
        url,
        schema=schema,
    )
    assert served.returncode == 0, served.stderr
    events = [orjson.loads(line) for line in served.stdout.splitlines()]
    assert [e["event"] for e in events] == ["started", "served", "stopped"]
    assert events[1]["run_id"] == "req-1" and events[1]["status"] == "succeeded"
    # Submitted again after it ran: nothing is queued, the run's result comes back at once.
    again = cli(*submit, "--json", "--journal", url, schema=schema)
    assert again.returncode == 0, again.stderr
    reply = orjson.loads(again.stdout)
    assert reply["run_id"] == "req-1" and reply["status"] == "succeeded"
    with psycopg.connect(url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.requests").fetchone() == (0,)
    shown = cli("runs", "list", "--json", "--journal", url, schema=schema)
    assert [r["run_id"] for r in orjson.loads(shown.stdout)] == ["req-1"]


def test_recover_resumes_a_dead_hosts_run_once_its_lease_expired(
    shared: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = shared
    state = tmp_path / "state"
    seed_state(state)
    killed = cli(
        *("reset", "main", "--state-dir", str(state), "--journal", url),
        schema=schema,
        extra={"ORCHESTRATOR_CRASH_AT": "archive.started"},
    )
    assert killed.returncode == -9, killed.stderr
    # Its lease is still live: the run is the (dead, for all we know only slow) host's.
    early = cli("recover", "--json", "--state-dir", str(state), "--journal", url, schema=schema)
    assert early.returncode == 0 and orjson.loads(early.stdout)["resumed"] == []
    with psycopg.connect(url, autocommit=True) as conn:  # time passes: the lease runs out
        conn.execute(f"UPDATE {schema}.leases SET expires_at = now() - interval '1 second'")
    late = cli("recover", "--json", "--state-dir", str(state), "--journal", url, schema=schema)
    assert late.returncode == 0, late.stderr
    (resumed,) = orjson.loads(late.stdout)["resumed"]
    assert resumed["status"] == "succeeded" and resumed["key"] == "agent:main:main"
    again = cli("recover", "--json", "--state-dir", str(state), "--journal", url, schema=schema)
    assert orjson.loads(again.stdout)["resumed"] == []


def plant_unresumable_run(url: str, schema: str, key: str) -> None:
    """A dead host's run of ``session_reset`` under another definition (fingerprint): no
    worker of this release may resume it. Its key is left without a lease."""

    async def plant() -> None:
        journal = await PostgresJournal.open(url, schema=schema)
        try:
            async with journal.lock_key(key):
                await journal.append(
                    RunStarted(
                        run_id="old",
                        seq=0,
                        at=1.0,
                        workflow="session_reset",
                        fingerprint="0" * 64,
                        key=key,
                    ),
                    durable=True,
                )
        finally:
            await journal.aclose()

    anyio.run(plant)


def test_a_run_no_worker_can_resume_is_parked_and_its_keys_request_dropped(
    shared: tuple[str, str], tmp_path: Path
) -> None:
    """The worker reports the refused run once and does not claim it again (an idle worker
    exits); a request on its key is dropped, and its submitter told why (exit 2)."""
    url, schema = shared
    state = tmp_path / "state"
    seed_state(state)
    key = "agent:main:main"
    plant_unresumable_run(url, schema, key)
    run_input = orjson.dumps({"key": key, "canonical": key, "agent": "main"}).decode()
    submit = ("submit", "session_reset", key, "--input", run_input, "--run-id", "req-2")
    assert cli(*submit, "--no-wait", "--journal", url, schema=schema).returncode == 0
    served = cli(
        *("worker", "--exit-when-idle", "--json", "--state-dir", str(state), "--journal", url),
        schema=schema,
    )
    assert served.returncode == 0, served.stderr
    events = [orjson.loads(line) for line in served.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert sorted(kinds) == ["dropped", "parked", "refused", "started", "stopped"], kinds
    dropped = next(e for e in events if e["event"] == "dropped")
    assert dropped["run_id"] == "req-2" and "old" in dropped["reason"]
    told = one_line_error(cli(*submit, "--journal", url, schema=schema))
    assert "run req-2 was not started" in told and "old" in told
    # recover on the shared journal tries the key once, reports it, and returns.
    recovered = cli("recover", "--json", "--state-dir", str(state), "--journal", url, schema=schema)
    report = orjson.loads(recovered.stdout)
    assert report["resumed"] == [] and len(report["refused"]) == 1, recovered.stderr
