"""Steps reset and delete share: quiesce the runtime (R4), cancel and close ACP (R5), unbind.

These run before the commit and are safe to repeat, with one exception handled here: the
``subagent_ended`` hook, which records its intent first so a resumed run does not fire it
again (at most once).
"""

from __future__ import annotations

from typing import Any

import anyio

from orchestrator import StepContext

from .keys import is_subagent_key
from .ports import SessionHost
from .snapshot import run_input, snapshot

__all__ = ("acp_cancel", "acp_close", "cleanup_reason", "runtime_cleanup", "unbind_session")


def cleanup_reason(ctx: StepContext) -> str:
    return "session-delete" if ctx.workflow == "session_delete" else "session-reset"


async def runtime_cleanup(ctx: StepContext) -> dict[str, Any]:
    """Clear queues, stop subagents, abort the run and wait for it to end, close tabs.

    Waiting is bounded by the state's timeout (15 s): a run still going then makes the
    outcome ``timeout`` (UNAVAILABLE "still active").
    """
    host: SessionHost = ctx.deps
    request, snap = run_input(ctx), await snapshot(ctx)
    keys = list(dict.fromkeys([*snap.store_keys, request.canonical]))
    queue_keys = keys + ([snap.session_id] if snap.session_id else [])
    dropped = await host.runtime.clear_queues(queue_keys)
    stopped = await host.runtime.stop_subagents(request.canonical)
    aborted = False
    try:
        if snap.session_id:
            aborted = await host.runtime.abort_run(snap.session_id)
            await host.runtime.wait_run_end(snap.session_id)
    finally:
        # Whatever the outcome, even when the timeout cancels the wait.
        with anyio.CancelScope(shield=True):
            await host.runtime.clear_bootstrap(request.canonical)
    tab_keys = [request.key, *keys, *([snap.session_id] if snap.session_id else [])]
    closed: int | str
    try:
        closed = await host.runtime.close_browser_tabs(list(dict.fromkeys(tab_keys)))
    except Exception as exc:  # tabs are closed at most once; a failure is only recorded
        closed = f"error: {type(exc).__name__}: {exc}"
    return {
        "queued_dropped": dropped,
        "subagents_stopped": stopped,
        "run_aborted": aborted,
        "tabs_closed": closed,
    }


def _acp_key(ctx: StepContext, matched: str | None) -> str:
    request = run_input(ctx)
    return matched or request.canonical or request.key


async def acp_cancel(ctx: StepContext) -> str:
    host: SessionHost = ctx.deps
    snap = await snapshot(ctx)
    if not snap.has_acp:
        return "skipped: no ACP session"
    await host.acp.cancel(_acp_key(ctx, snap.matched_key), cleanup_reason(ctx))
    return "cancelled"


async def acp_close(ctx: StepContext) -> str:
    host: SessionHost = ctx.deps
    snap = await snapshot(ctx)
    if not snap.has_acp:
        return "skipped: no ACP session"
    await host.acp.close(_acp_key(ctx, snap.matched_key), cleanup_reason(ctx))
    return "closed"


async def unbind_session(ctx: StepContext, *, outcome: str) -> dict[str, Any]:
    """Release thread bindings (farewell at most once), then fire ``subagent_ended`` once."""
    host: SessionHost = ctx.deps
    request = run_input(ctx)
    kind = "subagent" if is_subagent_key(request.canonical) else "acp"
    reason = cleanup_reason(ctx)
    removed = await host.bindings.unbind(
        request.canonical, kind=kind, reason=reason, farewell_id=ctx.run_id
    )
    ctx.failpoint("unbound")
    hook = "not registered"
    if not request.emit_hooks:
        hook = "disabled"
    elif host.hooks.has_subagent_ended():
        if ctx.planned("subagent_ended"):
            hook = "fired before a crash; not repeated"
        else:
            event = {
                "targetSessionKey": request.canonical,
                "targetKind": kind,
                "reason": reason,
                "sendFarewell": True,
                "outcome": outcome,
            }
            await ctx.plan("subagent_ended", lambda: event)
            await host.hooks.subagent_ended(event)
            hook = "fired"
    return {"unbound": removed, "subagent_ended": hook}
