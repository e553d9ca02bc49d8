"""The session delete workflow."""

from __future__ import annotations

from .spec import SESSION_DELETE, make_session_delete

__all__ = ("SESSION_DELETE", "make_session_delete")
