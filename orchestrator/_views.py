"""What the journal says about runs, as summaries and timelines (``runs list`` / ``runs show``).

Everything here is computed from the records alone, so it answers "who did what, when and how"
after the fact: a run's status, every attempt of every step (including an attempt a crash cut
short), the values planned before each effect, the effects applied, and every resume. The one
thing the records cannot say is whether an unfinished run is still being worked on; the caller
answers that with ``live(key)`` (the file journal: is the key's lock held by a live process).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeAlias, get_args

import msgspec

from ._journal.history import RunHistory
from ._journal.records import (
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
from .errors import UsageError

__all__ = (
    "STATUSES",
    "Attempt",
    "Entry",
    "RunSource",
    "RunSummary",
    "RunView",
    "ViewStatus",
    "find_run",
    "last_activity",
    "ordered",
    "parse_since",
    "select_runs",
    "status_of",
    "summarize",
    "timeline",
    "view_run",
)

ViewStatus: TypeAlias = Literal["succeeded", "failed", "cancelled", "running", "interrupted"]
STATUSES: tuple[str, ...] = get_args(ViewStatus)
AttemptOutcome: TypeAlias = Literal["ok", "timeout", "error", "running", "interrupted"]


class RunSource(Protocol):
    """The part of a journal the views read."""

    def runs(self) -> Iterable[RunHistory]: ...

    def history(self, run_id: str) -> RunHistory | None: ...


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One run in a line: ``runs list``."""

    run_id: str
    workflow: str
    key: str
    #: succeeded / failed / cancelled (finished); running / interrupted (not finished).
    status: ViewStatus
    #: Who asked for the run (the command source, e.g. ``cli:reset``).
    requested_by: str
    #: Seconds since the epoch (UTC).
    started_at: float
    ended_at: float | None
    #: Seconds from start to end; for an unfinished run, to its last record.
    duration: float
    #: The state the run ended in, and its failure code and message (if any).
    step: str | None = None
    code: str | None = None
    message: str | None = None
    #: How many times the run was resumed after an interruption.
    resumes: int = 0
    fingerprint: str = ""


class Started(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="run_started"):
    at: float
    requested_by: str
    input: Any
    forced: dict[str, str]


class Attempt(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="attempt"):
    """One attempt of a step, from its ``step_started`` to its ``step_finished`` (if any)."""

    at: float
    step: str
    attempt: int
    #: ``interrupted``: no ``step_finished`` before a resume or the end of an unfinished run.
    outcome: AttemptOutcome
    ended_at: float | None = None
    duration: float | None = None
    error: ErrorInfo | None = None
    forced: bool = False
    result: Any = None


class Planned(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="effect_planned"):
    at: float
    step: str
    name: str
    value: Any


class Applied(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="effect_applied"):
    at: float
    step: str
    name: str
    detail: Any


class Resumed(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="run_resumed"):
    at: float
    requested_by: str
    fingerprint: str


class Finished(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="run_finished"):
    at: float
    status: str
    step: str | None
    code: str | None
    message: str | None


Entry: TypeAlias = Started | Attempt | Planned | Applied | Resumed | Finished


class RunView(msgspec.Struct, frozen=True, kw_only=True):
    """A run and its timeline: ``runs show``."""

    run: RunSummary
    timeline: list[Entry]


# -- summaries -----------------------------------------------------------------------------


def status_of(history: RunHistory, live: Callable[[str], bool]) -> ViewStatus:
    finished = history.finished
    if finished is not None:
        return finished.status
    return "running" if live(history.started.key) else "interrupted"


def summarize(history: RunHistory, live: Callable[[str], bool]) -> RunSummary:
    started, finished = history.started, history.finished
    return RunSummary(
        run_id=history.run_id,
        workflow=started.workflow,
        key=started.key,
        status=status_of(history, live),
        requested_by=started.requested_by,
        started_at=started.at,
        ended_at=finished.at if finished else None,
        duration=max(0.0, (finished.at if finished else last_activity(history)) - started.at),
        step=finished.step if finished else None,
        code=finished.code if finished else None,
        message=finished.message if finished else None,
        resumes=sum(isinstance(r, RunResumed) for r in history.records),
        fingerprint=history.fingerprint,
    )


def select_runs(
    source: RunSource,
    live: Callable[[str], bool],
    *,
    status: str | None = None,
    key: str | None = None,
    since: float | None = None,
    tick: Callable[[], None] = lambda: None,
) -> list[RunSummary]:
    """Summaries of the runs that match, oldest first.

    ``since``: runs with a record at or after that time (started, resumed or finished since).
    ``tick`` is called once per run looked at (a progress bar).
    """
    found: list[RunSummary] = []
    for history in ordered(source.runs()):
        tick()
        if key is not None and history.started.key != key:
            continue
        if since is not None and last_activity(history) < since:
            continue
        summary = summarize(history, live)
        if status is None or summary.status == status:
            found.append(summary)
    return found


def last_activity(history: RunHistory) -> float:
    """The time of the run's latest record (clocks of different processes may disagree)."""
    return max(record.at for record in history.records)


def ordered(histories: Iterable[RunHistory]) -> list[RunHistory]:
    """Runs in start order (ties broken by run id); empty histories left out."""
    runs = [h for h in histories if h.records]
    runs.sort(key=lambda h: (h.started.at, h.run_id))
    return runs


def find_run(source: RunSource, run_id: str, where: str) -> RunHistory:
    """The run ``run_id`` (or the one run whose id starts with it); UsageError if none."""
    history = source.history(run_id)
    if history is not None and history.records:
        return history
    if len(run_id) >= 6:
        matches = [h for h in source.runs() if h.records and h.run_id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(
                f"run id prefix {run_id!r} matches {len(matches)} runs in {where}; "
                "give more of the id (see 'orchestrator runs list')"
            )
    raise UsageError(
        f"no run {run_id!r} in the journal {where}; list the runs with "
        "'orchestrator runs list' (and check --state-dir)"
    )


# -- timelines -----------------------------------------------------------------------------


def view_run(history: RunHistory, live: Callable[[str], bool]) -> RunView:
    summary = summarize(history, live)
    return RunView(run=summary, timeline=timeline(history, running=summary.status == "running"))


def timeline(history: RunHistory, *, running: bool = False) -> list[Entry]:
    """The run's records as entries, an attempt's start and finish merged into one.

    An attempt with no ``step_finished`` before the next ``run_resumed`` was cut short (a
    crash): ``interrupted``. One still open at the end is ``running`` if the run is, else
    ``interrupted``.
    """
    entries: list[Entry] = []
    open_attempts: dict[tuple[str, int], int] = {}
    for record in history.records:
        if isinstance(record, StepStarted):
            open_attempts[(record.step, record.attempt)] = len(entries)
            entries.append(_attempt_started(record))
        elif isinstance(record, StepFinished):
            _finish_attempt(entries, open_attempts, record)
        else:
            if isinstance(record, RunResumed):
                open_attempts.clear()
            entries.append(_entry(record))
    if running:
        for index in open_attempts.values():
            entries[index] = msgspec.structs.replace(entries[index], outcome="running")
    return entries


def _attempt_started(record: StepStarted) -> Attempt:
    return Attempt(at=record.at, step=record.step, attempt=record.attempt, outcome="interrupted")


def _finish_attempt(
    entries: list[Entry], open_attempts: dict[tuple[str, int], int], record: StepFinished
) -> None:
    index = open_attempts.pop((record.step, record.attempt), None)
    done = Attempt(
        at=record.at - record.duration,
        step=record.step,
        attempt=record.attempt,
        outcome=record.outcome,
        ended_at=record.at,
        duration=record.duration,
        error=record.error,
        forced=record.forced,
        result=record.result,
    )
    if index is None:  # a finish whose start is missing: still show what it says
        entries.append(done)
    else:
        entries[index] = msgspec.structs.replace(done, at=entries[index].at)


def _entry(record: Record) -> Entry:
    if isinstance(record, RunStarted):
        return Started(
            at=record.at, requested_by=record.requested_by, input=record.input, forced=record.forced
        )
    if isinstance(record, EffectPlanned):
        return Planned(at=record.at, step=record.step, name=record.name, value=record.value)
    if isinstance(record, EffectApplied):
        return Applied(at=record.at, step=record.step, name=record.name, detail=record.detail)
    if isinstance(record, RunResumed):
        return Resumed(
            at=record.at, requested_by=record.requested_by, fingerprint=record.fingerprint
        )
    assert isinstance(record, RunFinished), record
    return Finished(
        at=record.at,
        status=record.status,
        step=record.step,
        code=record.code,
        message=record.message,
    )


# -- --since -------------------------------------------------------------------------------

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float) -> float:
    """``--since``: an ISO-8601 time or date (UTC unless it says otherwise), or an age.

    ``2026-11-25T10:00:00Z``, ``2026-11-25`` (midnight UTC), ``10m``, ``2h``, ``3d``, ``1w``.
    Returns seconds since the epoch.
    """
    cleaned = text.strip()
    age = _AGE.fullmatch(cleaned)
    if age is not None:
        return now - float(age.group(1)) * _UNIT[age.group(2)]
    try:
        when = datetime.fromisoformat(cleaned)
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a time nor an age; give an ISO-8601 time or date "
            "(2026-11-25T10:00:00Z, 2026-11-25) or an age such as 45s, 10m, 2h, 3d, 1w"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
