"""Specs are validated when built, fingerprinted, and turned into the decision table."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import SUCCEED, DecisionTable, Fail, State, StepContext, WorkflowSpec, fail, retry
from orchestrator.errors import SpecError
from tests.flows import LEDGER, make_ledger


async def _noop(ctx: StepContext) -> None:
    return None


def _all(target: Any) -> dict[str, Any]:
    return {"ok": target, "timeout": target, "error": target}


def test_decision_table_matches_the_outcome_table() -> None:
    table = DecisionTable(LEDGER)
    assert table.decide("reserve", "ok").next_state == "charge"
    reserve_timeout = table.decide("reserve", "timeout")
    assert reserve_timeout.fail == Fail("UNAVAILABLE", "{key} is busy; try again")
    charge_error = table.decide("charge", "error")
    assert charge_error.retry is not None and charge_error.retry.max_attempts == 3
    assert charge_error.fail is not None and charge_error.fail.code == "PAYMENT_FAILED"
    assert table.decide("notify", "error").next_state == "audit"
    assert table.decide("audit", "ok").succeed


def test_the_machine_holds_every_transition_with_terminal_states() -> None:
    machine = DecisionTable(LEDGER).machine
    assert set(machine.states) == {
        "reserve",
        "charge",
        "notify",
        "audit",
        "succeeded",
        "failed:UNAVAILABLE",
        "failed:INVALID_REQUEST",
        "failed:PAYMENT_FAILED",
    }
    retry_loop = machine.events["error"].transitions["charge"]
    assert [t.dest for t in retry_loop] == ["charge", "failed:PAYMENT_FAILED"]
    assert machine.events["ok"].transitions["notify"][0].dest == "audit"


@pytest.mark.parametrize(
    ("states", "state", "message"),
    [
        ([State("a", _noop, 1, {"ok": SUCCEED, "timeout": SUCCEED})], "a", "missing outcome"),
        ([State("a", _noop, 1, _all("b"))], "a", "unknown target state 'b'"),
        (
            [State("a", _noop, 1, _all(SUCCEED)), State("a", _noop, 1, _all(SUCCEED))],
            "a",
            "duplicate state name",
        ),
        (
            [State("a", _noop, 1, _all(SUCCEED)), State("lost", _noop, 1, _all(SUCCEED))],
            "lost",
            "unreachable",
        ),
        ([State("a", _noop, 0, _all(SUCCEED))], "a", "timeout must be > 0"),
        ([State("a", _noop, 1, {**_all(SUCCEED), "maybe": SUCCEED})], "a", "unknown outcome"),
        ([State("a", _noop, 1, _all(fail("bad code", "m")))], "a", "UPPER_SNAKE_CASE"),
        ([State("a", _noop, 1, _all(retry(1, SUCCEED)))], "a", "max_attempts >= 2"),
        ([State("a", _noop, 1, _all(retry(2, "zzz")))], "a", "unknown target state 'zzz'"),
        ([State("Bad", _noop, 1, _all(SUCCEED))], "Bad", "lowercase"),
        ([State("succeeded", _noop, 1, _all(SUCCEED))], "succeeded", "reserved"),
    ],
)
def test_invalid_specs_name_the_offending_state(
    states: list[State], state: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message) as info:
        WorkflowSpec("flow", states)
    assert info.value.state == state
    assert f"state {state!r}" in str(info.value)


def test_empty_and_badly_named_workflows_are_refused() -> None:
    with pytest.raises(SpecError, match="at least one state"):
        WorkflowSpec("flow", [])
    with pytest.raises(SpecError, match="workflow names"):
        WorkflowSpec("Flow!", [State("a", _noop, 1, _all(SUCCEED))])


def test_fingerprint_is_stable_and_tracks_transitions_only() -> None:
    assert make_ledger(1.0).fingerprint == make_ledger(99.0).fingerprint == LEDGER.fingerprint
    assert len(LEDGER.fingerprint) == 16
    one = WorkflowSpec("flow", [State("a", _noop, 1, _all(SUCCEED))])
    other = WorkflowSpec("flow", [State("a", _noop, 1, {**_all(SUCCEED), "error": fail("X", "m")})])
    renamed = WorkflowSpec("flow2", [State("a", _noop, 1, _all(SUCCEED))])
    assert len({one.fingerprint, other.fingerprint, renamed.fingerprint}) == 3
    # The same definition built twice (another process, another day) has the same print.
    assert (
        WorkflowSpec("flow", [State("a", _noop, 5, _all(SUCCEED))]).fingerprint == one.fingerprint
    )


def test_retry_delay_grows_and_is_capped() -> None:
    policy = retry(5, SUCCEED, backoff=1.0, multiplier=3.0, max_backoff=5.0, jitter=0.5)
    assert [policy.delay(n, 0.0) for n in (1, 2, 3)] == [1.0, 3.0, 5.0]
    assert policy.delay(1, 1.0) == 1.5
