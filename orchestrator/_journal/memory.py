"""The in-memory journal: the same contract as the file journal, nothing on disk."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager

from .framing import check_encodable
from .history import RunHistory, RunIndex
from .keylocks import LocalKeyLocks
from .records import (
    EffectApplied,
    EffectPlanned,
    Record,
    RunFinished,
    RunStarted,
    StepFinished,
)

__all__ = ("MemoryJournal",)

#: The field of each record type that carries values from outside the engine.
_PAYLOAD: dict[type, str] = {
    RunStarted: "input",
    StepFinished: "result",
    EffectPlanned: "value",
    EffectApplied: "detail",
    RunFinished: "result",
}


class MemoryJournal:
    """Keeps records in a list. ``syncs`` counts the durable appends a disk would fsync."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.syncs = 0
        self._index = RunIndex()
        self._locks = LocalKeyLocks()
        self._unsynced = False

    async def append(self, record: Record, *, durable: bool = False) -> None:
        # A record carrying a step's result or a planned value is encoded as the file journal
        # would, so one the journal could not hold fails here too. Other records are always
        # encodable: skipping them keeps the memory journal cheap.
        if getattr(record, _PAYLOAD.get(type(record), ""), None) is not None:
            check_encodable(record)
        self.records.append(record)
        self._index.add(record)
        self._unsynced = True
        if durable:
            await self.sync()

    async def sync(self) -> None:
        if self._unsynced:
            self.syncs += 1
            self._unsynced = False

    def flush(self) -> None:
        return None

    def history(self, run_id: str) -> RunHistory | None:
        return self._index.get(run_id)

    async def load(self, run_id: str) -> RunHistory | None:
        return self._index.get(run_id)

    def runs(self) -> Iterable[RunHistory]:
        return iter(self._index)

    def unfinished(self, key: str | None = None) -> list[RunHistory]:
        return self._index.unfinished(key)

    async def refresh(self) -> None:
        return None

    def lock_key(self, key: str) -> AbstractAsyncContextManager[None]:
        return self._locks.hold(key)

    async def aclose(self) -> None:
        return None
