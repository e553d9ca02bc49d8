"""Commands that read the journal: ``runs list``, ``runs show``, ``audit export``.

They open the journal read-only (``repair=False``: a torn tail is reported, never cut) and
change nothing. Output: a rich table when stdout is a terminal, aligned plain text when it is
not, exactly one JSON document with ``--json``. Keys, error texts and planned values come
from users and workflows, so every character a terminal could act on is shown escaped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import orjson

from ._audit import export_jsonl
from ._fs import atomic_write
from ._journal.file import FileJournal
from ._journal.postgres import PostgresJournal
from ._progress import progress
from ._registry import Command
from ._runs_text import count, print_list, print_view
from ._views import (
    STATUSES,
    find_run,
    ordered,
    parse_since,
    select_runs,
    view_run,
)
from .errors import UsageError

__all__ = ("view_commands",)

#: Below this many runs the work is too quick for a progress bar to be worth drawing.
PROGRESS_MIN = 1000


# -- the commands --------------------------------------------------------------------------


def view_commands() -> list[Command]:
    runs = [
        Command(
            "list",
            "one line per run: id, workflow, key, status, start, duration, who asked",
            _configure_list,
            _cmd_list,
            description="List the runs of the journal, oldest first. Status is succeeded, "
            "failed or cancelled for a finished run; an unfinished one is running while a live "
            "process holds its key, else interrupted ('orchestrator recover' finishes it).",
        ),
        Command(
            "show",
            "a run's timeline: every attempt, planned value, effect and resume",
            _configure_show,
            _cmd_show,
            description="Show what the journal says about one run: who asked and when, every "
            "attempt of every step (outcome, duration, error, forced), the values planned "
            "before each effect, the effects applied, and every resume. An attempt a crash "
            "cut short is shown 'interrupted'.",
        ),
    ]
    audit = [
        Command(
            "export",
            "the journal as JSON Lines, one record a line",
            _configure_export,
            _cmd_export,
            description="Write every journal record as one JSON object a line (runs in start "
            "order, then seq), keyed by the record's own field names plus its type in "
            "'record'. Lossless; see 'Runs and audit' in the README for the fields.",
        ),
    ]
    return [
        Command("runs", "list runs and show what one did", _no_options, None, subcommands=runs),
        Command("audit", "export the journal for an audit", _no_options, None, subcommands=audit),
    ]


def _no_options(parser: argparse.ArgumentParser) -> None:
    return None


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    from .cli import DEFAULT_STATE_DIR

    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help="the state directory (journal under DIR/orchestrator/; default: ./state)",
    )


def _since_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--since",
        metavar="T",
        help=f"only {what} with a record at or after T: an ISO-8601 time or date "
        "(2026-11-25T10:00:00Z, 2026-11-25; UTC unless it says otherwise) or an age "
        "(45s, 10m, 2h, 3d, 1w)",
    )


def _configure_list(parser: argparse.ArgumentParser) -> None:
    from .cli import add_common_options

    parser.add_argument("--status", metavar="S", help=f"only runs with status S ({_statuses()})")
    parser.add_argument("--key", metavar="K", help="only runs of the key K, as journaled")
    _since_option(parser, "runs")
    add_common_options(parser)


def _configure_show(parser: argparse.ArgumentParser) -> None:
    from .cli import add_common_options

    parser.add_argument("run_id", metavar="RUN_ID", help="the run (or a unique prefix of its id)")
    add_common_options(parser)


def _configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write FILE (atomically, mode 0600) instead of stdout",
    )
    _since_option(parser, "runs (each exported whole)")
    _state_dir_option(parser)
    from .cli import add_journal_option

    add_journal_option(parser)


async def _cmd_list(args: argparse.Namespace) -> int:
    if args.status is not None and args.status not in STATUSES:
        raise UsageError(f"--status {args.status!r}: expected one of {_statuses()}")
    since = _since(args.since)
    async with _read_journal(args.state_dir, args.journal) as journal:
        total = sum(1 for _ in journal.runs())
        with progress(total, "reading runs", enabled=not args.json, min_total=PROGRESS_MIN) as tick:
            found = select_runs(
                journal,
                journal.key_held,
                status=args.status,
                key=args.key,
                since=since,
                tick=tick,
            )
    if args.json:
        _emit_json(found)
    elif found:
        print_list(found)
    else:
        print(f"no runs match in {_where(args)}", file=sys.stderr)
    return 0


async def _cmd_show(args: argparse.Namespace) -> int:
    async with _read_journal(args.state_dir, args.journal) as journal:
        history = find_run(journal, args.run_id, _where(args))
        view = view_run(history, journal.key_held)
    if args.json:
        _emit_json(view)
    else:
        print_view(view, args.state_dir)
    return 0


async def _cmd_export(args: argparse.Namespace) -> int:
    since = _since(args.since)
    async with _read_journal(args.state_dir, args.journal) as journal:
        histories = ordered(journal.runs())
        with progress(len(histories), "exporting runs", min_total=PROGRESS_MIN) as tick:
            data, records, runs = export_jsonl(histories, since=since, tick=tick)
    if args.output is None or str(args.output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    _write_export(args.output, data)
    print(
        f"exported {count(records, 'record')} of {count(runs, 'run')} to {args.output}",
        file=sys.stderr,
    )
    return 0


# -- reading the journal -------------------------------------------------------------------


@asynccontextmanager
async def _read_journal(
    state_dir: Path, url: str | None
) -> AsyncIterator[FileJournal | PostgresJournal]:
    from .cli import open_journal

    journal = await open_journal(state_dir, url, read_only=True)
    assert isinstance(journal, FileJournal | PostgresJournal)
    try:
        damaged = journal.damage if isinstance(journal, FileJournal) else []
        for path, damage, _cut in damaged:
            print(
                f"orchestrator: warning: {path} has a damaged tail at byte {damage.offset} "
                f"({damage.reason}); records after it are not shown. 'orchestrator recover' "
                "sets it aside",
                file=sys.stderr,
            )
        yield journal
    finally:
        await journal.aclose()


def _since(text: str | None) -> float | None:
    return None if text is None else parse_since(text, time.time())


def _where(args: argparse.Namespace) -> str:
    from .cli import journal_dir, journal_url

    url = journal_url(args.journal)
    if url is not None:
        from ._journal.postgres import redact_url

        return redact_url(url)
    return str(journal_dir(args.state_dir))


def _statuses() -> str:
    return ", ".join(STATUSES)


def _write_export(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data, point="audit.export")
    except OSError as exc:
        raise UsageError(
            f"cannot write the export to {path}: {exc.strerror or exc}; check that its "
            "directory exists and is writable (nothing was written)"
        ) from None


def _emit_json(document: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(msgspec.to_builtins(document)) + b"\n")
    sys.stdout.flush()


# -- what a run looks like as text ---------------------------------------------------------
