"""The small interfaces the engine depends on. Adapters live one per module."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ._journal.history import RunHistory
from ._journal.records import Record

__all__ = ("Clock", "IdFactory", "Journal")


class Clock(Protocol):
    """Time, injected so tests control it."""

    def now(self) -> float:
        """Wall-clock time, seconds since the epoch (UTC): what records carry."""
        ...

    def monotonic(self) -> float:
        """A clock for durations."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait (retry backoff)."""
        ...


class IdFactory(Protocol):
    def new_run_id(self) -> str: ...


class Journal(Protocol):
    """Append-only storage of run records, with an index of runs and per-key exclusion.

    ``append(record, durable=True)`` returns once the record (and everything appended before
    it) survives power loss. ``durable=False`` promises nothing on its own: the record is
    written with the next durable one or the next ``flush``, so a crash may lose it but never
    leaves a gap before a durable record.
    """

    async def append(self, record: Record, *, durable: bool = False) -> None: ...

    async def sync(self) -> None:
        """Make everything appended so far durable."""
        ...

    def flush(self) -> None:
        """Hand pending records to the operating system (no fsync): they then survive the
        process being killed and other processes can read them. The runner calls this
        before a step's code runs, so an attempt cut short by a crash stays on record."""
        ...

    def history(self, run_id: str) -> RunHistory | None: ...

    async def load(self, run_id: str) -> RunHistory | None:
        """The run's history as the journal has it now, read afresh where others write too.
        Called with the run's key held (an idempotent start checks its run id)."""
        ...

    def runs(self) -> Iterable[RunHistory]: ...

    def unfinished(self, key: str | None = None) -> list[RunHistory]: ...

    async def refresh(self) -> None:
        """Read what other processes appended since the last look."""
        ...

    def lock_key(self, key: str) -> AbstractAsyncContextManager[None]:
        """Hold ``key`` exclusively (in this process and, where supported, across processes).

        On entry the index holds every record of ``key``'s runs that earlier holders wrote,
        so an unfinished run of the key is seen (and resumed) before a new one starts.
        """
        ...

    async def aclose(self) -> None: ...
