"""Example runs drawn into ``diagrams/``: deterministic (memory host, fake clock, fixed ids)."""

from __future__ import annotations

from orchestrator import Engine, MemoryJournal, RunHistory
from orchestrator.testing import CountingIds, FakeClock

from .adapters.memory import MemoryHost
from .service import SessionService

__all__ = ("reset_unavailable",)


async def reset_unavailable() -> RunHistory:
    """A reset of an ACP session whose cancel times out: it fails UNAVAILABLE."""
    host = MemoryHost()
    host.store.put(
        "main",
        {
            "agent:main:main": {
                "sessionId": "0b6f0c58-8f4e-4a0e-9d6b-0c3c7b4f1a2e",
                "updatedAt": 1_780_000_000_000,
                "acp": {"backend": "acpx"},
            },
        },
    )
    journal = MemoryJournal()
    service = SessionService(Engine(journal, clock=FakeClock(), ids=CountingIds("example-")), host)
    reply = await service.reset(
        "main", command_source="diagram-example", force={"acp_cancel": "timeout"}
    )
    history = journal.history(reply["run_id"])
    assert history is not None and not reply["ok"]
    return history
