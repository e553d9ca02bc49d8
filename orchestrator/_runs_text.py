"""How runs look on a terminal: escaped text, aligned plain tables, rich tables.

Keys, error texts and planned values come from users and workflows, so every character a
terminal could act on is shown escaped (``printable``).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from ._progress import is_terminal
from ._views import (
    Applied,
    Attempt,
    Entry,
    Finished,
    Planned,
    Resumed,
    RunSummary,
    RunView,
    Started,
)

__all__ = ("count", "print_list", "print_view", "printable")

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


def print_list(runs: Sequence[RunSummary]) -> None:
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
        f"resumed {count(run.resumes, 'time')}",
    ]
    if run.message:
        lines.append(f"  {run.message}")
    if run.status == "interrupted":
        where = shlex.quote(str(state_dir))
        lines.append(f"  finish it with: orchestrator recover --state-dir {where}")
    return lines


def print_view(view: RunView, state_dir: Path) -> None:
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


def count(n: int, what: str) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {what}" if n == 1 else f"{n} {what}s"
