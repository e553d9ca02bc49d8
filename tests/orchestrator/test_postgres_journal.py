"""What only the PostgreSQL journal does: leases and fencing, claiming the keys of dead
hosts, its schema and its migrations, and refusing bad URLs, names and users.

Leases are expired by updating their row, never by waiting for them to run out. The shared
contract (append, history, lock_key, ...) is in ``test_journal_contract.py``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from orchestrator import RunFinished, RunStarted, StepStarted
from orchestrator.errors import JournalUnavailable, KeyBusy, LeaseLost, UsageError
from tests.pg import fresh_schema, pg_url

pytestmark = pytest.mark.anyio


# -- helpers ----------------------------------------------------------------------------------


def sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own (autocommit); its rows, if any."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def expire(url: str, schema: str, key: str) -> None:
    """Make ``key``'s lease run out now, as if its holder had stopped renewing it."""
    sql(
        url,
        f"UPDATE {schema}.leases SET expires_at = now() - interval '1 s' WHERE key = %s",
        (key,),
    )


def lease_owner(url: str, schema: str, key: str) -> str | None:
    rows = sql(url, f"SELECT owner FROM {schema}.leases WHERE key = %s", (key,))
    return rows[0][0] if rows else None


def seqs_in_db(url: str, schema: str, run_id: str) -> list[int]:
    rows = sql(url, f"SELECT seq FROM {schema}.records WHERE run_id = %s ORDER BY seq", (run_id,))
    return [seq for (seq,) in rows]


def schema_exists(url: str, schema: str) -> bool:
    return bool(sql(url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)))


def started(run_id: str, key: str, at: float = 1.0) -> RunStarted:
    return RunStarted(run_id=run_id, seq=0, at=at, workflow="w", fingerprint="f", key=key)


def step(run_id: str, seq: int) -> StepStarted:
    return StepStarted(run_id=run_id, seq=seq, at=1.0 + seq, step=f"s{seq}", attempt=1)


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, checked every 20 ms for up to 5 s: for what a timer drives (the
    heartbeat), where no event can be awaited."""
    for _ in range(250):
        if condition():
            return
        await anyio.sleep(0.02)
    pytest.fail("the condition did not become true within 5 s")


@asynccontextmanager
async def opened(url: str, schema: str, **options: Any) -> AsyncIterator[Any]:
    from orchestrator._journal.postgres import PostgresJournal

    journal = await PostgresJournal.open(url, schema=schema, **options)
    try:
        yield journal
    finally:
        await journal.aclose()


async def write_open_run(journal: Any, run_id: str, key: str, at: float) -> None:
    """An unfinished run of ``key``, its key released afterwards (no lease left)."""
    async with journal.lock_key(key):
        await journal.append(started(run_id, key, at), durable=True)


# -- leases and fencing -----------------------------------------------------------------------


async def test_takeover_after_expiry_fences_the_old_holder(anyio_backend: str) -> None:
    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema) as a, opened(url, schema, lock_timeout=5) as b:
            a_inside, release_a, a_left = anyio.Event(), anyio.Event(), anyio.Event()

            async def hold_a() -> None:  # a host that stops renewing, then wakes up
                async with a.lock_key("k"):
                    await a.append(started("r", "k"), durable=True)
                    a_inside.set()
                    await release_a.wait()
                a_left.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(hold_a)
                await a_inside.wait()
                expire(url, schema, "k")
                async with b.lock_key("k"):
                    assert [h.run_id for h in b.unfinished("k")] == ["r"]
                    assert lease_owner(url, schema, "k") == b.owner

                    with pytest.raises(LeaseLost) as lost:
                        await a.append(step("r", 1), durable=True)
                    assert (lost.value.run_id, lost.value.key) == ("r", "k")
                    assert seqs_in_db(url, schema, "r") == [0]
                    with pytest.raises(LeaseLost):  # never writes again, durable or not
                        await a.append(step("r", 1))
                    assert not a.holds("k")

                    await b.append(step("r", 1), durable=True)
                    release_a.set()
                    await a_left.wait()  # a leaving the key must not free b's lease
                    assert lease_owner(url, schema, "k") == b.owner
                    await b.append(step("r", 2), durable=True)
            assert seqs_in_db(url, schema, "r") == [0, 1, 2]


async def test_an_expired_lease_fences_writes_before_any_takeover(anyio_backend: str) -> None:
    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema) as a, a.lock_key("k"):
            await a.append(started("r", "k"), durable=True)
            await a.append(step("r", 1))
            expire(url, schema, "k")
            with pytest.raises(LeaseLost):
                await a.append(step("r", 2), durable=True)
            assert seqs_in_db(url, schema, "r") == [0]


async def test_a_live_lease_keeps_other_hosts_out(anyio_backend: str) -> None:
    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema) as a, opened(url, schema, lock_timeout=0.05) as b:
            async with a.lock_key("k"):
                with pytest.raises(KeyBusy) as busy:
                    async with b.lock_key("k"):
                        pytest.fail("took a key whose lease is live")
                assert busy.value.holder == a.owner
                assert a.owner in str(busy.value)
            with pytest.raises(LeaseLost):  # nor can b write for a key it does not hold
                await b.append(started("r", "k"), durable=True)


async def test_leaving_lock_key_releases_the_lease(anyio_backend: str) -> None:
    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema) as a, opened(url, schema, lock_timeout=0.05) as b:
            async with a.lock_key("k"):
                assert lease_owner(url, schema, "k") == a.owner
            assert lease_owner(url, schema, "k") is None
            with pytest.raises(RuntimeError, match="boom"):
                async with a.lock_key("k"):
                    raise RuntimeError("boom")
            assert lease_owner(url, schema, "k") is None
            async with b.lock_key("k"):  # at once, no waiting for an expiry
                assert b.holds("k")


async def test_the_heartbeat_renews_a_held_lease_and_stops_the_run_losing_it(
    anyio_backend: str,
) -> None:
    """Renewed every third of the lease; once a renewal finds the lease gone, the body of
    lock_key (a run's step, its effects) is cancelled and lock_key raises LeaseLost."""
    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema, lease=0.3) as a:
            with pytest.raises(LeaseLost, match="expired") as lost:
                async with a.lock_key("k"):
                    query = f"SELECT expires_at FROM {schema}.leases WHERE key = %s"
                    (first,) = sql(url, query, ("k",))[0]
                    await eventually(lambda: sql(url, query, ("k",))[0][0] != first)
                    await a.append(started("r", "k"), durable=True)
                    expire(url, schema, "k")
                    with anyio.fail_after(5):
                        await anyio.sleep_forever()  # a step still running
            assert (lost.value.run_id, lost.value.key) == ("r", "k")
            assert not a.holds("k")
            with pytest.raises(LeaseLost):
                await a.append(step("r", 1))
            assert seqs_in_db(url, schema, "r") == [0]


# -- claiming the keys of dead hosts ----------------------------------------------------------


async def test_claim_expired_takes_keys_of_unfinished_runs_oldest_first(
    anyio_backend: str,
) -> None:
    with fresh_schema("pgj") as (url, schema):
        async with (
            opened(url, schema) as a,
            opened(url, schema) as b,
            opened(url, schema, lock_timeout=0.05) as c,
        ):
            await write_open_run(a, "free", "free", at=1.0)  # lease released
            await write_open_run(a, "dead", "dead", at=2.0)
            sql(
                url,
                f"INSERT INTO {schema}.leases (key, owner, token, expires_at) "
                "VALUES ('dead', 'a dead host', 0, now() - interval '1 s')",
            )
            async with a.lock_key("done"):
                await a.append(started("done", "done", 0.5))
                await a.append(
                    RunFinished(run_id="done", seq=1, at=1.5, status="succeeded"), durable=True
                )
            async with a.lock_key("live"):  # a live host's key is never claimed
                await a.append(started("live", "live", 0.1), durable=True)
                assert await b.claim_expired(1) == ["free"]
                assert await b.claim_expired(10) == ["dead"]
                assert await b.claim_expired(10) == []
            assert lease_owner(url, schema, "dead") == b.owner

            with pytest.raises(KeyBusy):  # b's claim holds the key
                async with c.lock_key("free"):
                    pass
            async with b.lock_key("free"):  # adopts the claimed lease
                assert [h.run_id for h in b.unfinished("free")] == ["free"]
                await b.append(step("free", 1), durable=True)
            assert seqs_in_db(url, schema, "free") == [0, 1]


async def test_concurrent_claimers_never_get_the_same_key(anyio_backend: str) -> None:
    keys = [f"key-{n:02d}" for n in range(12)]
    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema) as a, opened(url, schema) as b, opened(url, schema) as c:
            async with AsyncExitStack() as holding:
                for n, key in enumerate(keys):
                    await holding.enter_async_context(a.lock_key(key))
                    await a.append(started(f"run-{n}", key, at=float(n)))
                await a.sync()
            claims: dict[str, list[str]] = {"b": [], "c": []}

            async def claim(name: str, journal: Any) -> None:
                while found := await journal.claim_expired(2):
                    claims[name].extend(found)

            async with anyio.create_task_group() as tg:
                tg.start_soon(claim, "b", b)
                tg.start_soon(claim, "c", c)
            assert not set(claims["b"]) & set(claims["c"])
            assert sorted(claims["b"] + claims["c"]) == keys


# -- the schema -------------------------------------------------------------------------------


async def test_migrations_run_once(anyio_backend: str) -> None:
    from orchestrator._journal.pg_schema import SCHEMA_VERSION

    with fresh_schema("pgj") as (url, schema):

        async def open_and_close() -> None:
            async with opened(url, schema):
                pass

        async with anyio.create_task_group() as tg:  # two hosts starting at once
            tg.start_soon(open_and_close)
            tg.start_soon(open_and_close)
        await open_and_close()
        assert sql(url, f"SELECT version FROM {schema}.schema_version") == [(SCHEMA_VERSION,)]
        tables = sql(
            url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "ORDER BY table_name",
            (schema,),
        )
        assert [name for (name,) in tables] == [
            "leases",
            "records",
            "requests",
            "runs",
            "schema_version",
        ]


async def test_a_schema_of_the_first_release_is_migrated_keeping_its_runs(
    anyio_backend: str,
) -> None:
    """A schema at version 1 (as the first release left it, with a run in it) is brought
    to the current version; its records stay."""
    from orchestrator._journal.pg_schema import SCHEMA_VERSION, migration_sql

    with fresh_schema("pgj") as (url, schema):
        sql(url, f"CREATE SCHEMA {schema}")
        sql(url, migration_sql(f'"{schema}"', 0))
        sql(url, f"CREATE TABLE {schema}.schema_version (version integer NOT NULL)")
        sql(url, f"INSERT INTO {schema}.schema_version VALUES (1)")
        sql(url, f"INSERT INTO {schema}.records (run_id, seq, body) VALUES ('old', 0, 'x')")
        async with opened(url, schema):
            pass
        assert sql(url, f"SELECT version FROM {schema}.schema_version") == [(SCHEMA_VERSION,)]
        assert sql(url, f"SELECT run_id FROM {schema}.records") == [("old",)]
        columns = sql(
            url,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'requests'",
            (schema,),
        )
        assert ("dropped",) in columns


async def test_a_newer_schema_is_refused_untouched(anyio_backend: str) -> None:
    from orchestrator._journal.pg_schema import SCHEMA_VERSION

    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema):
            pass
        sql(url, f"UPDATE {schema}.schema_version SET version = %s", (SCHEMA_VERSION + 1,))
        with pytest.raises(JournalUnavailable, match="newer"):
            async with opened(url, schema):
                pass
        assert sql(url, f"SELECT version FROM {schema}.schema_version") == [(SCHEMA_VERSION + 1,)]


async def test_a_missing_schema_is_not_created_when_told_not_to(anyio_backend: str) -> None:
    with fresh_schema("pgj") as (url, schema):
        with pytest.raises(JournalUnavailable, match="does not exist"):
            async with opened(url, schema, create=False):
                pass
        assert not schema_exists(url, schema)


# -- refusals ---------------------------------------------------------------------------------


async def test_an_unreachable_server_names_host_and_port_but_not_the_password(
    anyio_backend: str,
) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(JournalUnavailable) as refused:
        async with opened("postgresql://postgres:s3cret-pw@127.0.0.1:1/test", "orchestrator"):
            pass
    message = str(refused.value)
    assert "127.0.0.1:1" in message
    assert "s3cret-pw" not in message


@pytest.mark.parametrize(
    "url", ["mysql://user@host/db", "sqlite:///tmp/journal.db", "/var/lib/journal", ""]
)
async def test_a_url_that_is_not_postgres_is_a_usage_error(anyio_backend: str, url: str) -> None:
    with pytest.raises(UsageError, match="postgresql://"):
        async with opened(url, "orchestrator"):
            pass


async def test_a_malformed_postgres_url_is_a_usage_error(anyio_backend: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(UsageError):
        async with opened("postgresql://user@host/db?no_such_option=1", "orchestrator"):
            pass


@pytest.mark.parametrize(
    "schema",
    [
        "Orchestrator",
        "1st",
        "has-dash",
        'x"; DROP SCHEMA public; --',
        "",
        "a" * 64,
        "pg_journal",
    ],
)
async def test_a_bad_schema_name_is_a_usage_error(anyio_backend: str, schema: str) -> None:
    url = pg_url()
    with pytest.raises(UsageError, match="schema name"):
        async with opened(url, schema):
            pass


@contextmanager
def role_without_create(prefix: str) -> Iterator[tuple[str, str, str]]:
    """``(url, schema, role_url)``: a fresh schema name and a new login role that may not
    create schemas (skipped where the server lets it); the role is dropped afterwards."""
    role = f"{prefix}_{secrets.token_hex(4)}"
    with fresh_schema("pgj") as (url, schema):
        parts = urlsplit(url)
        role_url = parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}").geturl()
        sql(url, f"CREATE ROLE {role} LOGIN")
        try:
            reason = _why_untestable(role_url)
            if reason:
                pytest.skip(reason)
            yield url, schema, role_url
        finally:
            sql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            sql(
                url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            sql(url, f"DROP ROLE IF EXISTS {role}")


async def test_a_user_who_cannot_create_gets_journal_unavailable(anyio_backend: str) -> None:
    with role_without_create("orch_nocreate") as (url, schema, role_url):
        with pytest.raises(JournalUnavailable) as refused:
            async with opened(role_url, schema):
                pass
        message = str(refused.value)
        assert "permission denied" in message
        assert "nothing was created" in message
        assert not schema_exists(url, schema)


def _why_untestable(role_url: str) -> str:
    """Why a new role's refusal cannot be tested on this server ('' if it can)."""
    import psycopg

    try:
        with psycopg.connect(role_url, connect_timeout=3) as conn:
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(f"CREATE SCHEMA probe_{secrets.token_hex(4)}")
            except psycopg.errors.InsufficientPrivilege:
                return ""
    except psycopg.Error as exc:
        return f"a new role cannot connect to the test server: {exc}"
    return "a new role may create schemas in the test database (PUBLIC has CREATE on it)"


async def test_a_user_who_owns_the_schema_needs_no_create_on_the_database(
    anyio_backend: str,
) -> None:
    """A least-privilege user given a schema of its own: the tool creates its tables there
    (CREATE SCHEMA IF NOT EXISTS would ask for CREATE on the database first)."""
    with role_without_create("orch_owner") as (url, schema, role_url):
        role = urlsplit(role_url).username
        sql(url, f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
        async with opened(role_url, schema) as journal, journal.lock_key("k"):
            await journal.append(started("r", "k"), durable=True)
        assert seqs_in_db(url, schema, "r") == [0]


# -- appends that go wrong ------------------------------------------------------------------


async def test_a_cancelled_durable_append_still_commits_its_batch(anyio_backend: str) -> None:
    """A step cancelled (timeout, Engine.cancel) while its record is written: the batch is
    not dropped half way, and later appends still commit."""
    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema) as journal, journal.lock_key("k"):
            await journal.append(started("r", "k"))
            with anyio.CancelScope() as scope:
                scope.cancel()
                await journal.append(step("r", 1), durable=True)
            assert seqs_in_db(url, schema, "r") == [0, 1]
            with anyio.fail_after(10):
                await journal.append(step("r", 2), durable=True)
            assert seqs_in_db(url, schema, "r") == [0, 1, 2]


async def test_a_run_id_taken_on_another_key_is_refused_and_harms_nothing(
    anyio_backend: str,
) -> None:
    """Host b starts a run under an id host a's run (on another key) has: b is told, writes
    nothing of it, and goes on writing its other runs; a's run is untouched."""
    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema) as a, opened(url, schema) as b:
            async with a.lock_key("k1"):
                await a.append(started("r", "k1"), durable=True)
            async with b.lock_key("k2"):
                await b.append(started("r", "k2"))
                with pytest.raises(UsageError, match=r"run id r .* is taken"):
                    await b.append(step("r", 1), durable=True)
                with pytest.raises(UsageError, match="is taken"):
                    await b.append(step("r", 2))
                assert b.unfinished("k2") == []
                await b.append(started("s", "k2"), durable=True)
            assert seqs_in_db(url, schema, "r") == [0]
            assert seqs_in_db(url, schema, "s") == [0]
            assert sql(url, f"SELECT key FROM {schema}.runs WHERE run_id = 'r'") == [("k1",)]


async def test_a_key_with_two_unfinished_runs_is_claimed_once(anyio_backend: str) -> None:
    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema) as a, opened(url, schema) as b:
            await write_open_run(a, "first", "k", at=1.0)
            await write_open_run(a, "second", "k", at=2.0)
            assert await b.claim_expired(10) == ["k"]
            async with b.lock_key("k"):
                assert [h.run_id for h in b.unfinished("k")] == ["first", "second"]


async def test_a_request_waits_in_the_queue_while_its_key_is_held(anyio_backend: str) -> None:
    """Served for longer than its claim, a request must not be taken again while its run
    goes on (the taker would only wait on the key): a key held now keeps its requests."""
    from orchestrator._journal.postgres import Request

    with fresh_schema("pgj") as (url, schema):
        async with opened(url, schema) as a, opened(url, schema) as b:
            assert await a.submit(Request("q1", "w", "k", {"n": 1}, "test"))
            async with a.lock_key("k"):
                assert await b.claim_requests(10, 30.0) == []
            (taken,) = await b.claim_requests(10, 30.0)
            assert (taken.run_id, taken.key, taken.input) == ("q1", "k", {"n": 1})
