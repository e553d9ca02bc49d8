"""A run's records in order, and what they say: where the run stands, what it planned."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import JournalCorrupt
from .records import (
    EffectApplied,
    EffectPlanned,
    ErrorInfo,
    Record,
    RunFinished,
    RunResumed,
    RunStarted,
    StepFinished,
    StepStarted,
)

__all__ = ("RunHistory", "RunIndex")


@dataclass(slots=True, eq=False)
class RunHistory:
    """Every record of one run, ordered by ``seq``."""

    run_id: str
    records: list[Record] = field(default_factory=list)
    #: Where the run's first record was read from (for error messages); None if in memory.
    source: Path | None = None
    _sorted: bool = True

    def add(self, record: Record) -> None:
        if self.records and record.seq <= self.records[-1].seq:
            self._sorted = False
        self.records.append(record)

    def settle(self) -> None:
        """Order records read from several files, and check there is no gap or duplicate."""
        if not self._sorted:
            self.records.sort(key=lambda r: r.seq)
            self._sorted = True
        for expected, record in enumerate(self.records):
            if record.seq != expected:
                what = "duplicate" if record.seq < expected else "missing"
                raise JournalCorrupt(
                    self.source or Path("<memory>"),
                    -1,
                    f"run {self.run_id}: record {min(record.seq, expected)} {what}",
                )
        if self.records and not isinstance(self.records[0], RunStarted):
            raise JournalCorrupt(
                self.source or Path("<memory>"), -1, f"run {self.run_id} has no run_started record"
            )

    @property
    def started(self) -> RunStarted:
        first = self.records[0]
        assert isinstance(first, RunStarted)
        return first

    @property
    def finished(self) -> RunFinished | None:
        last = self.records[-1]
        return last if isinstance(last, RunFinished) else None

    @property
    def next_seq(self) -> int:
        return self.records[-1].seq + 1 if self.records else 0

    @property
    def fingerprint(self) -> str:
        """The definition version the run now follows (changes only by explicit migration)."""
        for record in reversed(self.records):
            if isinstance(record, RunStarted | RunResumed):
                return record.fingerprint
        raise AssertionError("settled histories start with run_started")

    def steps(self) -> Iterator[StepStarted | StepFinished]:
        for record in self.records:
            if isinstance(record, StepStarted | StepFinished):
                yield record

    def plans(self) -> dict[str, Any]:
        return {r.name: r.value for r in self.records if isinstance(r, EffectPlanned)}

    def applied(self) -> dict[str, Any]:
        return {r.name: r.detail for r in self.records if isinstance(r, EffectApplied)}

    def last_error(self) -> ErrorInfo | None:
        """The error of the last finished step attempt, if it had one."""
        for record in reversed(self.records):
            if isinstance(record, StepFinished):
                return record.error
        return None

    def results(self) -> dict[str, Any]:
        """The result of each state's last ``ok`` attempt."""
        return {
            r.step: r.result
            for r in self.records
            if isinstance(r, StepFinished) and r.outcome == "ok"
        }


class RunIndex:
    """Run histories by run id, and the unfinished ones by key."""

    def __init__(self) -> None:
        self._runs: dict[str, RunHistory] = {}
        # Run ids by key, pruned lazily of finished runs: finding a key's open runs must not
        # cost a walk over every run a long-lived host has seen.
        self._by_key: dict[str, set[str]] = {}

    def add(self, record: Record, source: Path | None = None) -> RunHistory:
        history = self._runs.get(record.run_id)
        if history is None:
            history = self._runs[record.run_id] = RunHistory(record.run_id, source=source)
        history.add(record)
        if isinstance(record, RunStarted):
            self._by_key.setdefault(record.key, set()).add(record.run_id)
        return history

    def settle(self) -> None:
        for history in self._runs.values():
            history.settle()

    def replace(self, history: RunHistory) -> None:
        """Put ``history`` (settled, read afresh) in place of what the index held for its run."""
        self._runs[history.run_id] = history
        if history.records:
            self._by_key.setdefault(history.started.key, set()).add(history.run_id)

    def discard(self, run_id: str) -> None:
        """Forget ``run_id`` (a run this instance began under an id that was not its own)."""
        history = self._runs.pop(run_id, None)
        if history is not None and history.records:
            self._by_key.get(history.started.key, set()).discard(run_id)

    def get(self, run_id: str) -> RunHistory | None:
        return self._runs.get(run_id)

    def __iter__(self) -> Iterator[RunHistory]:
        return iter(self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)

    def unfinished(self, key: str | None = None) -> list[RunHistory]:
        """Runs with no ``run_finished`` record (of ``key`` only, if given), oldest first."""
        if key is None:
            found = [h for h in self._runs.values() if h.records and h.finished is None]
        else:
            ids = self._by_key.get(key, set())
            found = [h for h in map(self._runs.__getitem__, ids) if h.finished is None]
            if len(found) < len(ids):
                self._by_key[key] = {h.run_id for h in found}
        found.sort(key=lambda h: (h.started.at, h.run_id))
        return found
