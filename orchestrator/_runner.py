"""The engine: runs workflows step by step, journaling before and after each step.

For each state: journal ``step_started``, run the step under a timeout (timeout -> outcome
``timeout``, an exception -> ``error`` with its type and message), journal
``step_finished``, then follow the decision table. Runs on the same key are serialized
(``Journal.lock_key``); an unfinished run of a key is resumed before a new run of it starts.

Durability: ``step_finished`` of an ``effect`` state, planned values and ``run_finished`` are
durable appends; the rest rides along with the next durable record (group commit), so a
step whose records a crash lost simply runs again, which is why steps before a planned
effect must be safe to repeat.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._clock import RandomIds, SystemClock
from ._context import StepContext
from ._failpoints import failpoint
from ._journal.history import RunHistory
from ._journal.records import (
    ErrorInfo,
    RunFinished,
    RunResumed,
    RunStarted,
    RunStatus,
    StepFinished,
    StepStarted,
)
from ._machine import DecisionTable
from ._ports import Clock, IdFactory, Journal
from ._recovery import Position, check_resumable, resume_position
from ._spec import OUTCOMES, Outcome, State, WorkflowSpec
from .errors import KeyBusy, ResumeRefused, UnknownWorkflow, UsageError

__all__ = ("Engine", "RecoveryReport", "RunHandle", "RunResult", "open_engine", "result_of")


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """How a run ended, as its caller sees it."""

    run_id: str
    workflow: str
    key: str
    status: RunStatus
    #: The failure code and message (``failed``), or why it was cancelled.
    code: str | None = None
    message: str | None = None
    #: The state the run ended in (the failing step for ``failed``).
    state: str | None = None
    #: Results of the states that ended ``ok``, by state name.
    results: dict[str, Any] = {}

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


class RecoveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``Engine.recover`` did: runs finished, and runs it refused to resume (and why)."""

    resumed: list[RunResult] = []
    refused: list[str] = []
    skipped: list[str] = []


@dataclass(slots=True)
class _Run:
    spec: WorkflowSpec
    table: DecisionTable
    deps: Any
    history_seq: int
    run_id: str
    key: str
    input: Any
    requested_by: str
    forced: Mapping[str, Outcome]
    plans: dict[str, Any] = field(default_factory=dict)
    applied: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    #: The error of the last attempt (a failure message may quote it as ``{error}``).
    last_error: ErrorInfo | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def next_seq(self) -> int:
        seq = self.history_seq
        self.history_seq += 1
        return seq


class RunHandle:
    """A run started with ``Engine.start``: wait for it, or cancel it."""

    def __init__(self, run_id: str, engine: Engine) -> None:
        self.run_id = run_id
        self._engine = engine
        self._done = anyio.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None

    async def wait(self) -> RunResult:
        """The run's result; re-raises what stopped the run if it ended without one."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        self._engine.cancel(self.run_id)


class Engine:
    """Runs and resumes workflows against one journal. Build it with ``open_engine``."""

    def __init__(
        self,
        journal: Journal,
        *,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        task_group: TaskGroup | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.journal = journal
        self.clock: Clock = clock or SystemClock()
        self.ids: IdFactory = ids or RandomIds()
        self._task_group = task_group
        self._rng = rng or random.Random()
        self._workflows: dict[str, tuple[WorkflowSpec, DecisionTable, Any]] = {}
        self._active: dict[str, _Run | None] = {}
        self._cancel_requested: set[str] = set()

    # -- registry ------------------------------------------------------------------------

    def register(self, spec: WorkflowSpec, deps: Any = None) -> None:
        """Make ``spec`` runnable; its steps get ``deps`` as ``ctx.deps``."""
        self._workflows[spec.name] = (spec, DecisionTable(spec), deps)

    def workflow(self, name: str) -> WorkflowSpec:
        try:
            return self._workflows[name][0]
        except KeyError:
            raise UnknownWorkflow(name, self._workflows) from None

    # -- starting runs -------------------------------------------------------------------

    async def run(
        self,
        workflow: str,
        key: str,
        input: Any = None,
        *,
        requested_by: str = "",
        force: Mapping[str, Outcome] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Run ``workflow`` on ``key`` to its end and return how it ended.

        ``force`` maps states to an outcome they end in without running (fault injection).
        A ``run_id`` given by the caller makes the start idempotent: if the journal already
        has that run, it is not started again; its result is returned (once it is resumed,
        if it was interrupted). Two hosts asked for the same run id produce one run.
        """
        return await self._run(
            workflow,
            key,
            input,
            requested_by=requested_by,
            force=force,
            run_id=run_id or self.ids.new_run_id(),
            idempotent=run_id is not None,
        )

    async def _run(
        self,
        workflow: str,
        key: str,
        input: Any,
        *,
        requested_by: str,
        force: Mapping[str, Outcome] | None,
        run_id: str,
        idempotent: bool,
    ) -> RunResult:
        spec, table, deps = self._lookup(workflow)
        forced = _check_forced(spec, force or {})
        self._active.setdefault(run_id, None)
        try:
            async with self.journal.lock_key(key):
                existing = await self.journal.load(run_id) if idempotent else None
                if existing is not None and existing.started.key != key:
                    raise UsageError(
                        f"run id {run_id} is taken by a run of {existing.started.workflow} "
                        f"on key {existing.started.key!r}; choose another run id"
                    )
                if existing is not None and existing.finished is not None:
                    return result_of(existing)
                for history in self.journal.unfinished(key):
                    resumed = await self._resume(history, f"before new run {run_id}")
                    if history.run_id == run_id:
                        return resumed
                if run_id in self._cancel_requested:
                    return RunResult(
                        run_id=run_id,
                        workflow=workflow,
                        key=key,
                        status="cancelled",
                        message="cancelled before it started",
                    )
                run = _Run(spec, table, deps, 0, run_id, key, input, requested_by, forced)
                self._active[run_id] = run
                await self.journal.append(
                    RunStarted(
                        run_id=run_id,
                        seq=run.next_seq(),
                        at=self.clock.now(),
                        workflow=spec.name,
                        fingerprint=spec.fingerprint,
                        key=key,
                        input=input,
                        requested_by=requested_by,
                        forced=dict(forced),
                    )
                )
                failpoint("run_started")
                return await self._drive(run, Position(spec.initial, 1, 0))
        finally:
            self._active.pop(run_id, None)
            self._cancel_requested.discard(run_id)

    def start(
        self,
        workflow: str,
        key: str,
        input: Any = None,
        *,
        requested_by: str = "",
        force: Mapping[str, Outcome] | None = None,
    ) -> RunHandle:
        """Start a run in the engine's task group and return its handle at once."""
        if self._task_group is None:
            raise UsageError("Engine.start needs a task group: use 'async with open_engine(...)'")
        self._lookup(workflow)
        handle = RunHandle(self.ids.new_run_id(), self)
        self._active.setdefault(handle.run_id, None)

        async def _run() -> None:
            try:
                handle._result = await self._run(
                    workflow,
                    key,
                    input,
                    requested_by=requested_by,
                    force=force,
                    run_id=handle.run_id,
                    idempotent=False,
                )
            except Exception as exc:
                handle._error = exc
            finally:
                handle._done.set()

        self._task_group.start_soon(_run, name=f"run {handle.run_id}")
        return handle

    def cancel(self, run_id: str) -> bool:
        """Cancel a run of this engine; it ends ``cancelled`` (journaled). False if unknown."""
        if run_id not in self._active:
            return False
        self._cancel_requested.add(run_id)
        run = self._active[run_id]
        if run is not None:
            run.scope.cancel()
        return True

    # -- recovery ------------------------------------------------------------------------

    async def recover(
        self,
        *,
        requested_by: str = "recover",
        concurrency: int = 64,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> RecoveryReport:
        """Resume every unfinished run in the journal; refuse (and report) unsafe ones.

        Up to ``concurrency`` runs resume at once (their durable records share fsyncs);
        runs of one key still go one after the other, oldest first. ``on_progress(done,
        total)`` is called as runs finish.
        """
        await self.journal.refresh()
        pending = self.journal.unfinished()
        outcomes: list[RunResult | str | None] = [None] * len(pending)
        limiter = anyio.Semaphore(max(1, concurrency))
        done = 0

        async def one(index: int, history: RunHistory) -> None:
            nonlocal done
            async with limiter:
                outcomes[index] = await self._recover_one(history, requested_by)
            done += 1
            if on_progress is not None:
                on_progress(done, len(pending))

        async with anyio.create_task_group() as tg:
            for index, history in enumerate(pending):
                tg.start_soon(one, index, history)
        return RecoveryReport(
            resumed=[o for o in outcomes if isinstance(o, RunResult)],
            refused=[o for o in outcomes if isinstance(o, str)],
            skipped=[h.run_id for h, o in zip(pending, outcomes, strict=True) if o is None],
        )

    async def recover_key(self, key: str, *, requested_by: str = "recover") -> RecoveryReport:
        """Resume the unfinished runs of ``key`` (a worker calls this for a key it claimed)."""
        resumed: list[RunResult] = []
        refused: list[str] = []
        async with self.journal.lock_key(key):
            for history in self.journal.unfinished(key):
                try:
                    resumed.append(await self._resume(history, requested_by))
                except ResumeRefused as exc:
                    refused.append(str(exc))
        return RecoveryReport(resumed=resumed, refused=refused)

    async def _recover_one(self, history: RunHistory, requested_by: str) -> RunResult | str | None:
        """The resumed run's result, why it was refused, or None if it finished meanwhile."""
        try:
            # Another process may have finished it while we waited for its key: lock_key
            # reads what other holders wrote before it returns.
            async with self.journal.lock_key(history.started.key):
                current = self.journal.history(history.run_id)
                if current is None or current.finished is not None:
                    return None
                return await self._resume(current, requested_by)
        except (ResumeRefused, KeyBusy) as exc:
            return str(exc)

    async def _resume(self, history: RunHistory, requested_by: str) -> RunResult:
        started = history.started
        entry = self._workflows.get(started.workflow)
        check_resumable(history, entry[0] if entry else None, sorted(self._workflows))
        assert entry is not None
        spec, table, deps = entry
        run = _Run(
            spec,
            table,
            deps,
            history.next_seq,
            history.run_id,
            started.key,
            started.input,
            started.requested_by,
            _check_forced(spec, started.forced),
            plans=history.plans(),
            applied=history.applied(),
            results=history.results(),
            last_error=history.last_error(),
        )
        self._active[run.run_id] = run
        try:
            await self.journal.append(
                RunResumed(
                    run_id=run.run_id,
                    seq=run.next_seq(),
                    at=self.clock.now(),
                    fingerprint=spec.fingerprint,
                    requested_by=requested_by,
                )
            )
            failpoint("run_resumed")
            return await self._drive(run, resume_position(history, table))
        finally:
            self._active.pop(run.run_id, None)

    # -- the step loop -------------------------------------------------------------------

    async def _drive(self, run: _Run, position: Position) -> RunResult:
        state, attempt, tried = position.state, position.attempt, position.tried
        decision = position.end
        with run.scope:
            while decision is None:
                outcome = await self._attempt(run, run.spec.by_name[state], attempt)
                tried += 1
                decision = run.table.decide(state, outcome)
                if decision.retry is not None and tried < decision.retry.max_attempts:
                    await self.clock.sleep(decision.retry.delay(tried, self._rng.random()))
                    attempt, decision = attempt + 1, None
                elif decision.next_state is not None:
                    state, attempt, tried, decision = decision.next_state, 1, 0, None
        if decision is None:
            return await self._finish(run, state, "cancelled", None, "cancelled by the host")
        if decision.fail is not None:
            message = _format(decision.fail.message, run)
            return await self._finish(run, state, "failed", decision.fail.code, message)
        return await self._finish(run, state, "succeeded", None, None)

    async def _attempt(self, run: _Run, state: State, attempt: int) -> Outcome:
        journal, name = self.journal, state.name
        await journal.append(
            StepStarted(
                run_id=run.run_id,
                seq=run.next_seq(),
                at=self.clock.now(),
                step=name,
                attempt=attempt,
            )
        )
        # Before the step's code runs, its records reach the OS: a kill mid-step leaves the
        # attempt on record (no fsync: power loss may still take it, and that is allowed).
        journal.flush()
        failpoint(f"{name}.started")
        began = self.clock.monotonic()
        outcome, result, error = await self._execute(run, state, attempt)
        try:
            await self._record_finish(run, state, attempt, outcome, result, error, began)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            # The step returned something the journal cannot hold: an error of the step.
            outcome, result = "error", None
            error = ErrorInfo(type(exc).__name__, f"step result not journalable: {exc}")
            await self._record_finish(run, state, attempt, outcome, None, error, began)
        run.history_seq += 1
        run.last_error = error
        if outcome == "ok":
            run.results[name] = result
        failpoint(f"{name}.finished")
        return outcome

    async def _record_finish(
        self,
        run: _Run,
        state: State,
        attempt: int,
        outcome: Outcome,
        result: Any,
        error: ErrorInfo | None,
        began: float,
    ) -> None:
        record = StepFinished(
            run_id=run.run_id,
            seq=run.history_seq,
            at=self.clock.now(),
            step=state.name,
            attempt=attempt,
            outcome=outcome,
            duration=self.clock.monotonic() - began,
            result=result,
            error=error,
            forced=state.name in run.forced,
        )
        await self.journal.append(record, durable=state.effect)

    async def _execute(
        self, run: _Run, state: State, attempt: int
    ) -> tuple[Outcome, Any, ErrorInfo | None]:
        forced = run.forced.get(state.name)
        if forced is not None:
            error = ErrorInfo("InjectedFault", f"outcome forced to {forced}")
            return forced, None, (error if forced == "error" else None)
        ctx = StepContext(
            workflow=run.spec.name,
            run_id=run.run_id,
            key=run.key,
            input=run.input,
            requested_by=run.requested_by,
            state=state.name,
            attempt=attempt,
            deps=run.deps,
            results=run.results,
            plans=run.plans,
            applied=run.applied,
            journal=self.journal,
            clock=self.clock,
            next_seq=run.next_seq,
        )
        try:
            with anyio.move_on_after(state.timeout) as scope:
                return "ok", await state.step(ctx), None
        except Exception as exc:
            return "error", None, ErrorInfo(type(exc).__name__, str(exc))
        assert scope.cancelled_caught
        return "timeout", None, ErrorInfo("Timeout", f"no result within {state.timeout:g} s")

    async def _finish(
        self, run: _Run, state: str, status: RunStatus, code: str | None, message: str | None
    ) -> RunResult:
        await self.journal.append(
            RunFinished(
                run_id=run.run_id,
                seq=run.next_seq(),
                at=self.clock.now(),
                status=status,
                step=state,
                code=code,
                message=message,
            ),
            durable=True,
        )
        failpoint("run_finished")
        return RunResult(
            run_id=run.run_id,
            workflow=run.spec.name,
            key=run.key,
            status=status,
            code=code,
            message=message,
            state=state,
            results=dict(run.results),
        )

    def _lookup(self, workflow: str) -> tuple[WorkflowSpec, DecisionTable, Any]:
        try:
            return self._workflows[workflow]
        except KeyError:
            raise UnknownWorkflow(workflow, self._workflows) from None


def result_of(history: RunHistory) -> RunResult:
    """The result of a finished run, read from its journal."""
    finished = history.finished
    assert finished is not None
    return RunResult(
        run_id=history.run_id,
        workflow=history.started.workflow,
        key=history.started.key,
        status=finished.status,
        code=finished.code,
        message=finished.message,
        state=finished.step,
        results=history.results(),
    )


def _check_forced(spec: WorkflowSpec, force: Mapping[str, str]) -> dict[str, Outcome]:
    forced: dict[str, Outcome] = {}
    for state, outcome in force.items():
        if state not in spec.by_name:
            raise UsageError(
                f"cannot force {state}={outcome}: workflow {spec.name!r} has no state "
                f"{state!r} (states: {', '.join(spec.by_name)})"
            )
        if outcome not in OUTCOMES:
            raise UsageError(f"cannot force {state}={outcome}: outcomes are {', '.join(OUTCOMES)}")
        forced[state] = outcome
    return forced


class _Fields(dict[str, Any]):
    def __missing__(self, name: str) -> str:
        return "{" + name + "}"


def _format(template: str, run: _Run) -> str:
    fields = _Fields(run.input if isinstance(run.input, dict) else {})
    fields.setdefault("key", run.key)
    fields.setdefault("run_id", run.run_id)
    fields.setdefault("error", run.last_error.message if run.last_error else "")
    try:
        return template.format_map(fields)
    except (ValueError, IndexError, AttributeError):
        return template


@asynccontextmanager
async def open_engine(
    journal: Journal,
    *,
    clock: Clock | None = None,
    ids: IdFactory | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Engine]:
    """An engine with its own task group (for ``Engine.start``); closes the journal on exit."""
    try:
        async with anyio.create_task_group() as tg:
            yield Engine(journal, clock=clock, ids=ids, task_group=tg, rng=rng)
    except BaseExceptionGroup as group:
        # The task group wraps whatever the body raised; a caller wants the error itself.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await journal.aclose()
