"""``orchestrator journal verify``: check a state directory's journal, and repair a torn tail."""

from __future__ import annotations

from ._registry import Command

__all__ = ("journal_commands",)


def journal_commands() -> list[Command]:
    return []
