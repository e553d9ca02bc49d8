"""``session_reset``: OpenClaw's gateway session reset as a journaled state machine.

hook_fired -> runtime_cleanup -> acp_cancel -> acp_close -> store_mutation -> archive -> unbind

The command hook never fails a reset (a timeout or an error is recorded and passed). The
shared states' tables are in ``workflows.sessions.states``.
"""

from __future__ import annotations

from orchestrator import State, WorkflowSpec

from ..sessions.states import cleanup_states, commit_states
from .steps import archive, hook_fired, store_mutation, unbind

__all__ = ("SESSION_RESET", "make_session_reset")


def make_session_reset(
    *,
    hook_timeout: float = 30.0,
    cleanup_timeout: float = 15.0,
    acp_timeout: float = 15.0,
    commit_timeout: float = 30.0,
) -> WorkflowSpec:
    """The reset workflow; the timeouts change no transition (nor the fingerprint)."""
    go_on = "runtime_cleanup"
    hook = State(
        "hook_fired",
        hook_fired,
        hook_timeout,
        on={"ok": go_on, "timeout": go_on, "error": go_on},
        description="internal hook command:new|reset; never fails the reset",
    )
    return WorkflowSpec(
        "session_reset",
        [
            hook,
            *cleanup_states(cleanup_timeout=cleanup_timeout, acp_timeout=acp_timeout),
            *commit_states(
                store_mutation=store_mutation,
                archive=archive,
                unbind=unbind,
                timeout=commit_timeout,
            ),
        ],
        description="OpenClaw gateway session reset (performGatewaySessionReset)",
    )


SESSION_RESET = make_session_reset()
