"""The entry as a reset or delete first sees it (OpenClaw's R2), taken once per run.

It is read without the store lock, so it may be stale; it drives cleanup, the hook payload
and the unbind decision, while the commit re-reads the store under the lock. It is planned
(journaled) so a resumed run sees the same snapshot.
"""

from __future__ import annotations

from typing import Any

import msgspec

from orchestrator import StepContext

from .keys import store_keys
from .ports import SessionHost
from .store_file import StoreDoc

__all__ = ("RunInput", "Snapshot", "freshest", "run_input", "snapshot")


class RunInput(msgspec.Struct, frozen=True, kw_only=True):
    """What a reset or delete run starts with (its journaled input)."""

    key: str
    canonical: str
    agent: str
    reason: str = "reset"
    command_source: str = ""
    delete_transcript: bool = True
    emit_hooks: bool = True


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    had_entry: bool
    #: The store key the entry was found under (an alias, or the canonical key).
    matched_key: str | None = None
    session_id: str | None = None
    session_file: str | None = None
    has_acp: bool = False
    label: str | None = None
    store_keys: list[str] = []


def run_input(ctx: StepContext) -> RunInput:
    return msgspec.convert(ctx.input, RunInput)


def freshest(doc: StoreDoc, keys: list[str]) -> tuple[str, dict[str, Any]] | None:
    """The entry among ``keys`` with the newest ``updatedAt`` (ties: the earlier key)."""
    best: tuple[str, dict[str, Any]] | None = None
    for key in keys:
        entry = doc.get(key)
        if entry is None:
            continue
        if best is None or _updated(entry) > _updated(best[1]):
            best = (key, entry)
    return best


def _updated(entry: dict[str, Any]) -> float:
    value = entry.get("updatedAt")
    return float(value) if isinstance(value, int | float) else float("-inf")


def take_snapshot(host: SessionHost, request: RunInput) -> Snapshot:
    doc = host.store.read(request.agent)
    keys = store_keys(request.key, request.canonical, request.agent, host.config, doc)
    found = freshest(doc, keys)
    if found is None:
        return Snapshot(had_entry=False, store_keys=keys)
    matched, entry = found
    session_id = entry.get("sessionId")
    session_file = entry.get("sessionFile")
    label = entry.get("label")
    return Snapshot(
        had_entry=True,
        matched_key=matched,
        session_id=session_id if isinstance(session_id, str) else None,
        session_file=session_file if isinstance(session_file, str) else None,
        has_acp=bool(entry.get("acp")),
        label=label if isinstance(label, str) else None,
        store_keys=keys,
    )


async def snapshot(ctx: StepContext) -> Snapshot:
    """This run's snapshot: taken by the first step that needs it, reused after."""
    host: SessionHost = ctx.deps
    request = run_input(ctx)
    return await ctx.plan(
        "snapshot", lambda: take_snapshot(host, request), type=Snapshot, durable=False
    )
