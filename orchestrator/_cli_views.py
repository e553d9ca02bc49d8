"""Commands that read the journal: ``runs list``, ``runs show``, ``audit export``.

They open the journal read-only (``repair=False``: a torn tail is reported, never cut) and
change nothing. Output: a rich table when stdout is a terminal, aligned plain text when it is
not, exactly one JSON document with ``--json``. Keys, error texts and planned values come
from users and workflows, so every character a terminal could act on is shown escaped.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from ._audit import export_jsonl
from ._fs import atomic_write
from ._journal.file import FileJournal
from ._progress import is_terminal, progress
from ._registry import Command
from ._views import (
    STATUSES,
    Applied,
    Attempt,
    Entry,
    Finished,
    Planned,
    Resumed,
    RunSummary,
    RunView,
    Started,
    find_run,
    ordered,
    parse_since,
    select_runs,
    view_run,
)
from .errors import UsageError

__all__ = ("printable", "view_commands")

#: Below this many runs the work is too quick for a progress bar to be worth drawing.
PROGRESS_MIN = 1000
_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "interrupted": "magenta",
    "ok": "green",
    "timeout": "yellow",
    "error": "red",
}


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


async def _cmd_list(args: argparse.Namespace) -> int:
    if args.status is not None and args.status not in STATUSES:
        raise UsageError(f"--status {args.status!r}: expected one of {_statuses()}")
    since = _since(args.since)
    async with _read_journal(args.state_dir) as journal:
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
        _print_list(found)
    else:
        print(f"no runs match in {_where(args.state_dir)}", file=sys.stderr)
    return 0


async def _cmd_show(args: argparse.Namespace) -> int:
    async with _read_journal(args.state_dir) as journal:
        history = find_run(journal, args.run_id, _where(args.state_dir))
        view = view_run(history, journal.key_held)
    if args.json:
        _emit_json(view)
    else:
        _print_view(view, args.state_dir)
    return 0


async def _cmd_export(args: argparse.Namespace) -> int:
    since = _since(args.since)
    async with _read_journal(args.state_dir) as journal:
        histories = ordered(journal.runs())
        with progress(len(histories), "exporting runs", min_total=PROGRESS_MIN) as tick:
            data, records, runs = export_jsonl(histories, since=since, tick=tick)
    if args.output is None or str(args.output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    _write_export(args.output, data)
    print(
        f"exported {_count(records, 'record')} of {_count(runs, 'run')} to {args.output}",
        file=sys.stderr,
    )
    return 0


# -- reading the journal -------------------------------------------------------------------


@asynccontextmanager
async def _read_journal(state_dir: Path) -> AsyncIterator[FileJournal]:
    from .cli import journal_dir

    journal = await FileJournal.open(journal_dir(state_dir), repair=False)
    try:
        for path, damage, _cut in journal.damage:
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


def _where(state_dir: Path) -> str:
    from .cli import journal_dir

    return str(journal_dir(state_dir))


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


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


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on (escapes, newlines) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json(value: Any) -> str:
    return orjson.dumps(msgspec.to_builtins(value), option=orjson.OPT_NON_STR_KEYS).decode()


def _time(at: float | None, *, precise: bool = False) -> str:
    if at is None:
        return "-"
    moment = datetime.fromtimestamp(at, UTC)
    if precise:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _status(summary: RunSummary) -> str:
    return f"{summary.status} {summary.code}" if summary.code else summary.status


_LIST_HEADERS = ("RUN", "WORKFLOW", "KEY", "STATUS", "STARTED", "DURATION", "ASKED BY")


def _list_row(run: RunSummary) -> list[str]:
    return [
        run.run_id,
        run.workflow,
        run.key,
        _status(run),
        _time(run.started_at),
        _duration(run.duration),
        run.requested_by or "-",
    ]


def _print_list(runs: Sequence[RunSummary]) -> None:
    _print_table(_LIST_HEADERS, [_list_row(r) for r in runs], status_column=3)


_TIMELINE_HEADERS = ("TIME", "STEP", "WHAT", "DETAIL")


def _timeline_row(entry: Entry, clock: Callable[[float], str]) -> list[str]:
    at = clock(entry.at)
    if isinstance(entry, Attempt):
        what = entry.outcome + (" (forced)" if entry.forced else "")
        if entry.duration is not None:
            what += f" {_duration(entry.duration)}"
        return [at, f"{entry.step} #{entry.attempt}", what, _attempt_detail(entry)]
    if isinstance(entry, Started):
        forced = " ".join(f"{k}={v}" for k, v in entry.forced.items())
        detail = f"by {entry.requested_by or '-'}, input {_json(entry.input)}"
        return [at, "", "run_started", detail + (f", forced {forced}" if forced else "")]
    if isinstance(entry, Planned):
        return [at, entry.step, "planned", f"{entry.name} = {_json(entry.value)}"]
    if isinstance(entry, Applied):
        return [at, entry.step, "applied", f"{entry.name} = {_json(entry.detail)}"]
    if isinstance(entry, Resumed):
        return [at, "", "run_resumed", f"by {entry.requested_by or '-'}"]
    assert isinstance(entry, Finished)
    detail = ": ".join(part for part in (entry.code, entry.message) if part)
    return [at, entry.step or "", f"run_finished {entry.status}", detail]


def _attempt_detail(attempt: Attempt) -> str:
    if attempt.error is not None:
        return f"{attempt.error.type}: {attempt.error.message}"
    return "" if attempt.result is None else f"result {_json(attempt.result)}"


def _clock_for(view: RunView) -> Callable[[float], str]:
    """Times of day when the whole run is on the day it started (the headline has the date)."""
    day = _time(view.run.started_at)[:10]
    if all(_time(entry.at)[:10] == day for entry in view.timeline):
        return lambda at: _time(at, precise=True)[11:-1]
    return lambda at: _time(at, precise=True)


def _headline(view: RunView, state_dir: Path) -> list[str]:
    run = view.run
    lines = [
        f"run {run.run_id}: {run.workflow} on {run.key}, {_status(run)}",
        f"  asked by {run.requested_by or '-'}, started {_time(run.started_at, precise=True)}, "
        f"ended {_time(run.ended_at, precise=True)}, took {_duration(run.duration)}, "
        f"resumed {_count(run.resumes, 'time')}",
    ]
    if run.message:
        lines.append(f"  {run.message}")
    if run.status == "interrupted":
        where = shlex.quote(str(state_dir))
        lines.append(f"  finish it with: orchestrator recover --state-dir {where}")
    return lines


def _print_view(view: RunView, state_dir: Path) -> None:
    clock = _clock_for(view)
    rows = [_timeline_row(e, clock) for e in view.timeline]
    _print_table(_TIMELINE_HEADERS, rows, status_column=2, title=_headline(view, state_dir))


# -- terminal or plain ---------------------------------------------------------------------


def _print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    status_column: int,
    title: Sequence[str] = (),
) -> None:
    safe_rows = [[printable(cell) for cell in row] for row in rows]
    safe_title = [printable(line) for line in title]
    if is_terminal(sys.stdout):
        _print_rich(headers, safe_rows, status_column, safe_title)
    else:
        _print_plain(headers, safe_rows, safe_title)


def _print_plain(
    headers: Sequence[str], rows: Sequence[Sequence[str]], title: Sequence[str]
) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    out = [*title]
    for row in (headers, *rows):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()


def _print_rich(
    headers: Sequence[str], rows: Sequence[Sequence[str]], status_column: int, title: Sequence[str]
) -> None:
    # rich is imported only here: plain and --json output never pay for it. Cells are Text,
    # never markup, so a "[bold]" in a key is shown as typed.
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=sys.stdout, highlight=False)
    for line in title:
        console.print(Text(line))
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    last = len(headers) - 1
    for i, header in enumerate(headers):
        # Nothing is cut off with an ellipsis (this is an audit view): narrow columns keep
        # their width, and what does not fit is folded onto the next line.
        widest = max([len(header), *(len(row[i]) for row in rows)])
        table.add_column(header, overflow="fold", min_width=None if i == last else min(widest, 40))
    for row in rows:
        cells = [Text(cell) for cell in row]
        style = _STATUS_STYLE.get(row[status_column].split(" ")[0])
        if style:
            cells[status_column].stylize(style)
        table.add_row(*cells)
    console.print(table)
