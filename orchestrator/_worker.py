"""A worker on a shared journal: serves queued requests and finishes dead hosts' runs.

Each round the worker fills its free slots: first with keys whose lease expired while they
had unfinished runs (their host died, or was cut off: ``claim_expired``), whose runs it
resumes from the journal; then with queued requests (``claim_requests``), which it runs by
their run id, so a request served twice (its claim expired while the run was still going) is
still one run. When a round finds nothing, it waits ``poll`` seconds, or less once a slot
frees.

A key whose runs this worker cannot resume (refused: another definition, a workflow it does
not know; or a run that fails to load) is parked: reported once, and not claimed again by
this worker, which would otherwise take it back every round. Another worker (an upgraded
one, say) still may. Only a failing journal stops the worker.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ._journal.postgres import PostgresJournal, Request
from ._runner import Engine, RecoveryReport, RunResult
from .errors import JournalUnavailable, KeyBusy, LeaseLost, OrchestratorError

__all__ = ("WorkerEvent", "recover_expired", "serve")

#: ``(event, fields)``: "resumed", "served", "refused", "lost", "dropped", "parked".
WorkerEvent = Callable[[str, dict[str, Any]], None]


async def serve(
    engine: Engine,
    journal: PostgresJournal,
    *,
    concurrency: int = 64,
    poll: float = 0.5,
    on_event: WorkerEvent | None = None,
    stop: anyio.Event | None = None,
    idle_exit: bool = False,
) -> None:
    """Serve until ``stop`` is set (or, with ``idle_exit``, until a round finds no work and
    nothing is in flight). A failing journal ends the worker with its error."""
    emit = on_event or (lambda event, fields: None)
    stop = stop or anyio.Event()
    busy = 0
    freed = anyio.Event()
    failure: list[JournalUnavailable] = []
    parked: set[str] = set()

    async def resume_key(key: str) -> None:
        try:
            report = await engine.recover_key(key, requested_by=f"worker {journal.owner}")
        except (LeaseLost, KeyBusy) as exc:
            emit("lost", {"key": key, "reason": str(exc)})
            return
        except JournalUnavailable:
            raise
        except Exception as exc:  # a run that cannot even be read: keep serving the rest
            parked.add(key)
            emit("parked", {"key": key, "reason": f"{type(exc).__name__}: {exc}"})
            return
        for result in report.resumed:
            emit("resumed", _fields(result))
        for reason in report.refused:
            emit("refused", {"key": key, "reason": reason})
        if report.refused:
            parked.add(key)
            emit("parked", {"key": key, "reason": "its runs cannot be resumed here"})

    async def serve_request(request: Request) -> None:
        try:
            result = await engine.run(
                request.workflow,
                request.key,
                request.input,
                requested_by=request.requested_by,
                run_id=request.run_id,
            )
        except (LeaseLost, KeyBusy) as exc:
            emit("lost", {"key": request.key, "run_id": request.run_id, "reason": str(exc)})
            return
        except JournalUnavailable:
            raise
        except OrchestratorError as exc:
            # A request that can never run (unknown workflow, a taken run id, a key whose
            # older run cannot be resumed): kept with why, and its submitter is told.
            emit("dropped", {"run_id": request.run_id, "reason": str(exc)})
            await journal.drop_request(request.run_id, str(exc))
            return
        emit("served", _fields(result))
        await journal.done_request(request.run_id)

    async def slot(work: Callable[[], Awaitable[None]]) -> None:
        nonlocal busy
        try:
            await work()
        except JournalUnavailable as exc:
            failure.append(exc)
            tg.cancel_scope.cancel()
        finally:
            busy -= 1
            freed.set()

    async with anyio.create_task_group() as tg:
        while not stop.is_set():
            free = concurrency - busy
            keys = await journal.claim_expired(free, parked) if free else []
            requests: list[Request] = []
            if free - len(keys) > 0:
                requests = await journal.claim_requests(free - len(keys), journal.lease * 3)
            for key in keys:
                busy += 1
                tg.start_soon(slot, functools.partial(resume_key, key), name=f"resume {key}")
            for request in requests:
                busy += 1
                tg.start_soon(
                    slot, functools.partial(serve_request, request), name=f"run {request.run_id}"
                )
            if keys or requests:
                continue
            if idle_exit and busy == 0:
                break
            freed = anyio.Event()
            with anyio.move_on_after(poll):
                await _first(stop, freed)
    if failure:
        raise failure[0]


async def recover_expired(
    engine: Engine, journal: PostgresJournal, *, concurrency: int = 64
) -> RecoveryReport:
    """``recover`` on a shared journal: resume the unfinished runs whose host is gone (their
    key's lease expired), claiming them as a worker does; runs of live hosts are theirs."""
    resumed: list[RunResult] = []
    refused: list[str] = []
    tried: set[str] = set()  # each key once: a refused run stays unfinished

    async def one(key: str) -> None:
        try:
            report = await engine.recover_key(key, requested_by="cli:recover")
        except (LeaseLost, KeyBusy) as exc:
            refused.append(str(exc))
            return
        resumed.extend(report.resumed)
        refused.extend(report.refused)

    while keys := await journal.claim_expired(concurrency, tried):
        tried.update(keys)
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(one, key)
    return RecoveryReport(resumed=resumed, refused=refused)


async def _first(*events: anyio.Event) -> None:
    """Return once any of ``events`` is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


def _fields(result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "workflow": result.workflow,
        "key": result.key,
        "status": result.status,
        "code": result.code,
    }
