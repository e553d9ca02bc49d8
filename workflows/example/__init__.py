"""A small example workflow: publish a note, exactly once, whatever crashes.

It shows the engine's pieces on something simpler than a session reset: a planned id, an
effect state (atomic file write), an at-most-once notification with retries, and a
best-effort cleanup. ``orchestrator demo`` runs it until the session workflows replace it.
"""

from __future__ import annotations

from .plugin import plugin
from .spec import PUBLISH_NOTE, NoteHost

__all__ = ("PUBLISH_NOTE", "NoteHost", "plugin")
