"""``orchestrator diagram``: definitions and single runs drawn from the decision table."""

from __future__ import annotations

from ._registry import Command

__all__ = ("diagram_commands",)


def diagram_commands() -> list[Command]:
    return []
