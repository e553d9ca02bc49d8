"""Commands that read the journal: ``runs list``, ``runs show``, ``audit export``."""

from __future__ import annotations

from ._registry import Command

__all__ = ("view_commands",)


def view_commands() -> list[Command]:
    return []
