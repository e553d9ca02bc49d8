"""The PostgreSQL journal: hosts share runs, and a run whose host died is finished by another.

Tables (one schema, created and migrated by the tool: ``pg_schema``):

- ``records``: every record, msgpack-encoded exactly as in a file journal's frames; a
  record's ``(run_id, seq)`` is unique, so no run can ever hold two records at one position.
- ``runs``: one row per run (key, workflow, finished?), to find the unfinished ones.
- ``leases``: who holds a key and until when. Every acquisition draws a new ``token`` from a
  sequence: a larger token is a later owner (a fencing token).
- ``requests``: runs asked for but not started yet (``submit``), served by workers.

Ownership. A run belongs to the host holding its key's lease (the engine already holds a
run's key while it writes the run). The lease is renewed by a heartbeat every third of its
time to live; a host that stops (killed, paused, cut off) stops renewing, and once the lease
expires another host may take the key, and with it the key's unfinished runs
(``claim_expired``, ``FOR UPDATE SKIP LOCKED``, so workers never claim the same run).

Fencing. Every write locks the lease rows of its records' keys ``FOR SHARE`` and inserts only
the records whose key is still held, with the same token, unexpired (server time), all in one
statement. A takeover updates the lease row, so it waits for a write in flight to commit and
then reads what it wrote; a write that comes after the takeover finds another token and
inserts nothing: the host that lost the lease gets ``LeaseLost`` and never writes again
(once one record of a key is refused, or its heartbeat fails, the key's later records are
not even sent). A record whose run id is another key's run is refused the same way, and its
run is told (``UsageError``).

Durability (group commit, as in the file journal). An append adds its record to a pending
batch; a durable append writes the batch in one statement and returns once it committed (as
durable as the server's ``synchronous_commit`` makes a commit). Concurrent durable appends
share a statement. A record that guards nothing is written with the next durable one: a
crash may lose it, never a durable record or anything before one. ``flush`` cannot write
without awaiting, so here it writes nothing: an attempt cut short by a crash may be lost with
its host, and the step then runs again as if it had not started (the contract allows it). A
failed write stops this journal instance: whether it committed is unknown, and the runs it
carried are resumed by whoever takes their keys.

Backends. psycopg's async API runs on asyncio only, so the journal calls its synchronous API in
worker threads (``anyio.to_thread``): it runs on asyncio and on trio alike.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import msgspec

from ..errors import JournalUnavailable, KeyBusy, LeaseLost, UsageError
from .framing import check_encodable
from .history import RunHistory, RunIndex
from .keylocks import LocalKeyLocks
from .pg_schema import SCHEMA_VERSION, check_schema_name, migration_sql
from .records import Record, RunFinished, RunStarted

__all__ = ("DEFAULT_SCHEMA", "PostgresJournal", "Request", "is_postgres_url", "redact_url")

DEFAULT_SCHEMA = "orchestrator"
#: Seconds a lease lives without a heartbeat. A dead host's runs wait this long at most.
DEFAULT_LEASE = 30.0

_T = TypeVar("_T")
#: ``LeaseLost.run_id`` when a key's lease was lost with no run of it under way here.
_NO_RUN = "(none)"
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def is_postgres_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(url)
    except Exception:
        return "postgresql://<unparsable URL>"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{params.get('dbname') or ''}"


class Request(msgspec.Struct, frozen=True):
    """A run asked for with ``submit`` and not yet taken by a worker."""

    run_id: str
    workflow: str
    key: str
    input: Any
    requested_by: str


class _Row(msgspec.Struct, gc=False):
    record: Record
    run_id: str
    seq: int
    body: bytes
    key: str
    token: int
    workflow: str | None
    at: float
    finish: bool


class PostgresJournal:
    """See the module docstring. Open it with ``await PostgresJournal.open(url)``."""

    def __init__(
        self,
        pool: Any,
        url: str,
        schema: str,
        *,
        owner: str,
        lease: float,
        lock_timeout: float,
        connections: int,
    ) -> None:
        self.url = url
        self.schema = schema
        #: This host's identity in ``leases.owner``: host name, pid and a random suffix.
        self.owner = owner
        self.lease = lease
        self.lock_timeout = lock_timeout
        #: Committed write statements (the benchmark reports them, like fsyncs on files).
        self.syncs = 0
        self._pool = pool
        self._limiter = anyio.CapacityLimiter(connections)
        self._s = check_schema_name(schema)
        self._index = RunIndex()
        self._local = LocalKeyLocks()
        self._held: dict[str, int] = {}  # key -> token, while this journal holds the key
        self._claimed: dict[str, int] = {}  # keys taken by claim_expired, not yet locked
        self._lost: dict[str, str] = {}  # key -> why its lease is gone
        self._run_keys: dict[str, str] = {}
        self._live_keys: set[str] = set()
        self._pending: list[_Row] = []
        self._inflight: list[_Row] = []  # the batch being written now
        self._queued = 0
        self._written = 0
        self._writing: anyio.Event | None = None
        self._rejected: set[tuple[str, int]] = set()
        #: Runs whose id another host's run on another key had taken first.
        self._taken: set[str] = set()
        self._failure: JournalUnavailable | None = None
        self._closed = False

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        owner: str | None = None,
        lease: float = DEFAULT_LEASE,
        lock_timeout: float = 120.0,
        connections: int = 8,
        create: bool = True,
    ) -> PostgresJournal:
        """Connect, create or migrate the schema (when ``create``), and return the journal.

        Raises ``UsageError`` for a malformed URL or schema name and ``JournalUnavailable``
        (exit 2) when the server cannot be reached, refuses this user, or holds a schema of
        a newer version; nothing is created then.
        """
        if not is_postgres_url(url):
            raise UsageError(
                f"--journal {url!r}: expected a postgresql://user@host:port/database URL"
            )
        try:
            quoted = check_schema_name(schema)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if lease <= 0:
            raise UsageError(f"lease must be positive seconds, got {lease:g}")
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise UsageError(
                "the PostgreSQL journal needs the 'postgres' extra: "
                "pip install 'orchestrator[postgres]'"
            ) from None
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise UsageError(f"--journal: not a valid PostgreSQL URL: {_first_line(exc)}") from None
        where = f"{redact_url(url)} (schema {schema})"
        await anyio.to_thread.run_sync(functools.partial(_prepare, url, quoted, where, create))
        pool = ConnectionPool(
            url,
            min_size=1,
            max_size=connections,
            kwargs={"autocommit": True},
            open=False,
            name=f"orchestrator-{schema}",
        )
        try:
            await anyio.to_thread.run_sync(functools.partial(pool.open, wait=True, timeout=10.0))
        except Exception as exc:
            await anyio.to_thread.run_sync(pool.close)
            raise JournalUnavailable(where, _first_line(exc)) from None
        return cls(
            pool,
            url,
            schema,
            owner=owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
            lease=lease,
            lock_timeout=lock_timeout,
            connections=connections,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._pending and self._failure is None and self._held:
                await self.sync()
        finally:
            await anyio.to_thread.run_sync(self._pool.close)

    # -- the index -----------------------------------------------------------------------

    def history(self, run_id: str) -> RunHistory | None:
        return self._index.get(run_id)

    def runs(self) -> Iterable[RunHistory]:
        return iter(self._index)

    def unfinished(self, key: str | None = None) -> list[RunHistory]:
        return self._index.unfinished(key)

    async def refresh(self) -> None:
        """Read every unfinished run afresh (and the local ones others finished meanwhile)."""
        local = [h.run_id for h in self._index.unfinished()]
        await self._load(
            f"SELECT r.body FROM {self._s}.records r JOIN {self._s}.runs u USING (run_id) "
            "WHERE NOT u.finished OR u.run_id = ANY(%(local)s) ORDER BY r.run_id, r.seq",
            {"local": local},
        )

    async def load_all(self) -> None:
        """Read every run, and which keys are held now (for views and audits; a host
        serving runs never needs this)."""
        await self._load(f"SELECT body FROM {self._s}.records ORDER BY run_id, seq", {})
        rows = await self._call(
            _fetch, f"SELECT key FROM {self._s}.leases WHERE expires_at > now()", {}
        )
        self._live_keys = {key for (key,) in rows}

    def key_held(self, key: str) -> bool:
        """Whether a host held ``key`` when ``load_all`` last looked (or this one holds it)."""
        return key in self._held or key in self._live_keys

    async def load(self, run_id: str) -> RunHistory | None:
        """The run's history as the database has it now."""
        await self._load(
            f"SELECT body FROM {self._s}.records WHERE run_id = %(run)s ORDER BY seq",
            {"run": run_id},
        )
        return self._index.get(run_id)

    async def _load_key(self, key: str) -> None:
        local = [h.run_id for h in self._index.unfinished(key)]
        await self._load(
            f"SELECT r.body FROM {self._s}.records r JOIN {self._s}.runs u USING (run_id) "
            "WHERE u.key = %(key)s AND (NOT u.finished OR u.run_id = ANY(%(local)s)) "
            "ORDER BY r.run_id, r.seq",
            {"key": key, "local": local},
        )

    async def _load(self, sql: str, params: dict[str, Any]) -> None:
        rows = await self._call(_fetch, sql, params)
        current: RunHistory | None = None
        for (body,) in rows:
            record = _decoder.decode(body)
            if current is None or current.run_id != record.run_id:
                if current is not None:
                    self._settle(current)
                current = RunHistory(record.run_id)
            current.add(record)
        if current is not None:
            self._settle(current)

    def _settle(self, history: RunHistory) -> None:
        # What this instance appended and has not committed yet is not in the database; a
        # history read afresh without it would hand out its seqs again.
        known = len(history.records)
        for row in (*self._inflight, *self._pending):
            if row.run_id == history.run_id and row.seq >= known:
                history.add(row.record)
        history.settle()
        self._index.replace(history)
        self._run_keys[history.run_id] = history.started.key

    # -- keys and leases -----------------------------------------------------------------

    @asynccontextmanager
    async def lock_key(self, key: str) -> AsyncIterator[None]:
        async with self._local.hold(key):
            token = await self._adopt_claim(key)
            if token is None:
                token = await self._acquire(key)
            self._held[key] = token
            self._lost.pop(key, None)
            try:
                await self._load_key(key)
                try:
                    async with anyio.create_task_group() as heartbeat:
                        heartbeat.start_soon(self._heartbeat, key, token)
                        try:
                            yield
                        finally:
                            heartbeat.cancel_scope.cancel()
                except BaseExceptionGroup as group:
                    # The group wraps what the body or the heartbeat (LeaseLost) raised; the
                    # caller wants that error itself (the body's, when both found the lease
                    # gone at once).
                    errors = group.exceptions
                    if len(errors) == 1:
                        raise errors[0] from None
                    lost = [e for e in errors if isinstance(e, LeaseLost)]
                    if len(lost) == len(errors):
                        # The body's names its run; the heartbeat's only the key's.
                        raise sorted(lost, key=lambda e: e.run_id == _NO_RUN)[0] from None
                    raise
            finally:
                with anyio.CancelScope(shield=True):
                    await self._release(key, token)

    async def _adopt_claim(self, key: str) -> int | None:
        """The token ``claim_expired`` took for ``key``, renewed now; None if there is none,
        or if it ran out (nobody renewed it while it waited) and may be another's."""
        token = self._claimed.pop(key, None)
        if token is None or await self._renew(key, token):
            return token
        return None

    async def _renew(self, key: str, token: int) -> bool:
        row = await self._call(
            _fetch_one,
            f"UPDATE {self._s}.leases "
            "SET expires_at = now() + make_interval(secs => %(ttl)s) "
            "WHERE key = %(key)s AND token = %(token)s AND expires_at > now() "
            "RETURNING token",
            {"key": key, "token": token, "ttl": self.lease},
        )
        return row is not None

    async def _acquire(self, key: str) -> int:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while True:
            # Our own worker may have claimed the key while we waited (its lease expired):
            # the claim is then ours to use, or we would wait for ourselves.
            claimed = await self._adopt_claim(key)
            if claimed is not None:
                return claimed
            row = await self._call(
                _fetch_one,
                f"INSERT INTO {self._s}.leases AS l (key, owner, token, expires_at) "
                f"VALUES (%(key)s, %(owner)s, nextval('{self._s}.fencing_tokens'), "
                "now() + make_interval(secs => %(ttl)s)) "
                "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, "
                "token = excluded.token, expires_at = excluded.expires_at "
                "WHERE l.expires_at <= now() RETURNING token",
                {"key": key, "owner": self.owner, "ttl": self.lease},
            )
            if row is not None:
                return int(row[0])
            if time.monotonic() >= deadline:
                holder = await self._call(
                    _fetch_one,
                    f"SELECT owner FROM {self._s}.leases WHERE key = %(key)s",
                    {"key": key},
                )
                raise KeyBusy(key, self.lock_timeout, holder[0] if holder else None)
            # Polling, backing off to a tenth of the lease: a key changes hands when a run
            # ends, which is rare per key; LISTEN/NOTIFY would need a connection per waiter.
            await anyio.sleep(delay)
            delay = min(delay * 2, self.lease / 10, 0.5)

    async def _heartbeat(self, key: str, token: int) -> None:
        while key not in self._lost:
            await anyio.sleep(self.lease / 3)
            if key in self._lost:
                return  # a write was fenced off: a renewal now would revive a dead token
            try:
                renewed = await self._renew(key, token)
            except JournalUnavailable as exc:
                # Cannot renew: treat the lease as gone (writes are fenced by the database
                # anyway; stopping now keeps the run's effects from going on meanwhile).
                renewed, why = False, f"its lease could not be renewed ({exc.reason})"
            else:
                why = "its lease expired before this host renewed it"
            if not renewed:
                # The run's key is another host's now, or soon: raising here cancels the
                # body of lock_key (the run's step, its effects) at its next checkpoint, as
                # a crash would stop it, and lock_key raises this error.
                self._lost[key] = why
                # The key's runs: unfinished, or finishing (their end not written yet).
                runs = [h.run_id for h in self._index.unfinished(key)]
                runs += [r.run_id for r in self._pending if r.key == key and r.run_id not in runs]
                raise LeaseLost(", ".join(dict.fromkeys(runs)) or _NO_RUN, key, why)

    async def _release(self, key: str, token: int) -> None:
        self._held.pop(key, None)
        # What this key's runs appended without waiting is written while the key is held.
        if any(row.key == key for row in self._pending) and self._failure is None:
            # On failure the writer recorded it; the key's runs are resumed elsewhere.
            with contextlib.suppress(Exception):
                await self.sync()
        if self._failure is not None:
            return  # the connection is in doubt: the lease expires by itself
        # A release that fails is no error: the run's end is written, and the lease runs out
        # by itself (the key waits that long at most).
        with contextlib.suppress(JournalUnavailable):
            await self._call(
                _execute,
                f"DELETE FROM {self._s}.leases WHERE key = %(key)s AND token = %(token)s",
                {"key": key, "token": token},
            )

    async def claim_expired(self, limit: int, skip: Iterable[str] = ()) -> list[str]:
        """Take the keys of up to ``limit`` unfinished runs whose lease expired (or never
        existed), oldest first, leaving out the keys in ``skip``. Concurrent claimers skip
        each other's rows. The caller then resumes each key's runs under ``lock_key``
        (which adopts the claimed lease)."""
        rows = await self._call(
            _fetch,
            f"WITH candidates AS (SELECT u.key FROM {self._s}.runs u WHERE NOT u.finished "
            "AND NOT u.key = ANY(%(skip)s) "
            f"AND NOT EXISTS (SELECT 1 FROM {self._s}.leases l "
            "WHERE l.key = u.key AND l.expires_at > now()) "
            "ORDER BY u.started_at LIMIT %(n)s FOR UPDATE OF u SKIP LOCKED) "
            f"INSERT INTO {self._s}.leases AS l (key, owner, token, expires_at) "
            f"SELECT key, %(owner)s, nextval('{self._s}.fencing_tokens'), "
            "now() + make_interval(secs => %(ttl)s) FROM (SELECT DISTINCT key FROM candidates) c "
            "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, "
            "token = excluded.token, expires_at = excluded.expires_at "
            "WHERE l.expires_at <= now() RETURNING key, token",
            {"n": limit, "owner": self.owner, "ttl": self.lease, "skip": list(skip)},
        )
        keys = []
        for key, token in rows:
            self._claimed[key] = int(token)
            keys.append(key)
        return keys

    def holds(self, key: str) -> bool:
        """Whether this journal holds ``key`` and has not learnt that its lease is gone."""
        return key in self._held and key not in self._lost

    # -- requests ------------------------------------------------------------------------

    async def submit(self, request: Request) -> bool:
        """Queue ``request`` for a worker; False if its run id is queued or has run already."""
        row = await self._call(
            _fetch_one,
            f"INSERT INTO {self._s}.requests (run_id, workflow, key, input, requested_by) "
            "SELECT %(run)s, %(workflow)s, %(key)s, %(input)s, %(by)s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self._s}.runs WHERE run_id = %(run)s) "
            "ON CONFLICT (run_id) DO NOTHING RETURNING run_id",
            {
                "run": request.run_id,
                "workflow": request.workflow,
                "key": request.key,
                "input": _encoder.encode(request.input),
                "by": request.requested_by,
            },
        )
        return row is not None

    async def claim_requests(self, limit: int, hold: float) -> list[Request]:
        """Take up to ``limit`` queued requests for ``hold`` seconds (then they are free to
        take again: a run started twice by its run id is the same run)."""
        rows = await self._call(
            _fetch,
            f"UPDATE {self._s}.requests SET claimed_by = %(owner)s, "
            "claimed_until = now() + make_interval(secs => %(hold)s) "
            f"WHERE run_id IN (SELECT run_id FROM {self._s}.requests "
            "WHERE (claimed_until IS NULL OR claimed_until < now()) AND dropped IS NULL "
            # A key held now is busy (maybe with this very request, served for longer than
            # its claim): taking its request would only tie a slot up waiting.
            f"AND NOT EXISTS (SELECT 1 FROM {self._s}.leases l "
            "WHERE l.key = requests.key AND l.expires_at > now()) "
            "ORDER BY created_at LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
            "RETURNING run_id, workflow, key, input, requested_by",
            {"owner": self.owner, "hold": hold, "n": limit},
        )
        return [
            Request(run_id, workflow, key, msgspec.msgpack.decode(body), by)
            for run_id, workflow, key, body, by in rows
        ]

    async def done_request(self, run_id: str) -> None:
        await self._call(
            _execute, f"DELETE FROM {self._s}.requests WHERE run_id = %(run)s", {"run": run_id}
        )

    async def drop_request(self, run_id: str, reason: str) -> None:
        """Keep the request, never to be served, with why (its submitter is told)."""
        await self._call(
            _execute,
            f"UPDATE {self._s}.requests SET dropped = %(why)s WHERE run_id = %(run)s",
            {"run": run_id, "why": reason},
        )

    async def request_state(self, run_id: str) -> tuple[str, str | None]:
        """Where a submitted run is: ``("finished", None)``, ``("running", None)``,
        ``("queued", None)``, ``("dropped", reason)`` or ``("unknown", None)``."""
        row = await self._call(
            _fetch_one,
            f"SELECT (SELECT finished FROM {self._s}.runs WHERE run_id = %(run)s), "
            f"EXISTS (SELECT 1 FROM {self._s}.requests WHERE run_id = %(run)s), "
            f"(SELECT dropped FROM {self._s}.requests WHERE run_id = %(run)s)",
            {"run": run_id},
        )
        assert row is not None
        finished, queued, dropped = row
        if finished is not None:
            return ("finished" if finished else "running"), None
        if dropped is not None:
            return "dropped", str(dropped)
        return ("queued" if queued else "unknown"), None

    # -- appending -----------------------------------------------------------------------

    async def append(self, record: Record, *, durable: bool = False) -> None:
        if self._failure is not None:
            raise self._failure
        if isinstance(record, RunStarted):
            self._run_keys[record.run_id] = record.key
        key = self._run_keys.get(record.run_id)
        if key is None:
            raise UsageError(f"run {record.run_id}: a record appended before its run_started")
        if record.run_id in self._taken:
            raise _taken_error(record.run_id, key)
        token = self._held.get(key)
        if token is None or key in self._lost:
            reason = self._lost.get(key, "this host does not hold the key")
            raise LeaseLost(record.run_id, key, reason)
        check_encodable(record)
        self._pending.append(
            _Row(
                record,
                record.run_id,
                record.seq,
                _encoder.encode(record),
                key,
                token,
                record.workflow if isinstance(record, RunStarted) else None,
                record.at,
                isinstance(record, RunFinished),
            )
        )
        self._index.add(record)
        self._queued += 1
        if durable:
            # Shielded, as in the file journal: a cancelled caller must still learn whether
            # its record is durable, and a batch it leads must not be dropped half way.
            with anyio.CancelScope(shield=True):
                await self._commit(self._queued, record.run_id, record.seq)

    def flush(self) -> None:
        return None  # see the module docstring: nothing can be written without awaiting

    async def sync(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._commit(self._queued, None, -1)

    async def _commit(self, target: int, run_id: str | None, seq: int) -> None:
        while self._written < target:
            if self._failure is not None:
                raise self._failure
            if self._writing is not None:
                await self._writing.wait()
                continue
            batch, fenced = self._fence(self._pending)
            self._inflight, self._pending = batch, []
            self._writing = done = anyio.Event()
            try:
                rejected = (
                    await self._call(_write_batch, self._s, self.owner, batch) if batch else []
                )
            except JournalUnavailable as exc:
                self._failure = exc
                raise
            except BaseException as exc:
                # Whether the batch committed is unknown: nothing more is written here.
                self._failure = JournalUnavailable(
                    f"{redact_url(self.url)} (schema {self.schema})",
                    f"a write ended without an answer ({type(exc).__name__})",
                    hint="interrupted runs are resumed by whichever host takes their keys",
                )
                raise
            finally:
                self._inflight = []
                self._writing = None
                done.set()
            self.syncs += 1
            self._written += len(batch) + len(fenced)
            for lost_run, lost_seq, lost_key, held in [*rejected, *fenced]:
                if held:  # the key was ours, the run id another's
                    self._taken.add(lost_run)
                    self._index.discard(lost_run)
                    continue
                self._lost.setdefault(lost_key, "another host took the key over")
                self._rejected.add((lost_run, lost_seq))
        if run_id is not None and run_id in self._taken:
            raise _taken_error(run_id, self._run_keys[run_id])
        if run_id is not None and (run_id, seq) in self._rejected:
            key = self._run_keys[run_id]
            raise LeaseLost(run_id, key, self._lost.get(key, "another host took the key over"))

    def _fence(self, rows: list[_Row]) -> tuple[list[_Row], list[tuple[str, int, str, bool]]]:
        """Split off the rows of keys whose lease is known gone: once one record of a
        token was refused, none after it may land (a late renewal could let them in, after a
        gap)."""
        if not self._lost:
            return rows, []
        kept = [r for r in rows if r.key not in self._lost]
        fenced = [(r.run_id, r.seq, r.key, False) for r in rows if r.key in self._lost]
        return kept, fenced

    # -- the database, in worker threads --------------------------------------------------

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise JournalUnavailable(redact_url(self.url), "the journal is closed")
        return await anyio.to_thread.run_sync(
            functools.partial(self._with_connection, fn, *args), limiter=self._limiter
        )

    def _with_connection(self, fn: Callable[..., _T], *args: Any) -> _T:
        import psycopg

        try:
            with self._pool.connection() as conn:
                return fn(conn, *args)
        except psycopg.Error as exc:
            raise JournalUnavailable(
                f"{redact_url(self.url)} (schema {self.schema})",
                _first_line(exc),
                hint="check the server and the connection; interrupted runs are resumed by "
                "whichever host takes their keys",
            ) from exc


# -- statements (run in a worker thread with a pooled connection) ---------------------------


def _fetch(conn: Any, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    return list(conn.execute(sql, params).fetchall())


def _fetch_one(conn: Any, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
    return row


def _execute(conn: Any, sql: str, params: dict[str, Any]) -> None:
    conn.execute(sql, params)


def _write_batch(
    conn: Any, s: str, owner: str, batch: Sequence[_Row]
) -> list[tuple[str, int, str, bool]]:
    """Insert the batch's records whose key is still held and whose run is the key's;
    return the rejected ones, each with whether its key was held (then its run id is
    another key's run)."""
    params = {
        "run": [r.run_id for r in batch],
        "seq": [r.seq for r in batch],
        "body": [r.body for r in batch],
        "key": [r.key for r in batch],
        "token": [r.token for r in batch],
        "workflow": [r.workflow for r in batch],
        "at": [r.at for r in batch],
        "finish": [r.finish for r in batch],
        "owner": owner,
    }
    rows = conn.execute(_WRITE.format(s=s), params).fetchall()
    return [(run, int(seq), key, bool(held)) for run, seq, key, held in rows]


# All in one statement (one round trip, one commit). Data-modifying CTEs share one snapshot,
# so a run that starts and finishes in the same batch is inserted already finished.
_WRITE = """
WITH batch AS (
    SELECT * FROM unnest(
        %(run)s::text[], %(seq)s::int[], %(body)s::bytea[], %(key)s::text[],
        %(token)s::bigint[], %(workflow)s::text[], %(at)s::float8[], %(finish)s::bool[]
    ) AS b(run_id, seq, body, key, token, workflow, at, finish)
), held AS (
    SELECT key, token FROM {s}.leases
    WHERE key = ANY(%(key)s::text[]) AND owner = %(owner)s AND expires_at > now()
    FOR SHARE
), valid AS (
    SELECT b.* FROM batch b JOIN held h ON h.key = b.key AND h.token = b.token
), started AS (
    -- A run id another host's run (on another key) took first is not ours to write.
    INSERT INTO {s}.runs (run_id, key, workflow, started_at, finished)
    SELECT v.run_id, v.key, v.workflow, v.at,
        EXISTS (SELECT 1 FROM valid f WHERE f.run_id = v.run_id AND f.finish)
    FROM valid v WHERE v.workflow IS NOT NULL
    ON CONFLICT (run_id) DO NOTHING RETURNING run_id
), owned AS (
    SELECT v.* FROM valid v
    WHERE v.run_id IN (SELECT run_id FROM started)
        OR EXISTS (SELECT 1 FROM {s}.runs r WHERE r.run_id = v.run_id AND r.key = v.key)
), ended AS (
    UPDATE {s}.runs u SET finished = true FROM owned v
    WHERE u.run_id = v.run_id AND v.finish
), inserted AS (
    INSERT INTO {s}.records (run_id, seq, body)
    SELECT run_id, seq, body FROM owned ORDER BY run_id, seq
)
SELECT b.run_id, b.seq, b.key,
    EXISTS (SELECT 1 FROM valid v WHERE v.run_id = b.run_id AND v.seq = b.seq)
FROM batch b
WHERE NOT EXISTS (SELECT 1 FROM owned o WHERE o.run_id = b.run_id AND o.seq = b.seq)
"""


def _taken_error(run_id: str, key: str) -> UsageError:
    return UsageError(
        f"run id {run_id} (key {key!r}) is taken by another host's run on another key; "
        "nothing of this run was written: choose another run id"
    )


def _prepare(url: str, s: str, where: str, create: bool) -> None:
    """Connect once (so a bad URL or a refused connection says why), then create or migrate
    the schema in one transaction: nothing is half-created."""
    import psycopg

    try:
        conn = psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as exc:
        raise JournalUnavailable(
            where,
            _first_line(exc),
            hint="check the URL's host, port, user and database, and that the server runs",
        ) from None
    try:
        with conn.transaction():
            # One migrator at a time per schema (hosts starting together).
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"orchestrator {s}",))
            found = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (s.strip('"'),)
            ).fetchone()
            if found is None and not create:
                raise JournalUnavailable(
                    where,
                    "the schema does not exist",
                    hint="run a command that writes (e.g. 'orchestrator worker') once",
                )
            if found is None:  # CREATE SCHEMA IF NOT EXISTS would need CREATE on the database
                conn.execute(f"CREATE SCHEMA {s}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)"
            )
            row = conn.execute(f"SELECT version FROM {s}.schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise JournalUnavailable(
                    where,
                    f"its schema is version {version}, newer than this orchestrator's "
                    f"({SCHEMA_VERSION})",
                    hint="upgrade orchestrator on this host (an older release must not write "
                    "a newer schema)",
                )
            for step in range(version, SCHEMA_VERSION):
                conn.execute(migration_sql(s, step))
            if row is None:
                conn.execute(f"INSERT INTO {s}.schema_version VALUES (%s)", (SCHEMA_VERSION,))
            elif version < SCHEMA_VERSION:
                conn.execute(f"UPDATE {s}.schema_version SET version = %s", (SCHEMA_VERSION,))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise JournalUnavailable(
            where,
            _first_line(exc),
            hint="grant this user CREATE on the database (or create the schema for it and "
            "grant it ownership); nothing was created",
        ) from None
    except psycopg.Error as exc:
        raise JournalUnavailable(where, _first_line(exc), hint="nothing was created") from None
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n")[:2]).strip()
    return " ".join(text.split()) or type(exc).__name__
