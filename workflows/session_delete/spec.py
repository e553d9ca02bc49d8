"""``session_delete``: OpenClaw's ``sessions.delete`` as a journaled state machine.

runtime_cleanup -> acp_cancel -> acp_close -> store_mutation -> archive -> unbind

No command hook. The service refuses the main session and webchat callers before a run
starts. The id deleted is captured inside the locked mutation and journaled before the store
is written, so the archive always names the transcript of the entry actually removed. The
states' tables are in ``workflows.sessions.states``.
"""

from __future__ import annotations

from orchestrator import WorkflowSpec

from ..sessions.states import cleanup_states, commit_states
from .steps import archive, store_mutation, unbind

__all__ = ("SESSION_DELETE", "make_session_delete")


def make_session_delete(
    *, cleanup_timeout: float = 15.0, acp_timeout: float = 15.0, commit_timeout: float = 30.0
) -> WorkflowSpec:
    return WorkflowSpec(
        "session_delete",
        [
            *cleanup_states(cleanup_timeout=cleanup_timeout, acp_timeout=acp_timeout),
            *commit_states(
                store_mutation=store_mutation,
                archive=archive,
                unbind=unbind,
                timeout=commit_timeout,
            ),
        ],
        description="OpenClaw gateway session delete (sessions.delete)",
    )


SESSION_DELETE = make_session_delete()
