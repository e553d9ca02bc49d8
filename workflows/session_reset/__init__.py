"""The session reset workflow."""

from __future__ import annotations

from .spec import SESSION_RESET, make_session_reset

__all__ = ("SESSION_RESET", "make_session_reset")
