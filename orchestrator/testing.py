"""Test kit for hosts and workflow authors: a fake clock, predictable ids, the memory journal."""

from __future__ import annotations

import anyio

from ._journal.memory import MemoryJournal

__all__ = ("CountingIds", "FakeClock", "MemoryJournal")


class FakeClock:
    """A clock that only moves when told, or when something sleeps on it.

    ``sleep`` advances the clock instead of waiting (a checkpoint still happens), so retry
    backoff costs no real time; ``sleeps`` lists what was asked for.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._mono = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await anyio.lowlevel.checkpoint()


class CountingIds:
    """Run ids ``run-0001``, ``run-0002``, ... (prefix configurable)."""

    def __init__(self, prefix: str = "run-") -> None:
        self.prefix = prefix
        self.count = 0

    def new_run_id(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:04d}"
