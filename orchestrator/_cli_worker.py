"""``orchestrator worker`` and ``orchestrator submit``: runs served from a shared journal."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

import anyio
import msgspec
import orjson

from ._journal.postgres import DEFAULT_LEASE, DEFAULT_SCHEMA, PostgresJournal, Request
from ._registry import Command, load_plugins
from ._runner import open_engine, result_of
from ._runs_text import printable
from .errors import UsageError

__all__ = ("worker_commands",)


def worker_commands() -> list[Command]:
    return [
        Command(
            "worker",
            "serve runs from a shared PostgreSQL journal",
            _configure_worker,
            _cmd_worker,
            description="Serve requests queued with 'orchestrator submit' and, in the "
            "background, finish the runs of hosts that died: a key whose lease expired while "
            "it had unfinished runs is claimed (never by two workers) and its runs resumed "
            "from the journal. Stops on SIGINT/SIGTERM once the runs in flight end.",
        ),
        Command(
            "submit",
            "queue a run for the workers of a shared journal",
            _configure_submit,
            _cmd_submit,
            description="Queue a run in the shared journal and (unless --no-wait) wait for "
            "a worker to finish it; exit 0 if it succeeded, 1 if it failed, 2 if no worker "
            "could start it (the reason is printed). With --run-id, submitting again is "
            "harmless: there is still one run.",
        ),
    ]


def _journal_options(p: argparse.ArgumentParser) -> None:
    from .cli import add_common_options

    add_common_options(p)
    p.add_argument(
        "--lease",
        type=_positive,
        default=DEFAULT_LEASE,
        metavar="SECONDS",
        help="how long a key stays this host's without a heartbeat; a dead host's runs are "
        f"taken over after at most this long (default: {DEFAULT_LEASE:g})",
    )


def _configure_worker(p: argparse.ArgumentParser) -> None:
    _journal_options(p)
    for action in p._actions:  # a worker prints events as they come, not one document
        if "--json" in action.option_strings:
            action.help = "print each event as one JSON object a line (JSON Lines)"
    p.add_argument(
        "--concurrency",
        type=_count,
        default=64,
        metavar="N",
        help="runs served at once (default: 64)",
    )
    p.add_argument(
        "--poll",
        type=_positive,
        default=0.5,
        metavar="SECONDS",
        help="how often an idle worker looks for work (default: 0.5)",
    )
    p.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="stop once there is nothing to do (for batch jobs and tests)",
    )


def _configure_submit(p: argparse.ArgumentParser) -> None:
    from .cli import add_run_id_option

    p.add_argument("workflow", help="the workflow's name (see 'orchestrator workflows')")
    p.add_argument("key", help="the key the run works on")
    p.add_argument("--input", metavar="JSON", help="the run's input, a JSON document")
    add_run_id_option(p)
    p.add_argument("--no-wait", action="store_true", help="return once the run is queued")
    p.add_argument(
        "--timeout",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="give up waiting after this long (exit 1; the run still happens)",
    )
    _journal_options(p)


async def _open(args: argparse.Namespace, connections: int) -> PostgresJournal:
    from .cli import SCHEMA_ENV, journal_url

    url = journal_url(args.journal)
    if url is None:
        raise UsageError(
            f"'orchestrator {args.command_name}' needs a shared journal: give "
            "--journal postgresql://user@host:port/database (or set ORCHESTRATOR_JOURNAL)"
        )
    return await PostgresJournal.open(
        url,
        schema=os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA,
        lease=args.lease,
        connections=connections,
    )


async def _cmd_worker(args: argparse.Namespace) -> int:
    from ._worker import serve

    args.command_name = "worker"
    journal = await _open(args, connections=min(args.concurrency, 16) + 2)
    plugins = load_plugins()
    stop = anyio.Event()

    def on_event(event: str, fields: dict[str, Any]) -> None:
        if args.json:
            line = orjson.dumps({"event": event, "worker": journal.owner, **fields})
            sys.stdout.buffer.write(line + b"\n")
        else:
            detail = " ".join(f"{k}={printable(str(v))}" for k, v in fields.items() if v)
            sys.stdout.write(f"worker {journal.owner}: {event} {detail}\n")
        sys.stdout.flush()

    async with open_engine(journal) as engine:
        for plugin in plugins:
            deps = plugin.deps(args.state_dir)
            for spec in plugin.specs():
                engine.register(spec, deps)
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        stop.set()
                        return

            tg.start_soon(watch_signals)
            on_event("started", {"concurrency": args.concurrency, "lease": args.lease})
            await serve(
                engine,
                journal,
                concurrency=args.concurrency,
                poll=args.poll,
                on_event=on_event,
                stop=stop,
                idle_exit=args.exit_when_idle,
            )
            tg.cancel_scope.cancel()
    on_event("stopped", {})
    return 0


async def _cmd_submit(args: argparse.Namespace) -> int:
    from .cli import check_run_id, emit_json, print_run, run_exit_code

    args.command_name = "submit"
    try:
        payload = orjson.loads(args.input) if args.input is not None else None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from None
    known = {spec.name for plugin in load_plugins() for spec in plugin.specs()}
    if args.workflow not in known:
        from .errors import UnknownWorkflow

        raise UnknownWorkflow(args.workflow, known)
    from ._clock import RandomIds

    run_id = check_run_id(args.run_id) or RandomIds().new_run_id()
    journal = await _open(args, connections=2)
    try:
        request = Request(run_id, args.workflow, args.key, payload, "cli:submit")
        queued = await journal.submit(request)
        if args.no_wait:
            if args.json:
                emit_json({"run_id": run_id, "queued": queued})
            else:
                print(f"run {run_id} queued" if queued else f"run {run_id} already queued")
            return 0
        with anyio.move_on_after(args.timeout) as scope:
            await _wait_finished(journal, run_id)
        if scope.cancelled_caught:
            print(
                f"orchestrator: run {run_id} not finished after {args.timeout:g} s; it goes "
                f"on: see 'orchestrator runs show {run_id}'",
                file=sys.stderr,
            )
            return 1
        history = await journal.load(run_id)
        assert history is not None
        result = result_of(history)
    finally:
        await journal.aclose()
    if args.json:
        emit_json({"ok": result.ok, **msgspec.to_builtins(result)})
    else:
        print_run(result)
    return run_exit_code(result)


async def _wait_finished(journal: PostgresJournal, run_id: str) -> None:
    """Return once the run finished; a request a worker dropped (or that vanished) is an
    error saying why."""
    delay = 0.01
    while True:
        state, reason = await journal.request_state(run_id)
        if state == "finished":
            return
        if state == "dropped":
            raise UsageError(f"run {run_id} was not started: {reason}")
        if state == "unknown":
            raise UsageError(
                f"run {run_id} is neither queued nor in the journal: its request was removed"
            )
        await anyio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"expected 1 to 1024, got {value}")
    return value
