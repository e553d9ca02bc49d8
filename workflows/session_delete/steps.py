"""The steps of a session delete that are its own (commit, archive, unbind); see ``spec``."""

from __future__ import annotations

from typing import Any

import msgspec

from orchestrator import StepContext

from ..sessions.cleanup import unbind_session
from ..sessions.keys import store_keys
from ..sessions.paths import transcript_candidates
from ..sessions.ports import SessionHost
from ..sessions.snapshot import RunInput, freshest, run_input
from ..sessions.store_file import StoreConflict, StoreDoc
from ..sessions.store_lock import StoreLocked
from ..sessions.transcripts import apply_moves, archive_path, archived

__all__ = ("Deleted", "archive", "store_mutation", "unbind")


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    """What the locked mutation removed: captured inside the lock, journaled before the write."""

    had_entry: bool
    session_id: str | None = None
    session_file: str | None = None


class ArchivePlan(msgspec.Struct, frozen=True, kw_only=True):
    at_ms: int
    moves: list[tuple[str, str]] = []


async def store_mutation(ctx: StepContext) -> dict[str, Any]:
    """Remove the entry (and every alias of it) under the store lock."""
    host: SessionHost = ctx.deps
    request = run_input(ctx)
    prior = await _prior(ctx)

    def mutate(doc: StoreDoc) -> Deleted:
        keys = store_keys(request.key, request.canonical, request.agent, host.config, doc)
        found = freshest(doc, keys)
        if prior is not None:  # resumed after the capture was journaled
            if found is None:
                return prior  # the write happened before the crash
            if found[1].get("sessionId") != prior.session_id:
                raise StoreConflict(
                    f"session {request.canonical} now holds session id "
                    f"{found[1].get('sessionId')}, not {prior.session_id} that this delete "
                    "removed; nothing was written"
                )
        for key in keys:
            doc.delete(key)
        if found is None:
            return Deleted(had_entry=False)
        sid, sfile = found[1].get("sessionId"), found[1].get("sessionFile")
        return Deleted(
            had_entry=True,
            session_id=sid if isinstance(sid, str) else None,
            session_file=sfile if isinstance(sfile, str) else None,
        )

    async def journal_capture(deleted: Deleted) -> None:
        await ctx.plan("deleted", lambda: deleted, type=Deleted)

    try:
        deleted = await host.store.update(request.agent, mutate, before_write=journal_capture)
    except StoreLocked:
        # A resumed delete already written needs no lock: a busy lock must not turn a done
        # delete into a failed one.
        if prior is None or not _gone(host.store.read(request.agent), request, host):
            raise
        deleted = prior
    return msgspec.to_builtins(deleted)  # type: ignore[no-any-return]


def _gone(doc: StoreDoc, request: RunInput, host: SessionHost) -> bool:
    keys = store_keys(request.key, request.canonical, request.agent, host.config, doc)
    return freshest(doc, keys) is None


async def _prior(ctx: StepContext) -> Deleted | None:
    if not ctx.planned("deleted"):
        return None
    return await ctx.plan("deleted", _never, type=Deleted)


def _never() -> Deleted:
    raise AssertionError("only called when the plan exists")


def _deleted(ctx: StepContext) -> Deleted:
    return msgspec.convert(ctx.results["store_mutation"], Deleted)


async def archive(ctx: StepContext) -> dict[str, Any]:
    """Rename the deleted session's transcript to ``<file>.deleted.<ts>`` (unless kept)."""
    host: SessionHost = ctx.deps
    request, deleted = run_input(ctx), _deleted(ctx)
    if not deleted.had_entry or not request.delete_transcript:
        return {"archived": [], "moves": {}}
    sessions_dir = host.store.sessions_dir(request.agent)

    def make_plan() -> ArchivePlan:
        at = host.now_ms()
        candidates = transcript_candidates(
            sessions_dir, host.transcripts.legacy_dir(), deleted.session_id, deleted.session_file
        )
        moves = [
            (str(p), str(archive_path(p, "deleted", at)))
            for p in candidates
            if host.transcripts.exists(p)
        ]
        return ArchivePlan(at_ms=at, moves=moves)

    plan = await ctx.plan("archive", make_plan, type=ArchivePlan)
    outcomes, failed = apply_moves(host.transcripts.archive, plan.moves, None)
    if failed:
        raise OSError(f"could not archive {'; '.join(failed)}")
    return {"archived": archived(outcomes), "moves": outcomes}


async def unbind(ctx: StepContext) -> dict[str, Any]:
    """Only if something was deleted (the locked read decides, not the snapshot)."""
    if not _deleted(ctx).had_entry:
        return {"unbound": [], "subagent_ended": "nothing deleted"}
    return await unbind_session(ctx, outcome="deleted")
