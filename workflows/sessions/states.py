"""The states reset and delete share, with their outcome tables.

Before the commit: runtime cleanup, ACP cancel, ACP close (a timeout fails UNAVAILABLE
"still active" with nothing persisted changed; an ACP error is recorded and passed). The
commit is tried twice, then fails closed. After it, archive and unbind only roll forward:
retried, then passed.
"""

from __future__ import annotations

from orchestrator import SUCCEED, State, StepFn, fail, retry

from .cleanup import acp_cancel, acp_close, runtime_cleanup

__all__ = ("STILL_ACTIVE", "cleanup_states", "commit_states")

STILL_ACTIVE = "Session {key} is still active; try again in a moment."


def cleanup_states(*, cleanup_timeout: float, acp_timeout: float) -> list[State]:
    still_active = fail("UNAVAILABLE", STILL_ACTIVE)
    return [
        State(
            "runtime_cleanup",
            runtime_cleanup,
            cleanup_timeout,
            on={
                "ok": "acp_cancel",
                "timeout": still_active,
                "error": fail("UNAVAILABLE", "Session {key} cleanup failed: {error}"),
            },
            description="clear queues, stop subagents, abort and await the run, tabs",
        ),
        State(
            "acp_cancel",
            acp_cancel,
            acp_timeout,
            on={"ok": "acp_close", "timeout": still_active, "error": "acp_close"},
            description="cancel the ACP turn (only with ACP metadata)",
        ),
        State(
            "acp_close",
            acp_close,
            acp_timeout,
            on={"ok": "store_mutation", "timeout": still_active, "error": "store_mutation"},
            description="close the ACP runtime (only with ACP metadata)",
        ),
    ]


def commit_states(
    *, store_mutation: StepFn, archive: StepFn, unbind: StepFn, timeout: float
) -> list[State]:
    roll_forward = retry(3, "unbind", backoff=0.2)
    passed = retry(3, SUCCEED, backoff=0.2)
    return [
        State(
            "store_mutation",
            store_mutation,
            timeout,
            on={
                "ok": "archive",
                "timeout": fail("UNAVAILABLE", "Session {key} store is busy; try again."),
                # Once more: an error after the store file was replaced (its directory fsync,
                # the lock's removal) leaves the commit done, and the compare-and-swap of a
                # second attempt sees that and goes on instead of failing a done reset.
                "error": retry(2, fail("UNAVAILABLE", "{error}"), backoff=0.05),
            },
            description="the commit, under the store lock",
        ),
        State(
            "archive",
            archive,
            timeout,
            on={"ok": "unbind", "timeout": roll_forward, "error": roll_forward},
            description="move the old transcript aside (reset: and write the new header)",
        ),
        State(
            "unbind",
            unbind,
            timeout,
            on={"ok": SUCCEED, "timeout": passed, "error": passed},
            description="thread bindings with farewell, then subagent_ended",
        ),
    ]
