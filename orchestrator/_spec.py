"""Workflow definitions: states, steps, timeouts and the outcome table, checked when built."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import orjson

from .errors import SpecError

if TYPE_CHECKING:
    from ._context import StepContext

__all__ = (
    "OUTCOMES",
    "SUCCEED",
    "Fail",
    "Outcome",
    "Retry",
    "State",
    "StepFn",
    "Succeed",
    "Target",
    "WorkflowSpec",
    "fail",
    "retry",
)

Outcome: TypeAlias = Literal["ok", "timeout", "error"]
#: The outcomes every step can end in, in the order diagrams and tables list them.
OUTCOMES: Final[tuple[Outcome, ...]] = ("ok", "timeout", "error")

StepFn: TypeAlias = "Callable[[StepContext], Awaitable[Any]]"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class Succeed:
    """The run ends ``succeeded``."""


@dataclass(frozen=True, slots=True)
class Fail:
    """The run ends ``failed`` with ``code``; ``message`` may use ``{key}`` and input fields."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Run the same step again, up to ``max_attempts`` attempts in all, then go to ``then``.

    The n-th retry waits ``backoff * multiplier ** (n - 1)`` seconds (capped at ``max_backoff``)
    plus up to ``jitter`` of that, chosen at random.
    """

    max_attempts: int
    then: str | Succeed | Fail
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 30.0
    jitter: float = 0.1

    def delay(self, retry_number: int, random_fraction: float) -> float:
        """The wait before retry number ``retry_number`` (1-based)."""
        base = min(self.backoff * self.multiplier ** (retry_number - 1), self.max_backoff)
        return base * (1.0 + self.jitter * random_fraction)


#: A transition target: the next state's name, succeed, fail(...) or retry(...).
Target: TypeAlias = str | Succeed | Fail | Retry

SUCCEED: Final = Succeed()


def fail(code: str, message: str) -> Fail:
    """End the run ``failed`` with ``code`` and ``message``."""
    return Fail(code, message)


def retry(
    max_attempts: int,
    then: str | Succeed | Fail,
    *,
    backoff: float = 0.1,
    multiplier: float = 2.0,
    max_backoff: float = 30.0,
    jitter: float = 0.1,
) -> Retry:
    """Retry the step up to ``max_attempts`` attempts in all, then go to ``then``."""
    return Retry(max_attempts, then, backoff, multiplier, max_backoff, jitter)


@dataclass(frozen=True, slots=True)
class State:
    """One state of a workflow: a step, its timeout, and where each outcome leads.

    ``on`` maps every outcome (``ok``, ``timeout``, ``error``) to a target. ``effect`` marks a
    step whose completion must be durable before the run goes on (a commit): the runner then
    fsyncs its ``step_finished`` record before the next step runs.
    """

    name: str
    step: StepFn
    timeout: float
    on: Mapping[str, Target]
    effect: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A named workflow: an ordered list of states, the first one initial.

    Build it with the constructor; it is validated at once and raises ``SpecError`` naming
    the offending state. ``fingerprint`` identifies this version of the definition.
    """

    name: str
    states: tuple[State, ...]
    description: str = ""
    by_name: Mapping[str, State] = field(init=False, repr=False, compare=False)
    fingerprint: str = field(init=False, compare=False)

    def __init__(self, name: str, states: Iterable[State], description: str = "") -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "states", tuple(states))
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "by_name", _validate(self))
        object.__setattr__(self, "fingerprint", _fingerprint(self))

    @property
    def initial(self) -> str:
        return self.states[0].name


def _validate(spec: WorkflowSpec) -> dict[str, State]:
    if not _NAME.match(spec.name):
        raise SpecError(spec.name, "workflow names are lowercase letters, digits and '_'")
    if not spec.states:
        raise SpecError(spec.name, "a workflow needs at least one state")
    by_name: dict[str, State] = {}
    for state in spec.states:
        _check_state(spec.name, state)
        if state.name in by_name:
            raise SpecError(spec.name, "duplicate state name", state=state.name)
        by_name[state.name] = state
    for state in spec.states:
        for outcome, target in state.on.items():
            _check_target(spec.name, state.name, outcome, target, by_name)
    unreachable = [s.name for s in spec.states if s.name not in _reachable(spec, by_name)]
    if unreachable:
        raise SpecError(
            spec.name,
            f"unreachable from the initial state {spec.initial!r}; "
            "add a transition to it or remove it",
            state=unreachable[0],
        )
    return by_name


def _check_state(workflow: str, state: State) -> None:
    if not _NAME.match(state.name):
        raise SpecError(
            workflow, "state names are lowercase letters, digits and '_'", state=state.name
        )
    if state.name in ("succeeded", "failed"):
        raise SpecError(workflow, "this name is reserved for terminal states", state=state.name)
    if not callable(state.step):
        raise SpecError(workflow, f"step {state.step!r} is not callable", state=state.name)
    if not state.timeout > 0:
        raise SpecError(workflow, f"timeout must be > 0 s, got {state.timeout}", state=state.name)
    missing = [o for o in OUTCOMES if o not in state.on]
    if missing:
        raise SpecError(workflow, f"missing outcome(s) {', '.join(missing)}", state=state.name)
    extra = [o for o in state.on if o not in OUTCOMES]
    if extra:
        raise SpecError(
            workflow,
            f"unknown outcome(s) {', '.join(map(repr, extra))}; outcomes are ok, timeout, error",
            state=state.name,
        )


def _check_target(
    workflow: str, state: str, outcome: str, target: Target, by_name: Mapping[str, State]
) -> None:
    where = f"on {outcome}: "
    if isinstance(target, Retry):
        if target.max_attempts < 2:
            raise SpecError(workflow, where + "retry needs max_attempts >= 2", state=state)
        if target.backoff < 0 or target.multiplier < 1 or target.jitter < 0:
            raise SpecError(
                workflow,
                where + "retry needs backoff >= 0, multiplier >= 1, jitter >= 0",
                state=state,
            )
        _check_target(workflow, state, outcome, target.then, by_name)
    elif isinstance(target, Fail):
        if not _CODE.match(target.code):
            raise SpecError(
                workflow,
                where + f"failure code {target.code!r} must be UPPER_SNAKE_CASE",
                state=state,
            )
    elif isinstance(target, str):
        if target not in by_name:
            raise SpecError(workflow, where + f"unknown target state {target!r}", state=state)
    elif not isinstance(target, Succeed):
        raise SpecError(
            workflow,
            where + f"target {target!r} is not a state name, succeed, fail() or retry()",
            state=state,
        )


def _reachable(spec: WorkflowSpec, by_name: Mapping[str, State]) -> set[str]:
    seen = {spec.initial}
    todo = [spec.initial]
    while todo:
        for target in by_name[todo.pop()].on.values():
            dest = target.then if isinstance(target, Retry) else target
            if isinstance(dest, str) and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    return seen


def describe_target(target: Target) -> Any:
    """A plain, stable description of a target (used by the fingerprint and by exports)."""
    if isinstance(target, Retry):
        return {"retry": target.max_attempts, "then": describe_target(target.then)}
    if isinstance(target, Fail):
        return {"fail": target.code}
    if isinstance(target, Succeed):
        return "succeed"
    return {"state": target}


def _fingerprint(spec: WorkflowSpec) -> str:
    # Only what changes where a resumed run would go: names, order, targets, failure codes,
    # retry budgets and effect marks. Timeouts, messages and step code can change freely.
    shape = [
        spec.name,
        [
            [s.name, s.effect, [[o, describe_target(s.on[o])] for o in OUTCOMES]]
            for s in spec.states
        ],
    ]
    return hashlib.sha256(orjson.dumps(shape)).hexdigest()[:16]
