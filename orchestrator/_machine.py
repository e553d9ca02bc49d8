"""The decision table: state + outcome -> what happens next. No I/O.

A synchronous ``transitions.Machine`` is built once per workflow type and is the single
source of the table (and of the diagrams). The runner never triggers it per run: walking its
events once at build time gives a plain dict, so a decision costs a dict lookup instead of a
model attach and a trigger (~13 µs each on transitions 0.9.3).

Terminal states are ``succeeded`` and ``failed:<CODE>``, one per failure code, so a diagram
shows where every failure leaves. A retry is a self-loop guarded by the condition
``retry_allowed``, followed by the transition taken once retries are used up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from transitions import Machine

from ._spec import OUTCOMES, Fail, Outcome, Retry, Succeed, Target, WorkflowSpec

__all__ = ("SUCCEEDED", "Decision", "DecisionTable", "failed_state")

SUCCEEDED: Final = "succeeded"
RETRY_CONDITION: Final = "retry_allowed"


def failed_state(code: str) -> str:
    return f"failed:{code}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What follows an outcome: go to ``next_state``, or end the run, maybe after retries.

    Exactly one of ``next_state``, ``succeed`` and ``fail`` is set; ``retry`` is set when the
    step may first be attempted again.
    """

    next_state: str | None = None
    succeed: bool = False
    fail: Fail | None = None
    retry: Retry | None = None


class DecisionTable:
    """Answers ``decide(state, outcome)`` for one workflow type."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec
        self.machine = build_machine(spec)
        self._table = self._read_machine()

    def decide(self, state: str, outcome: Outcome) -> Decision:
        return self._table[state, outcome]

    def _read_machine(self) -> dict[tuple[str, str], Decision]:
        table: dict[tuple[str, str], Decision] = {}
        for state in self.spec.states:
            for outcome in OUTCOMES:
                transitions = self.machine.events[outcome].transitions[state.name]
                target = state.on[outcome]
                retry = target if isinstance(target, Retry) else None
                assert (retry is not None) == (len(transitions) == 2)  # the guarded self-loop
                dest = transitions[-1].dest
                assert dest is not None  # every transition was added with a destination
                final = retry.then if retry is not None else target
                table[state.name, outcome] = _decision(dest, retry, final)
        return table


def _decision(dest: str, retry: Retry | None, final: Target) -> Decision:
    if dest == SUCCEEDED:
        return Decision(succeed=True, retry=retry)
    if dest.startswith("failed:"):
        # The machine names the terminal state; the message lives on the spec's target.
        assert isinstance(final, Fail) and failed_state(final.code) == dest
        return Decision(fail=final, retry=retry)
    return Decision(next_state=dest, retry=retry)


def build_machine(spec: WorkflowSpec) -> Machine:
    """The transitions machine of ``spec``: one trigger per outcome, terminals included."""
    terminals = sorted({_dest(t) for s in spec.states for t in s.on.values()} - set(spec.by_name))
    machine = Machine(
        model=None,
        states=[s.name for s in spec.states] + terminals,
        initial=spec.initial,
        auto_transitions=False,
        send_event=False,
    )
    for state in spec.states:
        for outcome in OUTCOMES:
            target = state.on[outcome]
            if isinstance(target, Retry):
                machine.add_transition(
                    outcome, state.name, state.name, conditions=[RETRY_CONDITION]
                )
            machine.add_transition(outcome, state.name, _dest(target))
    return machine


def _dest(target: Target) -> str:
    if isinstance(target, Retry):
        return _dest(target.then)
    if isinstance(target, Fail):
        return failed_state(target.code)
    if isinstance(target, Succeed):
        return SUCCEEDED
    return target
