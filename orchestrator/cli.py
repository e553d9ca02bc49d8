"""The command line: ``orchestrator COMMAND ...`` (DESIGN §7 is the contract).

Generic commands live here (``run``, ``recover``, ``workflows``, and, from their own modules,
``runs``, ``audit`` and ``diagram``); workflow
packages add theirs (``demo``, ``reset``, ``delete``) through their plugin. Exit codes: 0
success; 1 the workflow ended ``failed``; 2 bad usage or bad input; 3 journal corruption or a
refused resume. ``--json`` prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import orjson

from ._journal.file import FileJournal
from ._ports import Journal
from ._registry import Command, WorkflowPlugin, load_plugins
from ._runner import Engine, RecoveryReport, RunResult, open_engine
from ._spec import OUTCOMES, Outcome
from .errors import OrchestratorError, UsageError

__all__ = (
    "add_common_options",
    "add_journal_option",
    "add_run_id_option",
    "check_run_id",
    "emit_json",
    "journal_dir",
    "journal_url",
    "main",
    "open_journal",
    "open_state_engine",
    "parse_injections",
    "print_history",
    "print_run",
)

DEFAULT_STATE_DIR = Path("state")
#: A shared journal's URL when ``--journal`` is not given (the file journal otherwise).
JOURNAL_ENV = "ORCHESTRATOR_JOURNAL"
#: The PostgreSQL schema the journal lives in (default ``orchestrator``).
SCHEMA_ENV = "ORCHESTRATOR_PG_SCHEMA"


def journal_dir(state_dir: Path) -> Path:
    """Where the orchestrator keeps its journal inside a state directory."""
    return state_dir / "orchestrator" / "journal"


def journal_url(url: str | None) -> str | None:
    """The shared journal to use: ``url`` (``--journal``), else $ORCHESTRATOR_JOURNAL, else
    None (the file journal of the state directory)."""
    return url or os.environ.get(JOURNAL_ENV) or None


async def open_journal(
    state_dir: Path, url: str | None = None, *, read_only: bool = False
) -> Journal:
    """The journal a command works on: PostgreSQL if a URL is given (see ``journal_url``),
    else the file journal under ``state_dir``. ``read_only``: for views (nothing is
    repaired or created, every run is read)."""
    url = journal_url(url)
    if url is None:
        return await FileJournal.open(journal_dir(state_dir), repair=not read_only)
    from ._journal.postgres import DEFAULT_SCHEMA, PostgresJournal, is_postgres_url

    if not is_postgres_url(url):
        raise UsageError(
            f"--journal {url!r}: expected postgresql://user@host:port/database (leave "
            "--journal out to use the file journal under --state-dir)"
        )
    schema = os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA
    journal = await PostgresJournal.open(url, schema=schema, create=not read_only)
    if read_only:
        try:
            await journal.load_all()
        except BaseException:
            await journal.aclose()
            raise
    return journal


@asynccontextmanager
async def open_state_engine(
    state_dir: Path,
    plugins: Sequence[WorkflowPlugin] | None = None,
    *,
    journal: str | None = None,
) -> AsyncIterator[Engine]:
    """An engine on the journal (``open_journal``) with every plugin's workflows."""
    plugins = load_plugins() if plugins is None else plugins
    opened = await open_journal(state_dir, journal)
    async with open_engine(opened) as engine:
        for plugin in plugins:
            deps = plugin.deps(state_dir)
            for spec in plugin.specs():
                engine.register(spec, deps)
        yield engine


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help="the state directory (journal under DIR/orchestrator/; default: ./state)",
    )
    add_journal_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_journal_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--journal",
        metavar="URL",
        default=None,
        help="a shared PostgreSQL journal, postgresql://user@host:port/database (default: "
        f"${JOURNAL_ENV}, else the file journal under --state-dir; schema: ${SCHEMA_ENV}, "
        "default 'orchestrator')",
    )


def add_run_id_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-id",
        metavar="ID",
        help="the run's id, chosen by the caller: asked twice (by one host or two), the run "
        "happens once and both get its result (default: a new id)",
    )


def check_run_id(run_id: str | None) -> str | None:
    """A caller's run id, refused unless it is 1-128 printable ASCII characters without
    spaces (it is shown in logs and names runs in every view)."""
    if run_id is None:
        return None
    if not 0 < len(run_id) <= 128 or not all(33 <= ord(c) < 127 for c in run_id):
        raise UsageError(f"--run-id {run_id!r}: use 1 to 128 printable ASCII characters, no spaces")
    return run_id


def parse_injections(items: Sequence[str]) -> dict[str, Outcome]:
    """``["acp_cancel=timeout", ...]`` -> ``{"acp_cancel": "timeout"}``."""
    forced: dict[str, Outcome] = {}
    for item in items:
        state, sep, outcome = item.partition("=")
        if not sep or not state or outcome not in OUTCOMES:
            raise UsageError(
                f"--inject {item!r}: expected STEP=OUTCOME with OUTCOME one of "
                f"{', '.join(OUTCOMES)} (e.g. --inject acp_cancel=timeout)"
            )
        forced[state] = outcome
    return forced


def emit_json(document: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(document, default=_to_builtins) + b"\n")
    sys.stdout.flush()


def _to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def print_run(result: RunResult) -> None:
    """One human line for a run's end."""
    if result.ok:
        print(f"run {result.run_id} ({result.workflow} {result.key}): succeeded")
    else:
        detail = f" {result.code}" if result.code else ""
        print(
            f"run {result.run_id} ({result.workflow} {result.key}): {result.status}{detail} "
            f"at {result.state}: {result.message}"
        )


def run_exit_code(result: RunResult) -> int:
    return 0 if result.ok else 1


# -- generic commands ----------------------------------------------------------------------


async def _cmd_run(args: argparse.Namespace) -> int:
    try:
        payload = orjson.loads(args.input) if args.input is not None else None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from None
    force = parse_injections(args.inject)
    async with open_state_engine(args.state_dir, journal=args.journal) as engine:
        result = await engine.run(
            args.workflow,
            args.key,
            payload,
            requested_by="cli:run",
            force=force,
            run_id=check_run_id(args.run_id),
        )
    if args.json:
        emit_json({"ok": result.ok, **msgspec.to_builtins(result)})
    else:
        print_run(result)
    return run_exit_code(result)


async def _cmd_recover(args: argparse.Namespace) -> int:
    from ._progress import Advance, progress

    with contextlib.ExitStack() as stack:
        bar: Advance | None = None

        def on_progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:  # the total is known once recovery has read the journal
                bar = stack.enter_context(
                    progress(total, "recovering runs", enabled=not args.json, min_total=20)
                )
            bar()

        async with open_state_engine(args.state_dir, journal=args.journal) as engine:
            from ._journal.postgres import PostgresJournal

            if isinstance(engine.journal, PostgresJournal):
                from ._worker import recover_expired

                report = await recover_expired(engine, engine.journal)
            else:
                report = await engine.recover(requested_by="cli:recover", on_progress=on_progress)
    if args.json:
        emit_json(report)
    else:
        _print_recovery(report)
    return 3 if report.refused else 0


def _print_recovery(report: RecoveryReport) -> None:
    if not report.resumed and not report.refused:
        print("nothing to recover: every run in the journal has finished")
    for result in report.resumed:
        print_run(result)
    for reason in report.refused:
        print(f"refused: {reason}")


async def _cmd_workflows(args: argparse.Namespace) -> int:
    rows = [
        {"name": s.name, "fingerprint": s.fingerprint, "states": [st.name for st in s.states]}
        for plugin in load_plugins()
        for s in plugin.specs()
    ]
    if args.json:
        emit_json(rows)
    else:
        for row in rows:
            print(f"{row['name']} {row['fingerprint']}: {' -> '.join(row['states'])}")
    return 0


def print_history(records: Sequence[Any]) -> None:
    """Records of one run, one line each."""
    for record in records:
        fields = msgspec.to_builtins(record)
        kind = fields.pop("record")
        run_id, seq = fields.pop("run_id"), fields.pop("seq")
        fields.pop("at")
        if "duration" in fields:
            fields["duration"] = f"{fields['duration'] * 1000:.1f}ms"
        detail = " ".join(f"{k}={_short(v)}" for k, v in fields.items())
        print(f"  {run_id} #{seq:<3} {kind:<15} {detail}")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def _builtin_commands() -> list[Command]:
    def configure_run(p: argparse.ArgumentParser) -> None:
        p.add_argument("workflow", help="the workflow's name (see 'orchestrator workflows')")
        p.add_argument("key", help="the key the run works on (runs of one key never overlap)")
        p.add_argument("--input", metavar="JSON", help="the run's input, a JSON document")
        p.add_argument(
            "--inject",
            action="append",
            default=[],
            metavar="STEP=OUTCOME",
            help="force a step's outcome (ok, timeout, error) without running it; repeatable",
        )
        add_run_id_option(p)
        add_common_options(p)

    from ._cli_diagram import diagram_commands
    from ._cli_journal import journal_commands
    from ._cli_views import view_commands
    from ._cli_worker import worker_commands

    return [
        *view_commands(),
        *journal_commands(),
        *diagram_commands(),
        Command("run", "run a workflow on a key", configure_run, _cmd_run),
        Command(
            "recover",
            "resume every interrupted run in the journal",
            add_common_options,
            _cmd_recover,
            description="Resume every run the journal shows unfinished (after a crash or a "
            "kill), each from where it stopped. Exit 3 if a run cannot be resumed safely.",
        ),
        Command("workflows", "list the registered workflows", add_common_options, _cmd_workflows),
        *worker_commands(),
    ]


# -- entry point ---------------------------------------------------------------------------


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Run operational procedures as journaled, resumable state machines.",
    )
    _add_commands(parser, commands)
    return parser


def _add_commands(parser: argparse.ArgumentParser, commands: Sequence[Command]) -> None:
    sub = parser.add_subparsers(dest=f"command_{id(parser)}", metavar="COMMAND", required=True)
    for command in commands:
        p = sub.add_parser(
            command.name, help=command.help, description=command.description or command.help
        )
        command.configure(p)
        if command.subcommands:
            _add_commands(p, command.subcommands)
        else:
            p.set_defaults(handler=command.run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        plugins = load_plugins()
        commands = _builtin_commands() + [c for p in plugins for c in p.commands()]
        args = build_parser(commands).parse_args(argv)
        backend = os.environ.get("ORCHESTRATOR_BACKEND", "asyncio")
        code: int = anyio.run(args.handler, args, backend=backend)
        return code
    except OrchestratorError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BaseExceptionGroup as group:
        # Task groups wrap what their tasks raised (a worker's failing journal, say): one
        # error of ours inside is reported as itself, on one line.
        leaves = _leaves(group)
        if len(leaves) != 1 or not isinstance(leaves[0], OrchestratorError):
            raise
        print(f"orchestrator: error: {leaves[0]}", file=sys.stderr)
        return leaves[0].exit_code
    except KeyboardInterrupt:
        print("orchestrator: interrupted; run 'orchestrator recover' to finish", file=sys.stderr)
        return 130


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found
