"""Reliability campaigns (issue: reliability proof). Budgets: CI by default, larger with
``ORCHESTRATOR_SOAK=1`` (``make soak``). Each campaign prints what it covered (run pytest
with ``-s`` to see it; ``make soak`` does)."""

from __future__ import annotations

import os

#: True under ``make soak``: campaigns sweep everything instead of a CI-sized sample.
SOAK = os.environ.get("ORCHESTRATOR_SOAK") == "1"


def budget(ci: int, soak: int) -> int:
    """How many cases a campaign runs: ``ci`` normally, ``soak`` under ``make soak``."""
    return soak if SOAK else ci


def report(campaign: str, **covered: object) -> None:
    """Print one line saying what a campaign covered (points swept, states checked, ...)."""
    details = ", ".join(f"{k.replace('_', ' ')}={v}" for k, v in covered.items())
    print(f"\n[campaign] {campaign}: {details}")
