"""The journal's record types: tagged, frozen msgspec Structs. The only place shapes live.

Schema evolution follows msgspec's rules: a new field gets a default, an annotation never
changes, unknown fields are ignored (so an older reader skips what a newer writer added).
A change that breaks these rules bumps ``FORMAT_VERSION`` in the file header.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

__all__ = (
    "EffectApplied",
    "EffectPlanned",
    "ErrorInfo",
    "Record",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "RunStatus",
    "StepFinished",
    "StepStarted",
)

RunStatus: TypeAlias = Literal["succeeded", "failed", "cancelled"]


class ErrorInfo(msgspec.Struct, frozen=True):
    """An exception a step raised, by type name and message."""

    type: str
    message: str


# gc=False: a record never refers back to anything that refers to it, so the cycle collector
# need not walk it; a long-lived journal keeps many thousands of them.
class _Record(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="record", omit_defaults=True, gc=False
):
    #: The run this record belongs to.
    run_id: str
    #: Position of the record within its run: 0, 1, 2, ... without gaps.
    seq: int
    #: Wall-clock time of the record, seconds since the epoch (UTC).
    at: float


class RunStarted(_Record, frozen=True, tag="run_started"):
    """A run began: which workflow (and version), on which key, with what input, for whom."""

    workflow: str
    fingerprint: str
    key: str
    input: Any = None
    requested_by: str = ""
    #: States whose outcome is forced (fault injection), honoured on resume too.
    forced: dict[str, str] = {}


class RunResumed(_Record, frozen=True, tag="run_resumed"):
    """An interrupted run was picked up again (after a crash, by ``recover`` or a new request)."""

    fingerprint: str
    requested_by: str = ""


class StepStarted(_Record, frozen=True, tag="step_started"):
    """A step attempt began. Attempts count from 1 within a run and a state."""

    step: str
    attempt: int


class StepFinished(_Record, frozen=True, tag="step_finished"):
    """A step attempt ended with an outcome; ``duration`` in seconds."""

    step: str
    attempt: int
    outcome: Literal["ok", "timeout", "error"]
    duration: float
    result: Any = None
    error: ErrorInfo | None = None
    #: True when the outcome was forced (fault injection) and the step did not run.
    forced: bool = False


class EffectPlanned(_Record, frozen=True, tag="effect_planned"):
    """A value an effect depends on, decided once before the effect (reused on resume)."""

    step: str
    name: str
    value: Any = None


class EffectApplied(_Record, frozen=True, tag="effect_applied"):
    """An effect that must not repeat recorded its completion."""

    step: str
    name: str
    detail: Any = None


class RunFinished(_Record, frozen=True, tag="run_finished"):
    """The run ended: ``succeeded``, ``failed`` (with code and message) or ``cancelled``."""

    status: RunStatus
    step: str | None = None
    code: str | None = None
    message: str | None = None
    result: Any = None


Record: TypeAlias = (
    RunStarted
    | RunResumed
    | StepStarted
    | StepFinished
    | EffectPlanned
    | EffectApplied
    | RunFinished
)
