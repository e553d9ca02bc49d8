"""Simulated crashes for the model-based campaign: a crash switch, a journal that knows what a
kill or a power loss would keep, and a memory host whose effects are crash points too.

A crash is simulated *where it happens*: the switch counts crash points (after every journal
append, after every host effect) and, at the armed one, takes what survives and raises
``Crash`` through everything that is running. What survives is the host's state at that
instant (the memory host's effects stand for the local host's, which are fsynced) and the
journal records that kind of crash keeps:

- ``journal``: every record appended (the memory journal's own contract);
- ``kill``: records up to the last flush or durable append (a SIGKILL loses the pending
  batch of the file journal: records written before a step's code runs, or with a durable
  record, survive);
- ``power``: records up to the last durable append (only fsynced records survive).

Cutting the journal *after* the fact while keeping the host's final state would pair a
journal with effects its records never planned (a crash cannot lose a durable plan and keep
the effect made after it), so the switch never does that.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from orchestrator import MemoryJournal, Record, RunResumed
from workflows.sessions.adapters.memory import MemoryHost
from workflows.sessions.store_file import StoreDoc

__all__ = (
    "KINDS",
    "Crash",
    "CrashJournal",
    "CrashKind",
    "CrashSwitch",
    "HostState",
    "SharedIds",
    "instrument",
)

T = TypeVar("T")
CrashKind = Literal["journal", "kill", "power"]
KINDS: tuple[CrashKind, ...] = ("journal", "kill", "power")


class Crash(BaseException):
    """The simulated process died here (a BaseException: no step may catch it as an error)."""


@dataclass
class HostState:
    """Everything of a memory host that would outlive its process."""

    store: dict[str, bytes]
    transcripts: dict[Path, bytes]
    threads: dict[str, list[str]]
    farewells: list[tuple[str, str]]
    events: list[tuple[str, Any]]

    @classmethod
    def capture(cls, host: MemoryHost) -> HostState:
        return cls(
            store=dict(host.store.files),
            transcripts=dict(host.transcripts.files),
            threads=copy.deepcopy(host.bindings.threads),
            farewells=list(host.bindings.farewells),
            events=copy.deepcopy(host.hooks.events),
        )

    def restore(self, host: MemoryHost) -> None:
        host.store.files = dict(self.store)
        host.transcripts.files = dict(self.transcripts)
        host.bindings.threads = copy.deepcopy(self.threads)
        host.bindings.farewells = list(self.farewells)
        host.hooks.events = copy.deepcopy(self.events)


class CrashSwitch:
    """Counts crash points; at the armed one, calls ``on_crash`` and raises ``Crash``.

    Once crashed, every later crash point raises too (the process is gone: nothing it still
    had in flight may append or act).
    """

    def __init__(self) -> None:
        self.armed_at: int | None = None
        self.reached = 0
        self.crashed = False
        self.where = ""
        #: ``run_resumed`` records appended since arming: a crash after one is a crash
        #: during recovery.
        self.resumes = 0
        self.on_crash: Callable[[], None] = lambda: None

    def arm(self, at: int | None) -> None:
        self.armed_at, self.reached, self.crashed, self.where, self.resumes = at, 0, False, "", 0

    def point(self, name: str) -> None:
        if self.crashed:
            raise Crash(f"after the crash at {self.where}")
        if self.armed_at is None:
            return
        self.reached += 1
        if self.reached == self.armed_at:
            self.crashed, self.where = True, name
            self.on_crash()
            raise Crash(name)


class CrashJournal(MemoryJournal):
    """A memory journal that is a crash point after each append and knows what survives."""

    def __init__(self, switch: CrashSwitch) -> None:
        super().__init__()
        self.switch = switch
        #: Records a kill keeps (written: flushed, or with a durable record).
        self.flushed = 0
        #: Records a power loss keeps (fsynced with a durable record).
        self.synced = 0

    async def append(self, record: Record, *, durable: bool = False) -> None:
        if self.switch.crashed:
            raise Crash("the journal's process is gone")
        await super().append(record, durable=durable)
        if durable:
            self.flushed = self.synced = len(self.records)
        if isinstance(record, RunResumed):
            self.switch.resumes += 1
        self.switch.point(f"journal.{type(record).__name__}")

    def flush(self) -> None:
        if not self.switch.crashed:
            self.flushed = len(self.records)

    def surviving(self, kind: CrashKind) -> list[Record]:
        keep = {"journal": len(self.records), "kill": self.flushed, "power": self.synced}[kind]
        return self.records[:keep]

    @classmethod
    async def reopened(cls, switch: CrashSwitch, records: list[Record]) -> CrashJournal:
        """The journal a restarted process reads: ``records``, all of them on disk."""
        journal = cls(switch)
        for record in records:
            await MemoryJournal.append(journal, record)
        journal.flushed = journal.synced = len(records)
        return journal


class SharedIds:
    """Run ids unique across every engine of one example (``run-0001``, ...)."""

    def __init__(self) -> None:
        self.count = 0

    def new_run_id(self) -> str:
        self.count += 1
        return f"run-{self.count:04d}"


def instrument(host: MemoryHost, switch: CrashSwitch) -> None:
    """Make every persistent effect of ``host`` a crash point, just after it happens."""
    update = host.store.update

    async def store_update(
        agent_id: str,
        mutate: Callable[[StoreDoc], T],
        *,
        before_write: Callable[[T], Awaitable[None]] | None = None,
    ) -> T:
        result = await update(agent_id, mutate, before_write=before_write)
        switch.point("host.store.update")
        return result

    archive = host.transcripts.archive

    def transcripts_archive(src: Path, dst: Path, new_session_id: str | None) -> str:
        outcome = archive(src, dst, new_session_id)
        switch.point("host.transcripts.archive")
        return outcome

    write_header = host.transcripts.write_header

    def transcripts_write_header(path: Path, session_id: str, at_ms: int) -> bool:
        created = write_header(path, session_id, at_ms)
        switch.point("host.transcripts.write_header")
        return created

    unbind = host.bindings.unbind

    async def bindings_unbind(key: str, *, kind: str, reason: str, farewell_id: str) -> list[str]:
        removed = await unbind(key, kind=kind, reason=reason, farewell_id=farewell_id)
        switch.point("host.bindings.unbind")
        return removed

    command = host.hooks.command

    async def hooks_command(action: str, key: str, context: dict[str, Any]) -> None:
        await command(action, key, context)
        switch.point("host.hooks.command")

    subagent_ended = host.hooks.subagent_ended

    async def hooks_subagent_ended(event: dict[str, Any]) -> None:
        await subagent_ended(event)
        switch.point("host.hooks.subagent_ended")

    host.store.update = store_update  # type: ignore[method-assign]
    host.transcripts.archive = transcripts_archive  # type: ignore[method-assign]
    host.transcripts.write_header = transcripts_write_header  # type: ignore[method-assign]
    host.bindings.unbind = bindings_unbind  # type: ignore[method-assign]
    host.hooks.command = hooks_command  # type: ignore[method-assign]
    host.hooks.subagent_ended = hooks_subagent_ended  # type: ignore[method-assign]
