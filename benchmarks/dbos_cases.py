"""DBOS Transact 3.x comparison cases: the session-reset step sequence as a DBOS workflow.

    from benchmarks.dbos_cases import available, dbos_seq, dbos_concurrent, describe

    if (why := available()) is None:
        result = await dbos_seq(200, workdir)             # {"runs", "seconds", "us_per_run", ...}
        result = await dbos_concurrent(500, 50, workdir)
    if (why := available_pg(url)) is None:              # the same on a PostgreSQL server
        result = await dbos_seq(200, workdir, pg=url)
        result = await dbos_concurrent(500, 64, workdir, pg=url)

What runs: one ``@DBOS.workflow()`` calling seven no-op ``@DBOS.step()`` functions named
like the steps of ``session_reset`` (``hook_fired``, ``runtime_cleanup``, ``acp_cancel``,
``acp_close``, ``store_mutation``, ``archive``, ``unbind``), with the run's key as its one
argument, on DBOS's default SQLite system database: a fresh file under ``workdir`` per call.
Durability is DBOS's own: nothing touches its SQLite settings (it leaves SQLite's defaults,
``journal_mode=delete`` and ``synchronous=FULL``, see :func:`describe`).

On PostgreSQL (``pg=URL``, the server the engine's PostgreSQL journal is measured on): DBOS's
system database is the database :data:`PG_DATABASE` on that server (created once if missing,
by :func:`available_pg`), and each call uses a fresh schema in it (``dbos_system_schema``,
``dbos_bench_<random>``), which DBOS creates and migrates at launch and which is dropped after
``DBOS.destroy()``. DBOS's pool is left at its default (SQLAlchemy ``pool_size`` 20,
``max_overflow`` 0): 64 workflows in flight never exhaust it (DBOS would log "connection pool
exhausted"), because a workflow holds a connection only for each statement; a pool of 64 was
measured at the same throughput. The server's durability settings are its own
(:func:`describe_pg` reports them).

Each call is self-contained: ``DBOS(config=...)``, ``DBOS.launch()``, one untimed warm-up
workflow, the timed runs, ``DBOS.destroy()`` (in ``finally``), so the cases can be called
repeatedly and interleaved with other cases in one process (A B A B). Only the runs are
timed; launch, warm-up and destroy are not.

Why the synchronous DBOS API (wrapped in ``async def`` for ``run.py``):
- DBOS's core is synchronous; its async API runs every step's database writes through
  ``asyncio.to_thread``. Measured here: ~24 ms per sequential run against 18-23 ms, and
  31-35 runs/s at 50 concurrent against ~43, so the sync API is DBOS's best case, the fair one.
- ``DBOS.start_workflow_async`` replaces the calling event loop's default executor with DBOS's
  thread pool, which ``DBOS.destroy()`` shuts down: afterwards ``asyncio.to_thread`` on that
  loop fails ("cannot schedule new futures after shutdown"), which would break the cases run
  after it in an interleaved benchmark. The async API also needs asyncio (no trio).
So :func:`dbos_seq_sync` and :func:`dbos_concurrent_sync` do the work in the calling thread,
and :func:`dbos_seq` / :func:`dbos_concurrent` run them in a worker thread
(``anyio.to_thread.run_sync``), which works on asyncio and trio and leaves the loop alone.

Concurrency: ``DBOS.start_workflow`` is DBOS's documented way to run a workflow in the
background and returns a handle; :func:`dbos_concurrent_sync` keeps ``concurrency`` workflows
in flight (a sliding window, not batches) with ``concurrency`` driver threads, each starting a
workflow with ``DBOS.start_workflow`` and waiting on ``handle.get_result()`` before starting
the next, until ``runs`` have completed. The workflows themselves run on DBOS's executor.

Config beyond the name and the database URL: ``log_level`` WARNING (DBOS logs its launch
banner at INFO; it logs nothing per workflow) and ``notification_listener_polling_interval_sec``
0.05 (that thread sleeps this long between looks at its wait maps, which stay empty here as
nothing calls ``recv``/``get_event``, so it issues no query; at the default 1 s,
``DBOS.destroy()`` takes ~1 s joining it). Neither touches the measured path.

Results: ``{"runs": n, "seconds": s, "us_per_run": s / n * 1e6, "runs_per_s": n / s}``; for the
concurrent case ``us_per_run`` is wall time per completed run (inverse throughput), not latency.
"""

from __future__ import annotations

import functools
import importlib.metadata
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

STEPS = (
    "hook_fired",
    "runtime_cleanup",
    "acp_cancel",
    "acp_close",
    "store_mutation",
    "archive",
    "unbind",
)

WORKFLOW_NAME = "orchestrator_bench_session_reset"
#: DBOS's system database on the PostgreSQL server (one fresh schema in it per call).
PG_DATABASE = "dbos_bench"
INSTALL_HINT = "pip install -e '.[bench]'"
SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
# Settings added to DBOS's defaults; see the module docstring for why neither is measured.
LOG_LEVEL = "WARNING"
LISTENER_POLL_S = 0.05

Workflow = Callable[[str], None]


def available() -> str | None:
    """None if DBOS Transact 3.x can run here, else a one-line reason."""
    try:
        version = importlib.metadata.version("dbos")
    except importlib.metadata.PackageNotFoundError:
        return f"dbos is not installed: {INSTALL_HINT}"
    if version.split(".")[0] != "3":
        return f"dbos {version} is installed, these cases need DBOS Transact 3.x: {INSTALL_HINT}"
    try:
        import dbos  # noqa: F401
    except Exception as exc:  # a broken install, a missing dependency, ...
        return f"dbos {version} cannot be imported: {type(exc).__name__}: {exc}"
    return None


def pg_system_url(url: str) -> str:
    """The benchmark server's ``url`` with its database replaced by :data:`PG_DATABASE`."""
    import sqlalchemy as sa

    return sa.make_url(url).set(database=PG_DATABASE).render_as_string(hide_password=False)


@functools.cache
def available_pg(url: str) -> str | None:
    """None if DBOS can run on the PostgreSQL server at ``url``, else a one-line reason.

    Creates :data:`PG_DATABASE` on that server when it is missing (DBOS would too, at launch,
    but only logs a warning when it cannot).
    """
    if (why := available()) is not None:
        return why
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)
            ).fetchone()
            if found is None:
                conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"no PostgreSQL database {PG_DATABASE} for DBOS at {_redact(url)}: {first}"
    return None


def _redact(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(pg_system_url(url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@functools.cache
def _workflow() -> Workflow:
    """Register the seven steps and the workflow with DBOS, once per process.

    Registration goes to DBOS's global registry, which ``DBOS.destroy()`` keeps, so each later
    ``DBOS(config=...)`` picks the same functions up again.
    """
    from dbos import DBOS

    @DBOS.step(name="hook_fired")
    def hook_fired() -> None:
        return None

    @DBOS.step(name="runtime_cleanup")
    def runtime_cleanup() -> None:
        return None

    @DBOS.step(name="acp_cancel")
    def acp_cancel() -> None:
        return None

    @DBOS.step(name="acp_close")
    def acp_close() -> None:
        return None

    @DBOS.step(name="store_mutation")
    def store_mutation() -> None:
        return None

    @DBOS.step(name="archive")
    def archive() -> None:
        return None

    @DBOS.step(name="unbind")
    def unbind() -> None:
        return None

    @DBOS.workflow(name=WORKFLOW_NAME)
    def session_reset(key: str) -> None:
        hook_fired()
        runtime_cleanup()
        acp_cancel()
        acp_close()
        store_mutation()
        archive()
        unbind()

    return session_reset


def _live_dbos() -> Any:
    """The process's DBOS singleton, or None (DBOS keeps it in a private module global)."""
    import dbos._dbos as dbos_module

    return getattr(dbos_module, "_dbos_global_instance", None)


@contextmanager
def _launched(workdir: Path, pg: str | None = None) -> Iterator[str]:
    """DBOS launched on a fresh system database, destroyed on exit; yields where it lives.

    Without ``pg``: a fresh SQLite file under ``workdir`` (its path is yielded). With ``pg``
    (a server URL): a fresh schema in :data:`PG_DATABASE` on that server (its name is
    yielded), dropped after ``DBOS.destroy()``.
    """
    from dbos import DBOS, DBOSConfig

    if _live_dbos() is not None:
        # DBOS(config=...) would hand back that instance and ignore our config.
        raise RuntimeError("a DBOS instance is already live in this process")
    config: DBOSConfig = {
        "name": "orchestrator-bench",
        "log_level": LOG_LEVEL,
        "notification_listener_polling_interval_sec": LISTENER_POLL_S,
    }
    if pg is None:
        workdir.mkdir(parents=True, exist_ok=True)
        where = str(Path(tempfile.mkdtemp(prefix="dbos-", dir=workdir)) / "dbos_system.sqlite")
        config["system_database_url"] = f"sqlite:///{where}"
    else:
        if (why := available_pg(pg)) is not None:
            raise RuntimeError(why)
        where = f"dbos_bench_{secrets.token_hex(4)}"
        config["system_database_url"] = pg_system_url(pg)
        config["dbos_system_schema"] = where
    DBOS(config=config)
    try:
        DBOS.launch()
        yield where
    finally:
        DBOS.destroy()
        if pg is not None:
            _drop_schema(pg, where)


def _result(runs: int, seconds: float) -> dict[str, Any]:
    return {
        "runs": runs,
        "seconds": seconds,
        "us_per_run": seconds / runs * 1e6,
        "runs_per_s": runs / seconds,
    }


def _check(runs: int, concurrency: int = 1) -> None:
    if runs < 1 or concurrency < 1:
        raise ValueError(f"runs and concurrency must be >= 1 (got {runs}, {concurrency})")
    if (why := available()) is not None:
        raise RuntimeError(why)


def dbos_seq_sync(runs: int, workdir: Path, pg: str | None = None) -> dict[str, Any]:
    """``runs`` workflows one after the other, each called directly in this thread; on
    SQLite, or on the PostgreSQL server at ``pg``."""
    _check(runs)
    workflow = _workflow()
    with _launched(workdir, pg):
        workflow("warm-up")
        began = time.perf_counter()
        for i in range(runs):
            workflow(f"s-{i}")
        seconds = time.perf_counter() - began
    return _result(runs, seconds)


def dbos_concurrent_sync(
    runs: int, concurrency: int, workdir: Path, pg: str | None = None
) -> dict[str, Any]:
    """``runs`` workflows, ``concurrency`` in flight at a time, via ``DBOS.start_workflow``;
    on SQLite, or on the PostgreSQL server at ``pg``."""
    _check(runs, concurrency)
    from dbos import DBOS

    workflow = _workflow()
    lock = threading.Lock()
    next_run = 0

    def driver() -> None:
        nonlocal next_run
        while True:
            with lock:
                if next_run >= runs:
                    return
                i = next_run
                next_run += 1
            DBOS.start_workflow(workflow, f"c-{i}").get_result()

    drivers = min(concurrency, runs)
    with _launched(workdir, pg), ThreadPoolExecutor(drivers, "dbos-bench-driver-") as pool:
        DBOS.start_workflow(workflow, "warm-up").get_result()
        began = time.perf_counter()
        futures = [pool.submit(driver) for _ in range(drivers)]
        for future in futures:
            future.result()  # re-raises a driver's exception
        seconds = time.perf_counter() - began
    return _result(runs, seconds)


async def dbos_seq(runs: int, workdir: Path, pg: str | None = None) -> dict[str, Any]:
    """:func:`dbos_seq_sync` in a worker thread (asyncio or trio)."""
    return await anyio.to_thread.run_sync(dbos_seq_sync, runs, workdir, pg)


async def dbos_concurrent(
    runs: int, concurrency: int, workdir: Path, pg: str | None = None
) -> dict[str, Any]:
    """:func:`dbos_concurrent_sync` in a worker thread (asyncio or trio)."""
    return await anyio.to_thread.run_sync(dbos_concurrent_sync, runs, concurrency, workdir, pg)


def describe(workdir: Path) -> dict[str, Any]:
    """Versions, config and the SQLite settings on DBOS's own system-database connection.

    Launches DBOS on a fresh database under ``workdir``, runs one workflow, asks its
    connection pool for a connection (set up by DBOS's connect hook) and reads the PRAGMAs.
    """
    if (why := available()) is not None:
        raise RuntimeError(why)
    import sqlalchemy as sa

    workflow = _workflow()
    with _launched(workdir) as db_file:
        workflow("describe")
        engine = _live_dbos()._sys_db.engine
        with engine.connect() as conn:
            pragmas = {
                name: conn.execute(sa.text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "locking_mode")
            }
            isolation = conn.connection.dbapi_connection.isolation_level
    return {
        "dbos": importlib.metadata.version("dbos"),
        "sqlalchemy": sa.__version__,
        "sqlite": sqlite3.sqlite_version,
        "system_database": f"sqlite:///{Path(db_file).name} (fresh per call)",
        "extra_config": {
            "log_level": LOG_LEVEL,
            "notification_listener_polling_interval_sec": LISTENER_POLL_S,
        },
        "journal_mode": pragmas["journal_mode"],
        "synchronous": SYNCHRONOUS_NAMES.get(pragmas["synchronous"], pragmas["synchronous"]),
        "busy_timeout_ms": pragmas["busy_timeout"],
        "locking_mode": pragmas["locking_mode"],
        "transactions": f"BEGIN {isolation}" if isolation else "autocommit",
        "api": "sync; seq: direct call; concurrent: DBOS.start_workflow + handle.get_result",
    }


def describe_pg(url: str) -> dict[str, Any]:
    """Versions, config, DBOS's pool and the server's durability settings, for DBOS on the
    PostgreSQL server at ``url`` (read on a connection from DBOS's own pool)."""
    if (why := available_pg(url)) is not None:
        raise RuntimeError(why)
    import psycopg
    import sqlalchemy as sa

    workflow = _workflow()
    with _launched(Path(), url) as schema:
        workflow("describe")
        engine = _live_dbos()._sys_db.engine
        with engine.connect() as conn:
            settings = {
                name: conn.execute(sa.text(f"SHOW {name}")).scalar()
                for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
            }
        pool = {
            "class": type(engine.pool).__name__,
            "size": engine.pool.size(),
            "max_overflow": getattr(engine.pool, "_max_overflow", None),
            "timeout_s": engine.pool.timeout(),
        }
    return {
        "dbos": importlib.metadata.version("dbos"),
        "sqlalchemy": sa.__version__,
        "psycopg": psycopg.__version__,
        "system_database": f"{_redact(pg_system_url(url))}, schema dbos_bench_<random> "
        f"(fresh per call, e.g. {schema}, dropped after)",
        "extra_config": {
            "log_level": LOG_LEVEL,
            "notification_listener_polling_interval_sec": LISTENER_POLL_S,
            "dbos_system_schema": "dbos_bench_<random>",
        },
        "pool": pool,
        **settings,
        "api": "sync; seq: direct call; concurrent: DBOS.start_workflow + handle.get_result",
    }


def _main() -> None:
    """A quick self-check: python benchmarks/dbos_cases.py [runs] [repeats] [postgresql://...]
    (with a URL: the PostgreSQL cases, 64 at once, instead of SQLite's)."""
    import sys

    if (why := available()) is not None:
        raise SystemExit(why)
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    pg = sys.argv[3] if len(sys.argv) > 3 else None
    if pg is not None and (why := available_pg(pg)) is not None:
        raise SystemExit(why)
    with tempfile.TemporaryDirectory(prefix="dbos-bench-") as tmp:
        workdir = Path(tmp)
        print(describe(workdir) if pg is None else describe_pg(pg))
        width = 50 if pg is None else 64
        prefix = "dbos" if pg is None else "dbos-pg"
        for _ in range(repeats):
            for name, case in (
                (f"{prefix}-seq", lambda: dbos_seq(runs, workdir, pg)),
                (f"{prefix}-c{width}", lambda: dbos_concurrent(runs, width, workdir, pg)),
            ):
                r = anyio.run(case)
                print(f"{name:<12} {r['us_per_run']:>10.0f} us/run {r['runs_per_s']:>7.1f} runs/s")


if __name__ == "__main__":
    _main()
