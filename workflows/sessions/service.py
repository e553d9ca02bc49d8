"""The Python API for hosts: reset and delete a session, get OpenClaw's reply shape back.

    async with open_session_service("~/.openclaw") as sessions:
        reply = await sessions.reset("agent:main:main", reason="new")
        # {"ok": True, "key": "agent:main:main", "entry": {...}, "run_id": "..."}
        # or {"ok": False, "run_id": "...", "error": {"code": "UNAVAILABLE", "message": "..."}}

Bad input (empty key, unknown agent, deleting the main session, a webchat delete) gets
``{"ok": False, "error": {"code": "INVALID_REQUEST", ...}}`` and starts no run. An unreadable
store raises ``CorruptFile``; the file is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec

from orchestrator import Engine, Outcome, RunResult, open_engine
from orchestrator.cli import open_journal
from orchestrator.errors import UsageError

from ..session_delete import SESSION_DELETE
from ..session_reset import SESSION_RESET
from .adapters.local import LocalHost
from .keys import Target, main_session_key, resolve_target
from .ports import SessionHost
from .snapshot import RunInput

__all__ = ("SessionService", "invalid", "open_session_service")

Reply = dict[str, Any]


def invalid(message: str) -> Reply:
    return {"ok": False, "error": {"code": "INVALID_REQUEST", "message": message}}


class SessionService:
    """Resets and deletes sessions of one host through an engine (which journals them)."""

    def __init__(self, engine: Engine, host: SessionHost) -> None:
        self.engine = engine
        self.host = host
        engine.register(SESSION_RESET, host)
        engine.register(SESSION_DELETE, host)

    def resolve(self, key: object) -> Target:
        """Validate and resolve ``key`` (``UsageError`` says why it is not a session key)."""
        config = self.host.config
        target = resolve_target(key, config)  # validates before any store is read
        existing = self.host.store.read(target.agent_id)
        return resolve_target(key, config, existing)

    async def reset(
        self,
        key: object,
        *,
        reason: str = "reset",
        command_source: str = "api",
        force: Mapping[str, Outcome] | None = None,
        run_id: str | None = None,
    ) -> Reply:
        try:
            target = self.resolve(key)
        except UsageError as exc:
            return invalid(str(exc).removeprefix("INVALID_REQUEST: "))
        request = RunInput(
            key=target.raw_key,
            canonical=target.canonical,
            agent=target.agent_id,
            reason="new" if reason == "new" else "reset",
            command_source=command_source,
        )
        result = await self._run(SESSION_RESET.name, target, request, command_source, force, run_id)
        if not result.ok:
            return _failure(result)
        # A commit forced "ok" (fault injection) did not run, so there is no entry to show.
        entry = (result.results.get("store_mutation") or {}).get("entry")
        return {"ok": True, "key": target.canonical, "entry": entry, "run_id": result.run_id}

    async def delete(
        self,
        key: object,
        *,
        delete_transcript: bool = True,
        emit_hooks: bool = True,
        client_mode: str | None = None,
        command_source: str = "api",
        force: Mapping[str, Outcome] | None = None,
        run_id: str | None = None,
    ) -> Reply:
        if client_mode == "webchat":
            return invalid(
                "webchat clients cannot delete sessions; use chat.send for session-scoped updates"
            )
        try:
            target = self.resolve(key)
        except UsageError as exc:
            return invalid(str(exc).removeprefix("INVALID_REQUEST: "))
        if target.canonical in (
            main_session_key(self.host.config),
            main_session_key(self.host.config, target.agent_id),
        ):
            return invalid(f"Cannot delete the main session ({target.canonical}).")
        request = RunInput(
            key=target.raw_key,
            canonical=target.canonical,
            agent=target.agent_id,
            reason="delete",
            command_source=command_source,
            delete_transcript=delete_transcript,
            emit_hooks=emit_hooks,
        )
        result = await self._run(
            SESSION_DELETE.name, target, request, command_source, force, run_id
        )
        if not result.ok:
            return _failure(result)
        # Steps forced "ok" (fault injection) did not run and left no result.
        deleted = bool((result.results.get("store_mutation") or {}).get("had_entry"))
        archived = (result.results.get("archive") or {}).get("archived", [])
        return {
            "ok": True,
            "key": target.canonical,
            "deleted": deleted,
            "archived": archived,
            "run_id": result.run_id,
        }

    async def _run(
        self,
        workflow: str,
        target: Target,
        request: RunInput,
        source: str,
        force: Mapping[str, Outcome] | None,
        run_id: str | None,
    ) -> RunResult:
        # A caller's run_id makes the request idempotent (Engine.run): asked twice, by one
        # host or two, the session rotates once.
        return await self.engine.run(
            workflow,
            target.canonical,
            msgspec.to_builtins(request),
            requested_by=source,
            force=force,
            run_id=run_id,
        )


def _failure(result: RunResult) -> Reply:
    return {
        "ok": False,
        "run_id": result.run_id,
        "key": result.key,
        "error": {"code": result.code or "UNAVAILABLE", "message": result.message or ""},
    }


def _expand(state_dir: Path | str) -> Path:
    return Path(os.path.expanduser(state_dir))


@asynccontextmanager
async def open_session_service(
    state_dir: Path | str,
    *,
    host: SessionHost | None = None,
    lock_wait: float = 10.0,
    journal_url: str | None = None,
) -> AsyncIterator[SessionService]:
    """A service on the journal of ``state_dir`` (or the shared one at ``journal_url``, see
    ``orchestrator.cli.open_journal``) and (by default) the local host of ``state_dir``.

    ``lock_wait``: how long the local host waits for another process's store lock.
    """
    state_dir = _expand(state_dir)
    journal = await open_journal(state_dir, journal_url)
    async with open_engine(journal) as engine:
        yield SessionService(engine, host or LocalHost(state_dir, lock_wait=lock_wait))
