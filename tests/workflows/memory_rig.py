"""Shared rig for the memory-host workflow tests: an engine, a service and a seeded host."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from orchestrator import (
    EffectPlanned,
    Engine,
    MemoryJournal,
    RunFinished,
    StepFinished,
    WorkflowSpec,
)
from orchestrator.testing import FakeClock
from workflows.sessions.adapters.memory import MemoryHost
from workflows.sessions.service import SessionService

SESSIONS = Path("/memory/agents/main/sessions")
KEY = "discord:group:dev"
CANONICAL = "agent:main:discord:group:dev"
STILL_ACTIVE = f"Session {KEY} is still active; try again in a moment."
SHORT = 0.05  # seconds; only for the paths where an operation hangs until its timeout


@dataclass
class Rig:
    host: MemoryHost
    journal: MemoryJournal
    engine: Engine
    service: SessionService

    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.journal.records if isinstance(r, RunFinished)]

    def records(self, run_id: str) -> list[Any]:
        history = self.journal.history(run_id)
        assert history is not None
        return list(history.records)

    def path(self, run_id: str) -> list[tuple[str, str]]:
        """(step, outcome) of every finished step attempt, in order."""
        return [(r.step, r.outcome) for r in self.records(run_id) if isinstance(r, StepFinished)]

    def finished(self, run_id: str, step: str) -> list[StepFinished]:
        return [r for r in self.records(run_id) if isinstance(r, StepFinished) and r.step == step]

    def planned(self, run_id: str, name: str) -> list[Any]:
        return [
            r.value for r in self.records(run_id) if isinstance(r, EffectPlanned) and r.name == name
        ]

    def end(self, run_id: str) -> RunFinished:
        last = self.records(run_id)[-1]
        assert isinstance(last, RunFinished)
        return last

    def store_bytes(self) -> bytes:
        return self.host.store.files["main"]


def make_rig(spec: Callable[..., WorkflowSpec] | None = None, **timeouts: float) -> Rig:
    """A rig; with ``timeouts``, ``spec(**timeouts)`` replaces the registered default."""
    host = MemoryHost()
    journal = MemoryJournal()
    engine = Engine(journal, clock=FakeClock())
    service = SessionService(engine, host)
    if timeouts:
        assert spec is not None
        engine.register(spec(**timeouts), host)
    return Rig(host, journal, engine, service)


def transcript(session_id: str, *lines: str) -> bytes:
    header = {"type": "session", "version": 3, "id": session_id, "timestamp": "t", "cwd": "/"}
    body = [orjson.dumps(header)] + [orjson.dumps({"type": "message", "text": t}) for t in lines]
    return b"\n".join(body) + b"\n"


def seed(
    host: MemoryHost, key: str, *, session_id: str | None = None, **fields: Any
) -> tuple[str, Path]:
    """Store an entry under ``key`` (other entries kept) with its transcript; (id, path)."""
    sid = session_id or str(uuid.uuid4())
    path = SESSIONS / f"{sid}.jsonl"
    host.transcripts.files[path] = transcript(sid, f"hello from {key}", "bye")
    store = host.store.entries()
    store[key] = {"sessionId": sid, "sessionFile": str(path), "updatedAt": 1_700_000_000_000}
    store[key].update(fields)
    host.store.put("main", store)
    return sid, path


def full_setup(rig: Rig) -> tuple[str, Path]:
    """An entry that makes every step do real work: ACP meta, hooks, thread bindings."""
    rig.host.hooks.command_handlers = True
    rig.host.hooks.subagent_handlers = True
    rig.host.bindings.threads[CANONICAL] = ["thread-1", "thread-2"]
    seed(rig.host, "agent:main:other", label="other")
    return seed(rig.host, CANONICAL, label="dev", acp={"backend": "acpx", "state": "idle"})


def fail_reply(reply: dict[str, Any], message: str) -> None:
    assert reply["ok"] is False
    assert reply["error"] == {"code": "UNAVAILABLE", "message": message}
