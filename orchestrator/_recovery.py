"""Where an interrupted run goes on, read from its journal alone.

Rules: a step with a ``step_finished`` record never runs again; a step started but not
finished runs again as attempt n+1; the recorded outcome of the last finished step is
decided again (the table is deterministic), so a retry budget is neither reset nor
exceeded; planned values are reused, never re-derived (``StepContext.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._journal.history import RunHistory
from ._journal.records import StepFinished, StepStarted
from ._machine import Decision, DecisionTable
from ._spec import WorkflowSpec
from .errors import ResumeRefused

__all__ = ("Position", "check_resumable", "resume_position")


@dataclass(frozen=True, slots=True)
class Position:
    """Run ``state`` next as ``attempt``, with ``tried`` finished attempts in this visit.

    When ``end`` is set, the run has already decided to end; only its finish is missing.
    """

    state: str
    attempt: int
    tried: int
    end: Decision | None = None


def check_resumable(history: RunHistory, spec: WorkflowSpec | None, known: list[str]) -> None:
    started = history.started
    if spec is None:
        raise ResumeRefused(
            history.run_id,
            f"its workflow {started.workflow!r} is not registered here "
            f"(registered: {', '.join(known) or 'none'})",
            hint="install the package that provides it and run 'orchestrator recover' again",
        )
    if history.fingerprint != spec.fingerprint:
        raise ResumeRefused(
            history.run_id,
            f"it started under {started.workflow} definition {history.fingerprint}, "
            f"the current definition is {spec.fingerprint}",
            hint="finish it with the release that started it, or register a migration",
        )


def resume_position(history: RunHistory, table: DecisionTable) -> Position:
    steps = list(history.steps())
    if not steps:
        return Position(table.spec.initial, 1, 0)
    last = steps[-1]
    tried = _finished_in_visit(steps, last.step)
    if isinstance(last, StepStarted):
        return Position(last.step, last.attempt + 1, tried)
    decision = table.decide(last.step, last.outcome)
    if decision.retry is not None and tried < decision.retry.max_attempts:
        return Position(last.step, last.attempt + 1, tried)
    if decision.next_state is not None:
        return Position(decision.next_state, 1, 0)
    return Position(last.step, last.attempt, tried, end=decision)


def _finished_in_visit(steps: list[StepStarted | StepFinished], state: str) -> int:
    """Finished attempts of ``state`` since the run last entered it."""
    count = 0
    for record in reversed(steps):
        if record.step != state:
            break
        if isinstance(record, StepFinished):
            count += 1
    return count
