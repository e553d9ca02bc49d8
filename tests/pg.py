"""A real PostgreSQL server for tests, or a skip that says why.

``ORCHESTRATOR_TEST_PG`` names the server (default: the one on 127.0.0.1:5432, user postgres,
database test); set it to ``off`` to skip these tests on purpose. Each test gets a schema of
its own (``fresh_schema``), dropped afterwards, so tests never see each other's runs.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

_reachable: str | None = None  # "" when reachable, else why not (checked once)


def pg_url() -> str:
    """The test server's URL; skips the calling test (with the reason) if it is unusable."""
    global _reachable
    url = os.environ.get("ORCHESTRATOR_TEST_PG", DEFAULT_URL)
    if url == "off":
        pytest.skip("PostgreSQL tests turned off (ORCHESTRATOR_TEST_PG=off)")
    if _reachable is None:
        _reachable = _check(url)
    if _reachable:
        pytest.skip(_reachable)
    return url


def _check(url: str) -> str:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL server usable at {url}: {first}"
    return ""


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def fresh_schema(prefix: str = "t") -> Iterator[tuple[str, str]]:
    """``(url, schema)``: a schema name no other test uses, dropped on exit."""
    url = pg_url()
    schema = f"{prefix}_{secrets.token_hex(6)}"
    try:
        yield url, schema
    finally:
        drop_schema(url, schema)
