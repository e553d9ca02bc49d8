"""``session_delete``: OpenClaw's ``sessions.delete`` as a journaled state machine.

runtime_cleanup -> acp_cancel -> acp_close -> store_mutation -> archive -> unbind

No command hook. The service refuses the main session and webchat callers before a run
starts. The id deleted is captured inside the locked mutation and journaled before the store
is written, so the archive always names the transcript of the entry actually removed.
"""

from __future__ import annotations

from orchestrator import SUCCEED, State, WorkflowSpec, fail, retry

from ..sessions.cleanup import acp_cancel, acp_close, runtime_cleanup
from .steps import archive, store_mutation, unbind

__all__ = ("SESSION_DELETE", "make_session_delete")

STILL_ACTIVE = "Session {key} is still active; try again in a moment."


def make_session_delete(
    *, cleanup_timeout: float = 15.0, acp_timeout: float = 15.0, commit_timeout: float = 30.0
) -> WorkflowSpec:
    roll_forward = retry(3, "unbind", backoff=0.2)
    return WorkflowSpec(
        "session_delete",
        [
            State(
                "runtime_cleanup",
                runtime_cleanup,
                cleanup_timeout,
                on={
                    "ok": "acp_cancel",
                    "timeout": fail("UNAVAILABLE", STILL_ACTIVE),
                    "error": fail("UNAVAILABLE", "Session {key} cleanup failed: {error}"),
                },
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
            ),
            State(
                "archive",
                archive,
                commit_timeout,
                on={"ok": "unbind", "timeout": roll_forward, "error": roll_forward},
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
            ),
        ],
        description="OpenClaw gateway session delete (sessions.delete)",
    )


SESSION_DELETE = make_session_delete()
