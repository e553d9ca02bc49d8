"""The PostgreSQL journal's schema: versioned migrations, applied by the tool itself.

Every migration runs in one transaction together with the version bump, under a
transaction-scoped advisory lock, so two hosts starting at once migrate once, and a migration
that fails (no permission, say) leaves nothing half-created: PostgreSQL's DDL is
transactional. A schema whose version is newer than this release knows is refused, never
touched.
"""

from __future__ import annotations

import re

__all__ = ("MIGRATIONS", "SCHEMA_VERSION", "check_schema_name", "migration_sql")

#: Each entry migrates the schema from version ``index`` to ``index + 1``. Never edit a
#: released entry: append a new one. ``{s}`` is the quoted schema name.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.records (
        id bigserial PRIMARY KEY,
        run_id text NOT NULL,
        seq integer NOT NULL,
        body bytea NOT NULL,
        UNIQUE (run_id, seq)
    );
    CREATE TABLE {s}.runs (
        run_id text PRIMARY KEY,
        key text NOT NULL,
        workflow text NOT NULL,
        started_at double precision NOT NULL,
        finished boolean NOT NULL DEFAULT false
    );
    CREATE INDEX runs_by_key ON {s}.runs (key);
    CREATE INDEX runs_unfinished ON {s}.runs (started_at) WHERE NOT finished;
    CREATE TABLE {s}.leases (
        key text PRIMARY KEY,
        owner text NOT NULL,
        token bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE SEQUENCE {s}.fencing_tokens;
    CREATE TABLE {s}.requests (
        run_id text PRIMARY KEY,
        workflow text NOT NULL,
        key text NOT NULL,
        input bytea NOT NULL,
        requested_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        claimed_by text,
        claimed_until timestamptz
    );
    """,
    # 2: a request that can never run is kept with why, so its submitter learns it.
    """
    ALTER TABLE {s}.requests ADD COLUMN dropped text;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_schema_name(name: str) -> str:
    """``name`` quoted for SQL, or ValueError: only plain lower-case identifiers are allowed,
    so a name never needs escaping and never means two different schemas."""
    if not _NAME.fullmatch(name) or name.startswith("pg_"):
        raise ValueError(
            f"schema name {name!r} is not allowed: use lower-case letters, digits and '_' "
            "(at most 63, not starting with a digit or with 'pg_', which PostgreSQL "
            "reserves)"
        )
    return f'"{name}"'


def migration_sql(quoted_schema: str, version: int) -> str:
    """The SQL that takes the schema from ``version`` to ``version + 1``."""
    return MIGRATIONS[version].format(s=quoted_schema)
