"""``session_reset``: OpenClaw's gateway session reset as a journaled state machine.

hook_fired -> runtime_cleanup -> acp_cancel -> acp_close -> store_mutation -> archive -> unbind

Before the commit (``store_mutation``) every step is safe to repeat and a timeout of the
runtime or ACP steps fails the reset UNAVAILABLE with nothing persisted changed. From the commit
on, the run only rolls forward: archive (with the new transcript header) and unbind retry, and
a step that still fails is recorded and passed (the new session is already in place).
"""

from __future__ import annotations

from orchestrator import SUCCEED, State, WorkflowSpec, fail, retry

from ..sessions.cleanup import acp_cancel, acp_close, runtime_cleanup
from .steps import archive, hook_fired, store_mutation, unbind

__all__ = ("SESSION_RESET", "make_session_reset")

STILL_ACTIVE = "Session {key} is still active; try again in a moment."


def make_session_reset(
    *,
    hook_timeout: float = 30.0,
    cleanup_timeout: float = 15.0,
    acp_timeout: float = 15.0,
    commit_timeout: float = 30.0,
) -> WorkflowSpec:
    """The reset workflow; the timeouts change no transition (nor the fingerprint)."""
    roll_forward = retry(3, "unbind", backoff=0.2)
    return WorkflowSpec(
        "session_reset",
        [
            State(
                "hook_fired",
                hook_fired,
                hook_timeout,
                on={
                    "ok": "runtime_cleanup",
                    "timeout": "runtime_cleanup",
                    "error": "runtime_cleanup",
                },
                description="internal hook command:new|reset; never fails the reset",
            ),
            State(
                "runtime_cleanup",
                runtime_cleanup,
                cleanup_timeout,
                on={
                    "ok": "acp_cancel",
                    "timeout": fail("UNAVAILABLE", STILL_ACTIVE),
                    "error": fail("UNAVAILABLE", "Session {key} cleanup failed: {error}"),
                },
                description="clear queues, stop subagents, abort and await the run, tabs",
            ),
            State(
                "acp_cancel",
                acp_cancel,
                acp_timeout,
                on={
                    "ok": "acp_close",
                    "timeout": fail("UNAVAILABLE", STILL_ACTIVE),
                    "error": "acp_close",
                },
                description="cancel the ACP turn (only with ACP metadata)",
            ),
            State(
                "acp_close",
                acp_close,
                acp_timeout,
                on={
                    "ok": "store_mutation",
                    "timeout": fail("UNAVAILABLE", STILL_ACTIVE),
                    "error": "store_mutation",
                },
                description="close the ACP runtime (only with ACP metadata)",
            ),
            State(
                "store_mutation",
                store_mutation,
                commit_timeout,
                on={
                    "ok": "archive",
                    "timeout": fail("UNAVAILABLE", "Session {key} store is busy; try again."),
                    "error": fail("UNAVAILABLE", "{error}"),
                },
                description="the commit: compare-and-swap of the entry under the store lock",
            ),
            State(
                "archive",
                archive,
                commit_timeout,
                on={"ok": "unbind", "timeout": roll_forward, "error": roll_forward},
                description="move the old transcript aside, write the new header",
            ),
            State(
                "unbind",
                unbind,
                commit_timeout,
                on={
                    "ok": SUCCEED,
                    "timeout": retry(3, SUCCEED, backoff=0.2),
                    "error": retry(3, SUCCEED, backoff=0.2),
                },
                description="thread bindings with farewell, then subagent_ended",
            ),
        ],
        description="OpenClaw gateway session reset (performGatewaySessionReset)",
    )


SESSION_RESET = make_session_reset()
