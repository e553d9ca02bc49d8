"""The steps of a session reset that are its own (hook, commit, archive); see ``spec``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import msgspec

from orchestrator import StepContext

from ..sessions.cleanup import unbind_session
from ..sessions.entry import reset_entry, rewrite_session_file
from ..sessions.keys import store_keys
from ..sessions.paths import resolve_session_file, transcript_candidates
from ..sessions.ports import SessionHost
from ..sessions.snapshot import RunInput, Snapshot, freshest, run_input, snapshot
from ..sessions.store_file import StoreConflict, StoreDoc
from ..sessions.store_lock import StoreLocked
from ..sessions.transcripts import apply_moves, archive_path, archived

__all__ = ("ResetPlan", "archive", "hook_fired", "store_mutation", "unbind")


class ResetPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Every value the commit and what follows depend on, journaled before the commit."""

    new_session_id: str
    expected_old_id: str | None
    session_file: str
    at_ms: int
    #: Exact ``[src, dst]`` moves, decided once (a resume never re-derives them).
    archive: list[tuple[str, str]] = []


async def hook_fired(ctx: StepContext) -> str:
    """The internal ``command:<new|reset>`` hook, at most once, before anything destructive."""
    host: SessionHost = ctx.deps
    request, snap = run_input(ctx), await snapshot(ctx)
    action = "new" if request.reason == "new" else "reset"
    if not host.hooks.has_command_hooks(action):
        return "no handlers"
    if ctx.planned("command_hook"):
        return "fired before a crash; not repeated"
    await ctx.plan("command_hook", lambda: action)
    context = {
        "sessionEntry": _hook_entry(snap),
        "previousSessionEntry": _hook_entry(snap),
        "commandSource": request.command_source,
    }
    await host.hooks.command(action, request.canonical, context)
    return "fired"


def _hook_entry(snap: Snapshot) -> dict[str, Any] | None:
    if not snap.had_entry:
        return None
    return {"sessionId": snap.session_id, "sessionFile": snap.session_file, "label": snap.label}


def _make_plan(host: SessionHost, ctx: StepContext, snap: Snapshot) -> ResetPlan:
    request = run_input(ctx)
    sessions_dir = host.store.sessions_dir(request.agent)
    new_id = str(uuid.uuid4())
    at = host.now_ms()
    # A stored sessionFile that is not a plain file of the sessions directory is not followed.
    old_file = snap.session_file
    if old_file is not None and resolve_session_file(sessions_dir, old_file) is None:
        old_file = None
    name = rewrite_session_file(old_file, snap.session_id, new_id)
    session_file = os.path.join(os.path.abspath(sessions_dir), name)
    moves = [
        (str(src), str(archive_path(src, "reset", at)))
        for src in transcript_candidates(
            sessions_dir, host.transcripts.legacy_dir(), snap.session_id, snap.session_file
        )
        if host.transcripts.exists(src)
    ]
    return ResetPlan(
        new_session_id=new_id,
        expected_old_id=snap.session_id,
        session_file=session_file,
        at_ms=at,
        archive=moves,
    )


async def store_mutation(ctx: StepContext) -> dict[str, Any]:
    """The commit: a compare-and-swap of the entry under OpenClaw's store lock."""
    host: SessionHost = ctx.deps
    request, snap = run_input(ctx), await snapshot(ctx)
    plan = await ctx.plan("commit", lambda: _make_plan(host, ctx, snap), type=ResetPlan)
    default_model = host.config.default_model(request.agent)

    def mutate(doc: StoreDoc) -> dict[str, Any]:
        keys = store_keys(request.key, request.canonical, request.agent, host.config, doc)
        found = freshest(doc, keys)
        current = found[1] if found else None
        current_id = current.get("sessionId") if current else None
        if current_id == plan.new_session_id:
            return {"entry": current, "applied": "already"}
        if current_id != plan.expected_old_id:
            raise StoreConflict(
                f"session {request.canonical} changed while it was being reset (expected "
                f"session id {plan.expected_old_id}, found {current_id}); nothing was written"
            )
        entry = reset_entry(
            current,
            session_id=plan.new_session_id,
            session_file=plan.session_file,
            updated_at=plan.at_ms,
            default_model=default_model,
        )
        doc.set(request.canonical, entry)
        for key in keys:
            if key != request.canonical:
                doc.delete(key)
        return {"entry": entry, "applied": "now"}

    try:
        result = await host.store.update(request.agent, mutate)
    except StoreLocked:
        # A resumed commit that is already in the store needs no lock: a busy lock must not
        # turn a done reset into a failed one (found by the power-loss campaign).
        done = _applied(host.store.read(request.agent), request, host, plan.new_session_id)
        if done is None:
            raise
        result = done
    return {**result, "old_session_id": plan.expected_old_id}


def _applied(
    doc: StoreDoc, request: RunInput, host: SessionHost, new_session_id: str
) -> dict[str, Any] | None:
    keys = store_keys(request.key, request.canonical, request.agent, host.config, doc)
    found = freshest(doc, keys)
    if found is not None and found[1].get("sessionId") == new_session_id:
        return {"entry": found[1], "applied": "already"}
    return None


async def archive(ctx: StepContext) -> dict[str, Any]:
    """Move the old transcript aside (exact planned paths), then write the new header."""
    host: SessionHost = ctx.deps
    plan = await ctx.plan("commit", _missing_plan, type=ResetPlan)
    outcomes, failed = apply_moves(host.transcripts.archive, plan.archive, plan.new_session_id)
    # The header goes in even if a move failed: a reset must never leave no transcript (#46250).
    header = host.transcripts.write_header(Path(plan.session_file), plan.new_session_id, plan.at_ms)
    if failed:
        raise OSError(f"could not archive {'; '.join(failed)} (the new transcript is in place)")
    return {"archived": archived(outcomes), "moves": outcomes, "header_written": header}


def _missing_plan() -> ResetPlan:
    raise AssertionError("archive runs after store_mutation, which plans the commit")


async def unbind(ctx: StepContext) -> dict[str, Any]:
    """Only for a session that existed before the reset (R9)."""
    snap = await snapshot(ctx)
    if not snap.had_entry:
        return {"unbound": [], "subagent_ended": "no previous entry"}
    return await unbind_session(ctx, outcome="reset")
