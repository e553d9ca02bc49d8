"""What a step sees: its run, its host dependencies, and the two journal helpers for effects."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ._failpoints import failpoint
from ._journal.records import EffectApplied, EffectPlanned

if TYPE_CHECKING:
    from ._ports import Clock, Journal

__all__ = ("StepContext",)

T = TypeVar("T")

_roundtrip_encoder = msgspec.msgpack.Encoder()


class StepContext:
    """Passed to every step. One per attempt.

    ``plan`` decides a value an effect depends on (a new id, a timestamp, exact paths) once
    and journals it durably before the effect; a resumed run gets the journaled value back.
    ``mark_applied`` / ``applied`` let an effect that must not repeat record its completion.
    """

    __slots__ = (
        "_applied",
        "_clock",
        "_journal",
        "_next_seq",
        "_plans",
        "attempt",
        "deps",
        "input",
        "key",
        "requested_by",
        "results",
        "run_id",
        "state",
        "workflow",
    )

    def __init__(
        self,
        *,
        workflow: str,
        run_id: str,
        key: str,
        input: Any,
        requested_by: str,
        state: str,
        attempt: int,
        deps: Any,
        results: Mapping[str, Any],
        plans: dict[str, Any],
        applied: dict[str, Any],
        journal: Journal,
        clock: Clock,
        next_seq: Callable[[], int],
    ) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.key = key
        self.input = input
        self.requested_by = requested_by
        self.state = state
        self.attempt = attempt
        #: The host's adapters for this workflow (whatever the host registered).
        self.deps = deps
        #: Results of the states that ended ``ok`` so far, by state name.
        self.results = results
        self._plans = plans
        self._applied = applied
        self._journal = journal
        self._clock = clock
        self._next_seq = next_seq

    def now(self) -> float:
        """Wall-clock time from the injected clock."""
        return self._clock.now()

    async def plan(
        self, name: str, make: Callable[[], T], type: Any = None, *, durable: bool = True
    ) -> T:
        """The value planned under ``name``: journaled on first use, reused after.

        ``make`` must return something msgpack can carry (builtins, msgspec Structs);
        ``type`` converts the journaled value back (e.g. a Struct class). ``durable=False``
        skips the fsync for a value no effect depends on yet (it still survives a kill).
        """
        if name not in self._plans:
            value = make()
            plain = msgspec.msgpack.decode(_roundtrip_encoder.encode(value))
            record = EffectPlanned(
                run_id=self.run_id,
                seq=self._next_seq(),
                at=self._clock.now(),
                step=self.state,
                name=name,
                value=plain,
            )
            await self._journal.append(record, durable=durable)
            self._plans[name] = plain
            failpoint(f"plan.{name}")
        value = self._plans[name]
        return value if type is None else msgspec.convert(value, type)  # type: ignore[no-any-return]

    def planned(self, name: str) -> bool:
        return name in self._plans

    def applied(self, name: str) -> bool:
        """Whether an effect recorded its completion under ``name`` (in any attempt)."""
        return name in self._applied

    async def mark_applied(self, name: str, detail: Any = None) -> None:
        """Record (durably) that the effect ``name`` is done, so no resume repeats it."""
        record = EffectApplied(
            run_id=self.run_id,
            seq=self._next_seq(),
            at=self._clock.now(),
            step=self.state,
            name=name,
            detail=detail,
        )
        await self._journal.append(record, durable=True)
        self._applied[name] = detail
        failpoint(f"applied.{name}")

    def failpoint(self, name: str) -> None:
        """A crash point between the micro-steps of an effect, named ``<state>.<name>``."""
        failpoint(f"{self.state}.{name}")
